"""Device fleet: ``--devices`` devices sending ``--target-rate`` messages/s in total (QoS 1) for ``--hold`` s.

    locust -f loadtests/scenarios/device_fleet.py --headless --gateway-host 127.0.0.1 \\
        --iothub-hostname enginehub-local.azure-devices.net --group-key "$KEY" --ca-cert ca.pem \\
        --devices 100 --target-rate 1000 --hold 60 --max-puback-p99-ms 200 [--sink-db enginehub.db]

Each device connects once (``d2c.connect``) and sends paced telemetry (``d2c.send qos1``, timed to the
PUBACK, i.e. until the hub stored it). With ``--sink-db`` (an ingest node writing that SQLite file) the
run also checks every message id arrived as a row (lost, duplicates, end-to-end latency).
"""

from locust import events  # noqa: F401, I001 - Locust first (gevent patching)

from enginehub.loadtests.scenarios.users import DeviceSender, HoldRate, install

__all__ = ["DeviceSender", "HoldRate"]

install("devices")
