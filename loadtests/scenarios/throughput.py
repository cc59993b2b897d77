"""Sustained throughput: hold ``--target-rate`` events/s for ``--hold`` s; ingest nodes consume into SQLite.

    locust -f loadtests/scenarios/throughput.py --headless --eventhub-connection-string "$CS" \\
        --sink-db /tmp/x.db --target-rate 10000 --hold 60 --min-rate 10000 --max-p99-ms 5000

The shape starts ``--producers`` users at once and stops after ``--hold`` s. At the end the run waits for
the rows (``--drain-timeout``), compares produced ids with rows and sets Locust's exit code from the
thresholds (``--min-rate``, ``--max-lost``, ``--max-duplicates``, ``--max-p99-ms``) and the fail ratio.
"""

from locust import events  # noqa: F401, I001 - Locust first (gevent patching)

from enginehub.loadtests.scenarios.users import EventHubProducer, HoldRate, install

__all__ = ["EventHubProducer", "HoldRate"]

install("throughput")
