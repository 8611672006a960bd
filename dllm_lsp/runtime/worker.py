"""One engine thread: every engine call runs here, the newest request per document wins.

    worker = EngineWorker()
    job = worker.submit("file:///a.py", lambda cancel: engine.infill(req, cancel))
    result = await asyncio.wrap_future(job.future)      # or job.future.result()

Waiting work is a dict with one slot per key (a document): a newer job for the same key
replaces the waiting one (which is resolved with `Superseded`) and sets the cancel flag of
the running one, which the engine checks before every forward pass. The number of waiting
slots is capped (`max_pending`): past it the oldest waiting job is superseded, so there is
never an unbounded queue. `run_exclusive` (model loading) jumps ahead of waiting jobs and
cancels the running one. Background jobs (warm-ups) run only when no request waits, never
cancel or replace a request (not even of their own document), and a request cancels a running
one, so a warm-up never delays a request by more than one engine step (one prefill chunk), and
that step's keys and values stay cached for the request.

`stats()` tells how deep the queue is now and was at its deepest since start (waiting jobs,
the running one not counted; an exclusive job counts as waiting), how many jobs were
submitted, superseded and run; `dllm/metrics` returns it, and `bench storm` checks that a
typing storm on one document never has more than one job waiting.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

Work = Callable[[threading.Event], Any]


class Superseded(Exception):
    """The job was replaced by a newer one for the same document before it ran."""


@dataclass
class Job:
    key: str
    work: Work
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)
    background: bool = False          # a warm-up: any request goes first and cancels it
    idle_only: bool = False           # speculative (a prepared next suggestion): waits only while nothing else does

    def supersede(self) -> None:
        self.cancel.set()
        if self.future.set_running_or_notify_cancel():
            self.future.set_exception(Superseded(self.key))


class EngineWorker:
    def __init__(self, max_pending: int = 8, name: str = "dllm-engine"):
        self.max_pending = max_pending
        self._pending: "OrderedDict[str, Job]" = OrderedDict()
        self._exclusive: Optional[Job] = None
        self._running: Optional[Job] = None
        self._cond = threading.Condition()
        self._stopped = False
        self.peak_pending = 0             # deepest the waiting queue has been
        self.submitted = self.superseded_count = self.completed = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ---- producer side (any thread) --------------------------------------------------------
    def submit(self, key: str, work: Work, background: bool = False, idle_only: bool = False) -> Job:
        """Queue `work(cancel_event)` for `key`, superseding older work for the same key.

        A request (background=False) replaces the waiting job of its key and cancels the running
        job of its key and a running background job of any key: those stop at their next check
        (a prefill between two chunks, a decode before its next pass), and what a warm-up
        computed stays in the engine's context cache for the request to continue from.

        Background work (a warm-up) never cancels, delays past one engine step, or supersedes a
        request: it waits behind every request, it replaces only a waiting warm-up of its key,
        it cancels only a running warm-up of its key (the cursor moved on), and while a request
        of its key waits or runs it is dropped at once (resolved with `Superseded`): the request
        computes that context itself.

        Speculative work (`idle_only`, a background job) is kept only while the queue is empty:
        it is dropped at once when any job waits, and any job submitted after it drops it while
        it waits, so it never adds to the queue (a typing storm keeps one job waiting)."""
        background = background or idle_only
        job = Job(key, work, background=background, idle_only=idle_only)
        with self._cond:
            if self._stopped:
                job.supersede()
                return job
            for k in [k for k, j in self._pending.items() if j.idle_only]:
                self._pending.pop(k).supersede()
                self.superseded_count += 1
            old = self._pending.get(key)
            running = self._running
            request_there = (old is not None and not old.background) or \
                (running is not None and running.key == key and not running.background)
            if (idle_only and self._pending) or (background and request_there):
                job.supersede()                   # something waits, or a request for this document is there
                self.submitted += 1
                self.superseded_count += 1
                return job
            if old is not None:
                del self._pending[key]
                old.supersede()
            if running is not None and (running.key == key or (not background and running.background)):
                running.cancel.set()
            self._pending[key] = job
            while len(self._pending) > self.max_pending:
                _, oldest = self._pending.popitem(last=False)
                oldest.supersede()
                self.superseded_count += 1
            self.submitted += 1
            self.superseded_count += old is not None
            self._note_depth()
            self._cond.notify()
        return job

    def _note_depth(self) -> None:      # under self._cond
        depth = len(self._pending) + (self._exclusive is not None)
        if depth > self.peak_pending:
            self.peak_pending = depth

    def stats(self) -> dict:
        """Queue depth now and at its peak (waiting jobs), and job counts since start."""
        with self._cond:
            return {"queueDepth": len(self._pending) + (self._exclusive is not None),
                    "queuePeak": self.peak_pending, "engineBusy": self._running is not None,
                    "jobsSubmitted": self.submitted, "jobsSuperseded": self.superseded_count,
                    "jobsRun": self.completed}

    def run_exclusive(self, work: Work, key: str = "__exclusive__") -> Job:
        """Run `work` next, before waiting jobs, cancelling whatever runs now (e.g. a model load)."""
        job = Job(key, work)
        with self._cond:
            if self._exclusive is not None:
                self._exclusive.supersede()
            if self._running is not None:
                self._running.cancel.set()
            self._exclusive = job
            self._note_depth()
            self._cond.notify()
        return job

    def cancel(self, key: str) -> None:
        """Cancel the waiting and the running job for `key`."""
        with self._cond:
            old = self._pending.pop(key, None)
            if old is not None:
                old.supersede()
            if self._running is not None and self._running.key == key:
                self._running.cancel.set()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            for job in list(self._pending.values()) + ([self._exclusive] if self._exclusive else []):
                job.supersede()
            self._pending.clear()
            self._exclusive = None
            if self._running is not None:
                self._running.cancel.set()
            self._cond.notify()
        self._thread.join(timeout)

    # ---- the engine thread -----------------------------------------------------------------
    def _next(self) -> Optional[Job]:
        with self._cond:
            while not self._stopped and self._exclusive is None and not self._pending:
                self._cond.wait()
            if self._stopped:
                return None
            if self._exclusive is not None:
                job, self._exclusive = self._exclusive, None
            else:
                key = next((k for k, j in self._pending.items() if not j.background), None)
                job = self._pending.pop(key) if key is not None else self._pending.popitem(last=False)[1]
            self._running = job
            return job

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                if job.future.set_running_or_notify_cancel():
                    try:
                        job.future.set_result(job.work(job.cancel))
                    except BaseException as exc:  # the job's owner decides what an error means
                        log.debug("job %s failed: %r", job.key, exc)
                        job.future.set_exception(exc)
            finally:
                with self._cond:
                    self._running = None
                    self.completed += 1
