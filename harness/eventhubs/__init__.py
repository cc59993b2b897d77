"""enginehub.harness.eventhubs: the Event Hubs emulator."""
