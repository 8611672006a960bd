"""The engine queue's depth and peak (worker.stats, returned by dllm/metrics)."""
import threading
import time

from dllm_lsp.runtime.worker import EngineWorker


def test_depth_and_peak_count_waiting_jobs():
    w = EngineWorker(max_pending=4)
    try:
        started, release = threading.Event(), threading.Event()

        def busy(cancel):
            started.set()
            while not release.is_set():
                time.sleep(0.002)
        w.submit("busy", busy)
        assert started.wait(5)
        jobs = [w.submit("doc", lambda cancel, i=i: i) for i in range(50)]       # a typing storm on one document
        s = w.stats()
        assert s["queueDepth"] == 1 and s["queuePeak"] == 1 and s["engineBusy"]
        w.submit("other", lambda cancel: "o")                                    # a second document: two waiting
        assert w.stats()["queuePeak"] == 2
        release.set()
        assert jobs[-1].future.result(timeout=5) == 49
        deadline = time.monotonic() + 5
        while w.stats()["jobsRun"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        s = w.stats()
        assert s["queueDepth"] == 0 and s["queuePeak"] == 2
        assert s["jobsSubmitted"] == 52 and s["jobsSuperseded"] == 49 and s["jobsRun"] == 3
    finally:
        w.stop()


def test_a_request_cancels_a_running_warm_up_of_another_document_and_goes_first():
    w = EngineWorker()
    try:
        started, order = threading.Event(), []

        def warm(cancel):
            started.set()
            deadline = time.monotonic() + 5
            while not cancel.is_set() and time.monotonic() < deadline:
                time.sleep(0.002)
            order.append(("warm-a", cancel.is_set()))
        w.submit("a", warm, background=True)
        assert started.wait(5)
        w.submit("b", lambda cancel: order.append(("warm-b", False)), background=True)
        t0 = time.monotonic()
        req = w.submit("c", lambda cancel: order.append(("request-c", cancel.is_set())))
        req.future.result(timeout=5)
        assert time.monotonic() - t0 < 1.0                                   # not the warm-up's 5 s
        deadline = time.monotonic() + 5
        while len(order) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert order == [("warm-a", True), ("request-c", False), ("warm-b", False)]
    finally:
        w.stop()
