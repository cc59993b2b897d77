"""Service providers: how each real component is started or reached (local, container, external)."""
