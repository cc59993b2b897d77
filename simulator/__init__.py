"""enginehub.simulator."""
