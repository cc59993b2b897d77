"""Locustfiles: ``throughput.py``, ``failover.py``, ``device_fleet.py`` (run with ``locust -f <file>``).

They only declare users, the load shape and event listeners; the work is in ``enginehub.loadtests.loadrun``
(Event Hubs scenarios) and ``enginehub.loadtests.clients``. Importing this package does not import Locust.
"""
