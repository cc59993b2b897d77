"""enginehub.ingest."""
