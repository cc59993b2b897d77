"""enginehub.simulator: a fleet of turbofan engines replaying C-MAPSS as real ``azure-iot-device`` clients.

``simulate --units N --rate R`` (contract in docs/architecture.md) runs N devices ``engine-0001``… sending
R messages/s in total, each replaying one engine cycle by cycle; without a hub it self-hosts the local
stack and an ingest consumer into SQLite.

Modules (pure ones first; everything time-related goes through an injected clock and a seeded RNG):

- ``clock``: ``Clock`` protocol, ``SystemClock``, ``FakeClock`` (tests advance time without sleeping)
- ``pacing``: ``Pacer`` (due times: R msg/s over N devices, staggered, jittered, never drifting) and
  ``PacedLoop`` (drives a pacer from a clock)
- ``fleet``: ``Fleet`` (which row each device sends next; a fresh engine replaces a finished one)
- ``messages``: ``OutMessage``, deterministic ids ``{run}-{unit}-{cycle}``, properties, malformed bodies
- ``credentials``: group-key derivation, connection strings, devices files
- ``faults``: ``--duplicate-rate``, ``--malformed-rate``, ``--disconnect-every``
- ``sources``: FD001..FD004 / a file / ``synthetic``
- ``device``: ``ResilientDevice`` (timeouts, jittered reconnect, same-id re-send) over ``SdkClient``
- ``runner``: ``FleetRunner`` (one process) and ``WorkerPool`` (``--workers K`` processes)
- ``selfhost``: ``harness up`` + ``ingest`` child processes and the SQLite row count
- ``progress``, ``app`` (one run, exit codes), ``cli`` (``simulate``; also ``python -m enginehub.simulator``)
"""
