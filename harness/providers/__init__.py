"""Service providers: how each real component is started or reached (local, process, container, external).

``base`` (the selection: one switch, per-service overrides, logged, skip reasons), ``eventhubs``,
``iothub``, ``blob`` (Azurite npm / container / external account), ``cratedb`` (container / ``CRATEDB_URL``)
and ``azurite`` (the npm Azurite process). The pytest plugin (``enginehub.harness.testing``) builds its
fixtures on these; scripts can use them directly.
"""
