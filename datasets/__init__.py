"""enginehub.datasets."""
