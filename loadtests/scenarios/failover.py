"""Failover: the throughput load while one ingest node is killed (-9) and later a second is stopped (SIGTERM).

    locust -f loadtests/scenarios/failover.py --headless --eventhub-connection-string "$CS" \\
        --sink-db /tmp/x.db --checkpoint-dir /tmp/ckpt --ingest-pids node-0:1234,node-1:1235,node-2:1236 \\
        --target-rate 2000 --hold 30 --crash-at 6 --graceful-at 18

The node owning the most partitions is killed at ``--crash-at`` s and the next one is sent SIGTERM at
``--graceful-at`` s; takeover = until a live node owns each of their partitions (file checkpoint store).
Exit code 1 when a takeover exceeds ``--max-crash-takeover``/``--max-graceful-takeover`` s, or any loss,
duplicate or threshold of the throughput scenario fails.
"""

from locust import events  # noqa: F401, I001 - Locust first (gevent patching)

from enginehub.loadtests.scenarios.users import EventHubProducer, HoldRate, install

__all__ = ["EventHubProducer", "HoldRate"]

install("failover")
