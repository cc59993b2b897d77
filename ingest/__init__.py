"""enginehub.ingest: the Event Hubs -> CrateDB/SQLite ingestion consumer.

- :mod:`~enginehub.ingest.consumer`: ``IngestConsumer(client_factory, checkpoint_store, sink, rules)``;
  batches per partition, checkpoint only after the sink confirmed every row, graceful stop.
- :mod:`~enginehub.ingest.worker`: the sink worker process (rules + writes out of the receiving process;
  ``IngestConsumer(..., worker=WorkerSpec(...))``, what the CLI does by default).
- :mod:`~enginehub.ingest.rules`: TOML rules (source -> tables, filters, payload formats), pure.
- :mod:`~enginehub.ingest.sinks`: the ``Sink`` protocol; SQLite (default), CrateDB, memory.
- :mod:`~enginehub.ingest.checkpoint_file`: local file ``CheckpointStore`` (multi-process safe).
- :mod:`~enginehub.ingest.cli`: the ``ingest`` command (also ``python -m enginehub.ingest``).
"""
