"""enginehub.loadtests: Locust users and scenarios, measurement, and the benchmark runner.

``python -m enginehub.loadtests throughput|failover|devices --json``; see ``loadtests/README.md``.
"""
