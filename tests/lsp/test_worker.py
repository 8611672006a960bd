"""The engine thread: newest request per document wins, cancel flags, a bounded queue."""
import threading
import time

import pytest

from dllm_lsp.runtime.worker import EngineWorker, Superseded


def blocking_job(started: threading.Event, release: threading.Event, log: list, name: str):
    def work(cancel: threading.Event):
        started.set()
        while not release.is_set() and not cancel.is_set():
            time.sleep(0.005)
        log.append((name, cancel.is_set()))
        return name
    return work


@pytest.fixture
def worker():
    w = EngineWorker(max_pending=3)
    yield w
    w.stop()


def test_a_job_runs_and_returns_its_result(worker):
    job = worker.submit("a", lambda cancel: 41 + 1)
    assert job.future.result(timeout=5) == 42


def test_a_newer_job_for_the_same_document_cancels_the_running_one(worker):
    started, release, log = threading.Event(), threading.Event(), []
    first = worker.submit("doc", blocking_job(started, release, log, "first"))
    assert started.wait(5)
    second = worker.submit("doc", lambda cancel: "second")
    assert first.future.result(timeout=5) == "first" and first.cancel.is_set()
    assert second.future.result(timeout=5) == "second"
    assert log == [("first", True)]


def test_waiting_jobs_are_replaced_not_queued(worker):
    started, release, log = threading.Event(), threading.Event(), []
    worker.submit("busy", blocking_job(started, release, log, "busy"))
    assert started.wait(5)
    older = worker.submit("doc", lambda cancel: "older")
    newer = worker.submit("doc", lambda cancel: "newer")
    with pytest.raises(Superseded):
        older.future.result(timeout=5)
    assert worker.pending == 1
    release.set()
    assert newer.future.result(timeout=5) == "newer"


def test_the_queue_is_bounded(worker):
    started, release, log = threading.Event(), threading.Event(), []
    worker.submit("busy", blocking_job(started, release, log, "busy"))
    assert started.wait(5)
    jobs = [worker.submit(f"doc{i}", lambda cancel, i=i: i) for i in range(6)]
    assert worker.pending == 3
    for job in jobs[:3]:
        with pytest.raises(Superseded):
            job.future.result(timeout=5)
    release.set()
    assert [j.future.result(timeout=5) for j in jobs[3:]] == [3, 4, 5]


def test_exclusive_work_goes_first_and_cancels_the_running_job(worker):
    started, release, log = threading.Event(), threading.Event(), []
    running = worker.submit("doc", blocking_job(started, release, log, "running"))
    assert started.wait(5)
    order = []
    waiting = worker.submit("other", lambda cancel: order.append("waiting"))
    load = worker.run_exclusive(lambda cancel: order.append("load"))
    running.future.result(timeout=5)
    waiting.future.result(timeout=5)
    load.future.result(timeout=5)
    assert running.cancel.is_set() and order == ["load", "waiting"]


def test_errors_reach_the_caller_and_the_worker_keeps_going(worker):
    def boom(cancel):
        raise RuntimeError("engine failed")
    with pytest.raises(RuntimeError, match="engine failed"):
        worker.submit("a", boom).future.result(timeout=5)
    assert worker.submit("a", lambda cancel: "ok").future.result(timeout=5) == "ok"


def test_cancel_by_key(worker):
    started, release, log = threading.Event(), threading.Event(), []
    job = worker.submit("doc", blocking_job(started, release, log, "x"))
    assert started.wait(5)
    worker.cancel("doc")
    assert job.future.result(timeout=5) == "x" and log == [("x", True)]


# ---- warm-ups (background jobs) never cost a request its answer ------------------------------------

def test_a_warm_up_of_the_same_document_never_cancels_the_running_request(worker):
    started, release, log = threading.Event(), threading.Event(), []
    request = worker.submit("doc", blocking_job(started, release, log, "request"))
    assert started.wait(5)
    warm = worker.submit("doc", lambda cancel: "warm", background=True)
    with pytest.raises(Superseded):               # dropped: the request computes that context itself
        warm.future.result(timeout=5)
    assert not request.cancel.is_set()
    release.set()
    assert request.future.result(timeout=5) == "request" and log == [("request", False)]


def test_a_warm_up_never_replaces_a_waiting_request(worker):
    started, release, log = threading.Event(), threading.Event(), []
    worker.submit("busy", blocking_job(started, release, log, "busy"))
    assert started.wait(5)
    request = worker.submit("doc", lambda cancel: "request")
    warm = worker.submit("doc", lambda cancel: "warm", background=True)
    with pytest.raises(Superseded):
        warm.future.result(timeout=5)
    release.set()
    assert request.future.result(timeout=5) == "request"


def test_a_request_stops_the_running_warm_up_of_its_document_and_runs_next(worker):
    started, release, log = threading.Event(), threading.Event(), []
    warm = worker.submit("doc", blocking_job(started, release, log, "warm"), background=True)
    assert started.wait(5)
    request = worker.submit("doc", lambda cancel: "request")
    assert warm.future.result(timeout=5) == "warm" and warm.cancel.is_set()
    assert request.future.result(timeout=5) == "request"


def test_a_newer_warm_up_replaces_the_older_one_of_its_document(worker):
    started, release, log = threading.Event(), threading.Event(), []
    older = worker.submit("doc", blocking_job(started, release, log, "older"), background=True)
    assert started.wait(5)
    newer = worker.submit("doc", lambda cancel: "newer", background=True)
    assert older.future.result(timeout=5) == "older" and older.cancel.is_set()
    assert newer.future.result(timeout=5) == "newer"


def test_speculative_work_never_adds_to_the_queue(worker):
    started, release, log = threading.Event(), threading.Event(), []
    worker.submit("busy", blocking_job(started, release, log, "busy"))
    assert started.wait(5)
    spec = worker.submit("a#next", lambda cancel: "spec", idle_only=True)          # nothing waits: kept
    assert worker.pending == 1
    warm = worker.submit("b", lambda cancel: "warm", background=True)              # anything later drops it
    with pytest.raises(Superseded):
        spec.future.result(timeout=5)
    late = worker.submit("c#next", lambda cancel: "late", idle_only=True)          # something waits: dropped
    with pytest.raises(Superseded):
        late.future.result(timeout=5)
    assert worker.pending == 1
    release.set()
    assert warm.future.result(timeout=5) == "warm"
