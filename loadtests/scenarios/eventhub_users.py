"""The Event Hubs producer user, the hold-rate shape and the run's listeners, shared by two locustfiles.

Imported by ``throughput.py`` and ``failover.py`` after they import Locust; ``install(failover)`` registers
the listeners once per Locust process.
"""

import logging

import gevent
from locust import LoadTestShape, User, events, task

from enginehub.loadtests import loadrun

LOG = logging.getLogger(__name__)
RUN: loadrun.Run | None = None
_FAILOVER = False


def install(failover: bool) -> None:
    global _FAILOVER
    _FAILOVER = failover
    events.init_command_line_parser.add_listener(_options)
    events.test_start.add_listener(_start)
    events.test_stop.add_listener(_stop)
    events.quitting.add_listener(_exit_code)


def _options(parser, **_kw):
    loadrun.add_arguments(parser, failover=_FAILOVER)


def _start(environment, **_kw):
    global RUN
    RUN = loadrun.Run(environment.parsed_options)
    RUN.start()
    RUN.start_failover(gevent.spawn)


def _stop(environment, **_kw):
    if RUN is not None:
        result = RUN.finish(sleep=gevent.sleep)
        LOG.info("load result: %s", result)


def _exit_code(environment, **_kw):
    stats = environment.stats.total
    failures = list(RUN.failures) if RUN is not None else ["the test never started"]
    if stats.fail_ratio > 0.01:
        failures.append(f"fail ratio {stats.fail_ratio:.2%} > 1%")
    for f in failures:
        LOG.error("threshold failed: %s", f)
    environment.process_exit_code = 1 if failures else 0


class EventHubProducer(User):
    """Paced batches to one partition (raw producer on our codec, or ``--producer sdk``)."""

    def on_start(self):
        self.loop = RUN.new_producer(self.environment.events.request)

    @task
    def send_batch(self):
        try:
            self.loop.step()
        except Exception:  # already reported through the request event; keep the user alive
            LOG.debug("batch failed", exc_info=True)

    def wait_time(self):
        return self.loop.wait()

    def on_stop(self):
        self.loop.close()


class HoldRate(LoadTestShape):
    """All producers at once, for ``--hold`` seconds (plus a bounded grace for the last batches)."""

    def tick(self):
        opts = self.runner.environment.parsed_options
        if RUN is None or RUN.keep_running(self.get_run_time()):
            return (opts.producers, opts.producers)
        return None
