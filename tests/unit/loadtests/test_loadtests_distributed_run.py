"""loadrun.Run in Locust's distributed mode (roles master / worker), without Locust or sockets."""

from __future__ import annotations

from types import SimpleNamespace

from enginehub.loadtests import loadrun
from enginehub.loadtests.measure import ProducedLog


def _opts():
    return loadrun.parse_args(["--run-id", "r1", "--producers", "4", "--hold", "10", "--warmup", "0"])


def test_worker_producer_indexes_interleave_to_the_single_process_ones():
    seen = []
    for w in range(2):
        run = loadrun.Run(_opts(), role="worker", worker_index=w, workers=2)
        seen += [run.next_index(), run.next_index()]
    assert sorted(seen) == [0, 1, 2, 3]
    local = loadrun.Run(_opts())
    assert [local.next_index() for _ in range(3)] == [0, 1, 2]


def test_worker_reports_once_and_records_a_cut_off_batch_as_unconfirmed():
    sent = []
    run = loadrun.Run(_opts(), role="worker", send=lambda t, d: sent.append((t, d)))
    run.produced.record("r1-p0", 0, 50, True)
    busy = SimpleNamespace(n=100, max_events=500, _pending=(50, 50), prefix="r1-p0")
    run.producers.append(busy)
    run.report_to_master(sleep=lambda s: None, timeout=0.0)
    run.report_to_master(sleep=lambda s: None, timeout=0.0)
    assert busy.max_events == 100 and busy._pending is None  # no further batch
    assert len(sent) == 1 and sent[0][0] == loadrun.MSG_PRODUCED
    log = ProducedLog.from_json(sent[0][1])
    assert log.acked == [("r1-p0", 0, 49)] and log.unconfirmed == [("r1-p0", 50, 99)]
    assert run.finish(sleep=lambda s: None)["role"] == "worker" and len(sent) == 1


def test_worker_sends_producer_done_and_the_master_shape_waits_for_all():
    sent = []
    worker = loadrun.Run(_opts(), role="worker", send=lambda t, d: sent.append(t))
    worker.producer_done()
    assert sent == [loadrun.MSG_PRODUCER_DONE]
    master = loadrun.Run(_opts(), role="master", workers=2)
    assert master.keep_running(11.0)  # past --hold, but no producer has reported done
    master.remote_done = 4
    assert not master.keep_running(11.0)
    master.remote_done = 3
    assert not master.keep_running(16.0)  # the grace (max(5 s, 50 %)) is over all the same


def test_master_merges_the_logs_of_its_workers_and_fails_without_one():
    requests = []
    master = loadrun.Run(_opts(), role="master", workers=2, send=lambda t, d: requests.append(t))
    a, b = ProducedLog(), ProducedLog()
    a.record("r1-p0", 0, 10, True)
    b.record("r1-p1", 0, 10, True)
    b.record("r1-p1", 10, 10, False)
    master.add_worker_log("w0", a.to_json())
    master.add_worker_log("w1", b.to_json())
    master.gather(sleep=lambda s: None)
    master.gather(sleep=lambda s: None)  # idempotent: merged once
    assert requests == [loadrun.MSG_REPORT_REQUEST]
    assert master.produced.produced == 20 and len(master.produced.unconfirmed) == 1
    out = master.finish(sleep=lambda s: None)
    assert out["locust_workers"] == 2 and out["failures"] == []

    lonely = loadrun.Run(_opts(), role="master", workers=2)
    lonely.add_worker_log("w0", a.to_json())
    loadrun.WORKER_LOG_TIMEOUT, saved = 0.0, loadrun.WORKER_LOG_TIMEOUT
    try:
        out = lonely.finish(sleep=lambda s: None)
    finally:
        loadrun.WORKER_LOG_TIMEOUT = saved
    assert "1 of 2 Locust workers sent no produced-id log" in out["failures"]
