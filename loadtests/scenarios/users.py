"""Users, the hold-rate shape and the run's listeners, shared by the locustfiles.

Imported by ``throughput.py``, ``failover.py`` and ``device_fleet.py`` after they import Locust;
``install(kind)`` registers the listeners once per Locust process. The work is in ``loadrun``.
"""

import logging

import gevent
from locust import LoadTestShape, User, events, task
from locust.runners import MasterRunner, WorkerRunner

from enginehub.loadtests import loadrun

LOG = logging.getLogger(__name__)
RUN: loadrun.Run | None = None
_KIND = "throughput"


def install(kind: str) -> None:
    """``kind``: throughput | failover | devices (which options the locustfile takes)."""
    global _KIND
    _KIND = kind
    events.init_command_line_parser.add_listener(_options)
    events.init.add_listener(_init)
    events.test_start.add_listener(_start)
    events.test_stop.add_listener(_stop)
    events.quitting.add_listener(_exit_code)


def _options(parser, **_kw):
    loadrun.add_arguments(parser, _KIND)


def _init(environment, **_kw):
    """Distributed mode (``--master``/``--worker``): the master hears from its workers."""
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message(loadrun.MSG_PRODUCED, _on_produced)
        runner.register_message(loadrun.MSG_PRODUCER_DONE, _on_producer_done)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(loadrun.MSG_REPORT_REQUEST, _on_report_request, concurrent=True)


def _on_report_request(environment, msg, **_kw):
    if RUN is None:
        return
    send_stats = getattr(environment.runner, "_send_stats", None)
    RUN.report_to_master(gevent.sleep)
    if send_stats is not None:  # the request stats up to now, before the master reads them
        send_stats()


def _on_produced(environment, msg, **_kw):
    if RUN is not None:
        RUN.add_worker_log(msg.node_id, msg.data)


def _on_producer_done(environment, msg, **_kw):
    if RUN is not None:
        RUN.remote_done += int(msg.data or 1)


def _start(environment, **_kw):
    global RUN
    runner, opts = environment.runner, environment.parsed_options
    if isinstance(runner, MasterRunner):
        RUN = loadrun.Run(opts, role="master", workers=int(opts.expect_workers), send=runner.send_message)
    elif isinstance(runner, WorkerRunner):
        RUN = loadrun.Run(
            opts,
            role="worker",
            worker_index=runner.worker_index,
            workers=int(getattr(opts, "expect_workers", 1) or 1),
            send=runner.send_message,
        )
    else:
        RUN = loadrun.Run(opts)
    RUN.start()
    RUN.start_failover(gevent.spawn)


def _request_stats(environment):
    out = {}
    for (name, _method), entry in environment.stats.entries.items():
        out[name] = {
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "p50_ms": entry.get_response_time_percentile(0.5) if entry.num_requests else None,
            "p99_ms": entry.get_response_time_percentile(0.99) if entry.num_requests else None,
        }
    return out


def _stop(environment, **_kw):
    if RUN is not None:
        RUN.gather(gevent.sleep)  # master: the workers' ids and request stats first
        result = RUN.finish(sleep=gevent.sleep, request_stats=_request_stats(environment))
        LOG.info("load result: %s", result)


def _exit_code(environment, **_kw):
    stats = environment.stats.total
    failures = list(RUN.failures) if RUN is not None else ["the test never started"]
    if stats.fail_ratio > 0.01:
        failures.append(f"fail ratio {stats.fail_ratio:.2%} > 1%")
    limit = getattr(environment.parsed_options, "max_puback_p99_ms", None)
    if limit is not None:
        sent = [e for (n, _m), e in environment.stats.entries.items() if n.startswith(loadrun.D2C_NAME)]
        p99 = max((e.get_response_time_percentile(0.99) for e in sent if e.num_requests), default=None)
        if p99 is None or p99 > limit:
            failures.append(f"PUBACK p99 {p99} ms > {limit} ms")
    for f in failures:
        LOG.error("threshold failed: %s", f)
    environment.process_exit_code = 1 if failures else 0


class EventHubProducer(User):
    """Paced batches to one partition (raw producer on our codec, or ``--producer sdk``)."""

    def on_start(self):
        self.loop = RUN.new_producer(self.environment.events.request)
        self.reported_done = False

    @task
    def send_batch(self):
        try:
            self.loop.step()
        except Exception:  # already reported through the request event; keep the user alive
            LOG.debug("batch failed", exc_info=True)
        if self.loop.done and not self.reported_done:
            self.reported_done = True
            RUN.producer_done()

    def wait_time(self):
        return self.loop.wait()

    def on_stop(self):
        self.loop.close()


class DeviceSender(User):
    """One device: paced QoS 1 telemetry (raw MQTT publisher, or ``--device-client sdk``)."""

    def on_start(self):
        self.loop = RUN.new_device(self.environment.events.request)

    @task
    def send(self):
        try:
            self.loop.step()
        except Exception:  # already reported through the request event; keep the user alive
            LOG.debug("send failed", exc_info=True)

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
