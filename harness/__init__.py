"""enginehub.harness."""
