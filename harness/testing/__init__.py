"""Test support shipped with enginehub: the pytest plugin and fixtures."""
