"""The engine queue's depth and peak (worker.stats, returned by dllm/metrics)."""
import threading
import time

from dllm_lsp.worker import EngineWorker


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
