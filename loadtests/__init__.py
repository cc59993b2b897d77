"""enginehub.loadtests."""
