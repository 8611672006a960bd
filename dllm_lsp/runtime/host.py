"""The loaded model and how one plan is decoded with it; shared by the server and `dllm-lsp complete`.

EngineHost keeps the Engine and its state ("idle" -> "loading" -> "ready" | "error"); `load`
runs on the engine thread (see runtime/worker.py) and never raises: a failure becomes state "error"
with its cause. `decode_plan` streams one Plan through the engine, calling `on_update` with
display-ready text after every forward pass, and returns a Decoded with the post-processed
final text. torch and the engine are imported only when a model is loaded.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Optional

from dllm_lsp.core.plan import Plan, finish_completion
from dllm_lsp.runtime.stream import PlanView, Update, Watch
from dllm_lsp.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    text: str                 # post-processed, ready to insert ("" = no item)
    raw: str                  # what the engine produced
    forwards: int
    new_tokens: int
    ms: float                 # engine time
    first_text_ms: Optional[float]   # time to the first update with visible text
    finish_reason: str
    queue_ms: Optional[float] = None      # from submitting to the engine thread starting it (LocalBackend)
    context_tokens: int = 0               # context tokens whose keys/values this decode computed
    token_ids: tuple = ()                 # the engine's tokens (raw)
    runner_ups: tuple = ()                # with InfillRequest.runner_ups: each token's second choice and gap


class _StopFlag:
    """What the engine checks before each forward pass: the caller's cancel flag, or our own stop."""

    def __init__(self, cancel: Optional[threading.Event]):
        self.cancel, self.stopped = cancel, False

    def set(self) -> None:
        self.stopped = True

    def is_set(self) -> bool:
        return self.stopped or (self.cancel is not None and self.cancel.is_set())


def decode_plan(engine, plan: Plan, cancel: Optional[threading.Event] = None,
                on_update: Optional[Update] = None) -> Decoded:
    """Stream `plan` through `engine`; stop early once the committed text settles the answer.

    The engine checks `stop` before every forward pass; it is set when the caller's `cancel`
    is, or when postprocess.is_settled says more tokens cannot change the final text (e.g. a
    line completion whose line has ended), which is then finish_reason "settled".
    """
    t0 = time.perf_counter()
    stop = _StopFlag(cancel)
    watch = Watch(PlanView(plan), on_update, t0)
    settled = False
    last = None
    for last in engine.stream(plan.request, stop):
        if last.result is not None:
            break
        if watch.update(last.stable, last.draft, last.forwards) and not stop.is_set():
            settled = True
            stop.set()
    res = last.result
    external = cancel is not None and cancel.is_set()
    reason = "settled" if settled and not external and res.finish_reason == "cancelled" else res.finish_reason
    text = "" if reason == "cancelled" else finish_completion(plan, res.text)
    watch.finished(text)
    return Decoded(text=text, raw=res.text, forwards=res.forwards, new_tokens=res.new_tokens, ms=res.ms,
                   first_text_ms=watch.first_text_ms, finish_reason=reason, token_ids=res.token_ids,
                   runner_ups=res.runner_ups)


def model_key(settings: Settings) -> tuple:
    """The settings that need a reload when they change."""
    return settings.model, settings.device, settings.dtype, settings.threads, settings.drafter


def set_engine_threads(settings: Settings) -> int:
    """Set torch's CPU threads from the calling thread (the engine thread: OpenMP counts per thread)."""
    import torch
    n = settings.engine_threads()
    torch.set_num_threads(n)
    return n


class EngineHost:
    def __init__(self):
        self.engine = None
        self.state = "idle"                # idle | loading | ready | error
        self.error: Optional[str] = None
        self.key: Optional[tuple] = None
        self.model_name = ""
        self.drafter_error: Optional[str] = None   # the drafter setting failed; the model serves without it

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self.engine is not None

    @property
    def tokenizer(self):
        return self.engine.tokenizer if self.engine is not None else None

    def load(self, settings: Settings, cancel: Optional[threading.Event] = None) -> bool:
        """Load the model named in `settings` (on the engine thread). False with .error on failure."""
        self.state, self.error, self.key = "loading", None, model_key(settings)
        self.model_name = settings.model
        self.engine = None
        try:
            from engine import Engine
            set_engine_threads(settings)
            engine = Engine.load(settings.model, device=settings.device, dtype=settings.dtype)
        except Exception as exc:   # any failure is reported to the user, the server keeps serving
            # the user gets one line (service.load's message); the traceback only with -v
            log.info("cannot load model %r", settings.model, exc_info=True)
            self.state, self.error = "error", f"{type(exc).__name__}: {exc}"
            return False
        if cancel is not None and cancel.is_set():
            self.state = "idle"
            return False
        self.drafter_error = None
        try:                       # a bad drafter costs speed, never the model: serve without it
            engine.load_drafter(settings.drafter)
        except Exception as exc:
            log.warning("drafter %r not used: %s", settings.drafter, exc)
            self.drafter_error = f"{type(exc).__name__}: {exc}"
        self.engine, self.state = engine, "ready"
        log.info("model %s loaded in %.0f ms: %s", settings.model, engine.load_ms, engine.describe())
        return True


class LocalBackend:
    """Plans decoded by the in-process engine on the worker thread: the LSP service's backend
    unless the `backend` setting names a FIM server (http/client.py's RemoteBackend, the same
    `decode`). A newer decode under the same key supersedes this one (Superseded); a decode
    stopped by the cancel flag comes back with finish_reason "cancelled"; `on_update` is called
    on the caller's event loop."""

    def __init__(self, host: EngineHost, worker):
        self.host, self.worker = host, worker

    def describe(self) -> str:
        return "in-process engine"

    async def decode(self, key: str, plan: Plan, on_update: Optional[Update] = None) -> Decoded:
        loop = asyncio.get_running_loop()
        engine = self.host.engine

        def post(stable: str, draft: str, forwards: int) -> None:
            if on_update is not None:
                loop.call_soon_threadsafe(on_update, stable, draft, forwards)

        submitted = time.perf_counter()
        spent: dict = {}

        def work(cancel):
            spent["queue_ms"] = (time.perf_counter() - submitted) * 1000
            before = engine.context_cache.computed
            try:
                return decode_plan(engine, plan, cancel, post)
            finally:
                spent["context_tokens"] = engine.context_cache.computed - before

        job = self.worker.submit(key, work)
        try:
            decoded = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            job.cancel.set()
            raise
        if job.cancel.is_set():
            decoded = replace(decoded, finish_reason="cancelled")
        return replace(decoded, queue_ms=spent.get("queue_ms"), context_tokens=int(spent.get("context_tokens", 0)))

    async def call(self, key: str, work, superseded=None):
        """`work(engine, cancel)` on the worker under `key` -> its result; `superseded` when a
        newer job for the key replaced it or its cancel flag was set (e.g. alternatives)."""
        from dllm_lsp.runtime.worker import Superseded  # noqa: PLC0415
        engine = self.host.engine
        job = self.worker.submit(key, lambda cancel: work(engine, cancel))
        try:
            out = await asyncio.wrap_future(job.future)
        except Superseded:
            return superseded
        except asyncio.CancelledError:
            job.cancel.set()
            raise
        return superseded if job.cancel.is_set() else out

    async def infill(self, prefix: str, suffix: str, request_options: dict) -> dict:
        """dllm/infill: a raw engine infill (request_options: InfillRequest fields) on the worker
        under its own key, answered as the protocol's JSON (finishReason not-ready / cancelled)."""
        if not self.host.ready:
            return {"text": "", "forwards": 0, "newTokens": 0, "ms": 0.0, "finishReason": "not-ready"}
        from engine.api import InfillRequest  # noqa: PLC0415
        req = InfillRequest(prefix=prefix, suffix=suffix, **request_options)
        res = await self.call("dllm/infill", lambda engine, cancel: engine.infill(req, cancel))
        if res is None:
            return {"text": "", "forwards": 0, "newTokens": 0, "ms": 0.0, "finishReason": "cancelled"}
        return {"text": res.text, "forwards": res.forwards, "newTokens": res.new_tokens, "ms": round(res.ms, 2),
                "finishReason": res.finish_reason}
