"""Fixtures: an in-process Event Hubs emulator on a free loopback port (see eh_sdk_helpers)."""

from eh_sdk_helpers import eh  # noqa: F401
