"""The server's behaviour without the protocol: settings, model loading, completions, counts.

CompletionService is driven by lsp/server.py's handlers (all on the asyncio loop) and talks back
through a small `ClientPort` (notify / show_message / progress), so it can be tested without
pygls. Engine work goes to the EngineWorker thread; results come back as futures and
streamed updates are posted onto the loop with call_soon_threadsafe, so every write to the
client happens on the loop thread.

    complete(doc) ─ not ready? ──────────────────────────▶ "" at once
                  ─ type-along cache hit? ───────────────▶ the remainder, no forward pass
                  ─ plan_completion() is None? ──────────▶ ""
                  ─ debounce; a newer request came? ─────▶ ""
                  ─ worker.submit(uri) … updates ─▶ dllm/inlineCompletionUpdate
                    (runtime/host.LocalBackend; setting `backend`: http/client.RemoteBackend, the same decode)
                  ─ finish_completion() ─▶ cache.store ─▶ final text (+ done notification)
                  ─ prepare_next: the suggestion after accepting it, decoded in the background ─▶ cache.store
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

from dllm_lsp.core.typealong import TypeAlongCache
from dllm_lsp.core.plan import plan_completion
from dllm_lsp.runtime.alternatives import alternatives, with_runner_ups
from dllm_lsp.http.client import BackendError
from dllm_lsp.runtime.host import Decoded, EngineHost, LocalBackend, decode_plan, model_key
from dllm_lsp.settings import Settings, parse_settings, section_of
from dllm_lsp.lsp.usage import StatsStore
from dllm_lsp.runtime.worker import EngineWorker, Superseded
from dllm_lsp.runtime.workspace import RepoSource
from dllm_lsp.lsp.messages import Answer, ClientPort, DocumentAt, Metrics, document_name

log = logging.getLogger(__name__)

UPDATE = "dllm/inlineCompletionUpdate"
STATUS = "dllm/status"
MAX_SNIPPET_DOCS = 5
STATUS_EVERY_S = 2.0          # at most this often, a dllm/status with the latest latency
NEXT_KEY = "#next"            # the engine worker's key of a document's prepared next suggestion (+ its uri)


class CompletionService:
    def __init__(self, client: ClientPort, stats: Optional[StatsStore] = None,
                 default_model: Optional[str] = None):
        self.client = client
        self.default_model = default_model
        self.settings = Settings() if default_model is None else Settings(model=default_model)
        self.raw_settings: Dict[str, Any] = {}
        self.init_settings: Dict[str, Any] = {}
        self.host = EngineHost()
        self.worker = EngineWorker()
        self.local = LocalBackend(self.host, self.worker)
        self.cache = TypeAlongCache()
        self.stats = stats if stats is not None else StatsStore()
        self.metrics = Metrics()
        self.generation: Dict[str, int] = defaultdict(int)
        self.reported_error: Optional[Tuple] = None
        self.last_latency_ms: Optional[float] = None
        self._load_seq = itertools.count(1)
        self._started = False
        self._unsaved = 0
        self._last_status_at = 0.0
        self._warm_timers: Dict[str, asyncio.TimerHandle] = {}
        self.last_suggestion: Dict[str, str] = {}      # uri -> the last suggestion made there (a draft source)
        self.last_answered: Dict[str, Tuple] = {}      # uri -> (version, offset) of the last request answered
        self.remote = None                             # a RemoteBackend while the `backend` setting is set
        self._backend_reported: Optional[Tuple] = None # (url, kind) of the failure last shown
        self.repo = RepoSource()                       # the workspace folders and the recent chunks

    # ---- settings and model --------------------------------------------------------------
    def configure(self, raw: Any, initial: bool = False) -> List[str]:
        """Apply camelCase settings (flat or under "dllm"); reload the model if it changed.

        initializationOptions (initial=True) are the base; each workspace/didChangeConfiguration
        carries the client's whole current section and replaces the previous change on top of it.
        """
        self.metrics.configurations += 1
        section = section_of(raw)
        if initial:
            self.init_settings = section
        self.raw_settings = {**self.init_settings, **section}
        base = Settings() if self.default_model is None else Settings(model=self.default_model)
        new, messages = parse_settings(self.raw_settings, base)
        old, self.settings = self.settings, new
        if "logLevel" in self.raw_settings:          # otherwise the command line's -v decides
            logging.getLogger("dllm_lsp").setLevel(new.log_level.upper())
        if messages:                             # one message (one log line) per settings change
            self.client.show_message("warning", "dllm-lsp: " + "; ".join(messages))
        if old != new:
            self.cache.clear()                   # suggestions depend on the settings that made them
        if old.backend != new.backend or (self.remote is None) != (new.backend is None):
            self._set_backend(new.backend)
        if self._started and (model_key(old) != model_key(new) or old.backend != new.backend):
            self.load()
        return messages

    def start(self) -> None:
        self._started = True
        self.load()

    def load(self) -> None:
        """Load (or reload) the model in the background; requests meanwhile get empty answers."""
        settings = self.settings
        seq = next(self._load_seq)
        self._current_load = seq
        if self.remote is not None:              # a remote backend decodes: no local model to load
            self.cache.clear()
            self._status("ready", f"remote backend {self.remote.describe()}")
            return
        self.host.state = "loading"
        self.cache.clear()
        self._status("loading", f"loading model {settings.model}")
        loop = asyncio.get_running_loop()

        async def run():
            token = await self.client.progress_begin(f"dllm-lsp: loading model {settings.model}")
            job = self.worker.run_exclusive(lambda cancel: self.host.load(settings, cancel), key="load")
            try:
                ok = await asyncio.wrap_future(job.future)
            except Superseded:
                self.client.progress_end(token, "superseded by a newer model setting")
                return
            if seq != self._current_load:
                self.client.progress_end(token, "superseded by a newer model setting")
                return
            if ok:
                self.client.progress_end(token, f"ready ({self.host.engine.load_ms:.0f} ms)")
                self._status("ready", f"model {settings.model} ready")
                if self.host.drafter_error:
                    self.client.show_message("warning", f"dllm-lsp: drafter '{settings.drafter}' not used: "
                                                        f"{self.host.drafter_error}. Suggestions are the same, "
                                                        "only slower.")
            else:
                self.client.progress_end(token, f"failed: {self.host.error}")
                self._status("error", self.host.error or "load failed")
                key = (model_key(settings), self.host.error)
                if key != self.reported_error:           # once per failing setting
                    self.reported_error = key
                    self.client.show_message("error", f"dllm-lsp: cannot load model '{settings.model}': "
                                                      f"{self.host.error}. Completions are off until the "
                                                      "`dllm.model` setting points at a loadable model.")

        self._load_task = loop.create_task(run())

    def _status(self, state: str, message: str) -> None:
        self._last_status_at = time.monotonic()
        self.client.notify(STATUS, {"state": state, "message": message, "model": self.settings.model,
                                    "lastLatencyMs": self.last_latency_ms})

    # ---- completions --------------------------------------------------------------------------
    async def complete(self, doc: DocumentAt, stream: bool = True, alternatives: bool = False) -> Answer:
        """The suggestion at doc's cursor; `alternatives` (an explicit request) at the state last answered
        (the user asks again: cycling) adds up to two others (runtime/alternatives.py, in-process)."""
        t0 = time.perf_counter()
        self.metrics.requests += 1
        self.generation[doc.uri] += 1
        gen = self.generation[doc.uri]
        stream = stream and self.settings.streaming
        again = self.last_answered.get(doc.uri) == (doc.version, doc.offset)
        answer = await self._complete(doc, stream, gen, t0, alternatives and again and self.remote is None)
        self.last_answered[doc.uri] = (doc.version, doc.offset)
        if stream:
            self._update(doc, answer.text, answer.text, done=True)
        self._account(answer, t0, doc.version)
        return answer

    async def _complete(self, doc: DocumentAt, stream: bool, gen: int, t0: float, more: bool) -> Answer:
        settings = self.settings
        if not settings.language_enabled(doc.language_id):
            return Answer("", "disabled")
        if not self.host.ready and self.remote is None:
            return Answer("", "not-ready")
        before, after = doc.text[: doc.offset], doc.text[doc.offset:]
        hit = None if more else self.cache.lookup(before, after)     # alternatives need the decode's choices
        if hit is not None:
            if hit.text and self.remote is None:
                self._prepare_next(doc, hit.text)
            return Answer(hit.text, "cached", ms=(time.perf_counter() - t0) * 1000)
        plan = self._plan(doc)
        if plan is None:
            return Answer("", "no-completion")
        plan = with_runner_ups(plan) if more else plan
        if settings.debounce_ms:
            await asyncio.sleep(settings.debounce_ms / 1000)
            if self.generation[doc.uri] != gen:
                return Answer("", "superseded")
        backend = self.remote if self.remote is not None else self.local

        def on_update(stable: str, draft: str, forwards: int) -> None:
            if stream:
                self._update(doc, stable, draft, False)

        try:
            decoded: Decoded = await backend.decode(doc.uri, plan, on_update)
        except Superseded:
            return Answer("", "superseded", mode=plan.mode)
        except asyncio.CancelledError:
            self.metrics.cancelled += 1
            raise
        except BackendError as exc:
            self._backend_failed(exc)
            return Answer("", "backend-error", mode=plan.mode)
        if backend is self.remote and self._backend_reported is not None:
            self._backend_reported = None
            self._status("ready", f"remote backend {backend.describe()}")
        self.metrics.engine_runs += 1
        self.metrics.forwards += decoded.forwards
        self.metrics.new_tokens += decoded.new_tokens
        spent = {"queue_ms": decoded.queue_ms, "context_tokens": decoded.context_tokens}
        if decoded.finish_reason == "cancelled":
            return Answer("", "superseded", forwards=decoded.forwards, mode=plan.mode, **spent)
        self.cache.store(before, after, decoded.text)
        if decoded.text:
            self.last_suggestion[doc.uri] = decoded.text
            if backend is self.local:
                self._prepare_next(doc, decoded.text)
        others = ()
        if more and decoded.text:
            others = tuple(await self.local.call(doc.uri, lambda engine, cancel: alternatives(engine, plan, decoded, cancel), []))
        return Answer(decoded.text, "ok", forwards=decoded.forwards, ms=(time.perf_counter() - t0) * 1000,
                      alternatives=others,
                      first_text_ms=decoded.first_text_ms, mode=plan.mode, **spent)

    def _prepare_next(self, doc: DocumentAt, text: str) -> None:
        """Tab, Tab, Tab (llama.vim's speculative FIM): decode in the background the suggestion at
        the cursor after `text` is accepted, and keep it in the type-along cache, so the request
        that follows an accept answers at once. A background job under its own key: any request
        goes first and stops it (at most one engine step), a warm-up neither replaces nor cancels
        it, and it only waits while nothing else does (EngineWorker.submit's idle_only)."""
        if not self.settings.prepare_next or not self.host.ready:
            return
        at = doc.offset + len(text)
        accepted = replace(doc, text=doc.text[:doc.offset] + text + doc.text[doc.offset:], offset=at)
        before, after = accepted.text[:at], accepted.text[at:]
        if self.cache.lookup(before, after) is not None:
            return
        plan = self._plan(accepted)
        if plan is None:
            return
        engine, loop = self.host.engine, asyncio.get_running_loop()
        job = self.worker.submit(doc.uri + NEXT_KEY, lambda cancel: decode_plan(engine, plan, cancel), idle_only=True)

        def keep(decoded: Decoded) -> None:
            self.cache.store(before, after, decoded.text)
            self.metrics.prepared += 1

        def done(future) -> None:                  # on the engine thread
            if future.cancelled() or future.exception() is not None or job.cancel.is_set():
                return
            if future.result().finish_reason != "cancelled":
                loop.call_soon_threadsafe(keep, future.result())
        job.future.add_done_callback(done)

    # ---- the remote backend ------------------------------------------------------------------
    def _set_backend(self, config: Optional[Dict[str, Any]]) -> None:
        old, self.remote = self.remote, None
        if old is not None:
            self._close_remote(old)
        self._backend_reported = None
        if config is not None:
            from dllm_lsp.http.client import RemoteBackend
            self.remote = RemoteBackend(config)

    def _close_remote(self, remote) -> None:
        try:
            asyncio.get_running_loop().create_task(remote.close())
        except RuntimeError:                      # no loop (tests, shutdown): nothing left to close on it
            pass

    def _backend_failed(self, exc) -> None:
        """A remote backend's failure: shown once per kind in dllm/status and a message (typing
        never waits on a dead server; suggestions are empty until it answers)."""
        key = (self.remote.url, exc.kind)
        if key != self._backend_reported:
            self._backend_reported = key
            message = f"backend {self.remote.describe()}: {exc}"
            self._status("error", message)
            self.client.show_message("error", f"dllm-lsp: {message}. Suggestions are empty until it answers.")

    def _plan(self, doc: DocumentAt):
        """What the engine is asked at doc's cursor (the same for a request and its warm-up, so
        the warm-up fills exactly the context cache the request will look up)."""
        settings = self.settings
        others = [(document_name(u), t) for u, t in doc.others] if settings.snippet_tokens else []
        hint = self.last_suggestion.get(doc.uri, "")
        return plan_completion(doc.text, doc.offset, doc.language_id, settings, self.host.tokenizer,
                               snippets=others[:MAX_SNIPPET_DOCS], draft_hints=(hint,) if hint else (),
                               repo=self._repo_view(doc))

    def visited(self, doc: Optional[DocumentAt]) -> None:       # an edit or a cursor rest: a recent chunk
        if doc is not None and self.settings.repo_tokens > 0:
            self.repo.visited(doc.uri, doc.text, doc.offset)

    def _repo_view(self, doc: DocumentAt):
        """doc's place in the workspace (None outside it or with repoTokens 0), in the model's repo
        layout where it reads one (a llama.cpp backend lays input_extra out so), else a comment header."""
        if self.settings.repo_tokens <= 0:
            return None
        layout = (self.remote.api == "llamacpp" if self.remote is not None
                  else self.host.ready and self.host.engine.reads_repo_layout)
        return self.repo.view(doc.uri, dict(doc.others), layout)

    def _update(self, doc: DocumentAt, stable: str, draft: str, done: bool) -> None:
        self.client.notify(UPDATE, {"uri": doc.uri, "version": doc.version, "position": doc.position,
                                    "stable": stable, "draft": draft, "done": done})

    def _account(self, answer: Answer, t0: float, version: Optional[int] = None) -> None:
        ms = (time.perf_counter() - t0) * 1000
        self.metrics.record(answer, ms, version)
        if answer.reason in ("ok", "cached"):
            self.last_latency_ms = round(ms, 1)
            self.stats.record_latency(ms, cached=answer.reason == "cached")
            self._unsaved += 1
            if self._unsaved >= 20:
                self.flush()
            now = time.monotonic()
            if now - self._last_status_at >= STATUS_EVERY_S and self.host.ready:
                self._status("ready", f"model {self.settings.model} ready")     # carries lastLatencyMs

    def engine_context_tokens(self) -> int:
        """Context tokens whose keys/values the engine computed since it loaded (requests and
        warm-ups): `bench typing` divides it by the keys typed."""
        engine = self.host.engine if self.host.ready else None
        return engine.context_cache.computed if engine is not None else 0

    # ---- warm-up ------------------------------------------------------------------------------
    def warm_soon(self, doc: DocumentAt, delay_ms: Optional[int] = None, token: Any = None) -> None:
        """Prefill `doc`'s context at its cursor once the cursor has rested for warm_up_delay_ms:
        each call (a keystroke, a cursor move) restarts the timer. The prefill runs on the engine
        thread under the document's own key, so a real request for the document supersedes it
        and waits at most one chunk. `token` (from dllm/cursor) is echoed in metrics.lastWarm
        once this warm-up has run, so a client can tell it apart from earlier ones."""
        if not self.settings.warm_up or not self.host.ready:
            return
        old = self._warm_timers.pop(doc.uri, None)
        if old is not None:
            old.cancel()
        delay = self.settings.warm_up_delay_ms if delay_ms is None else delay_ms
        loop = asyncio.get_running_loop()
        self._warm_timers[doc.uri] = loop.call_later(delay / 1000, self._warm, doc, token)

    def _warm(self, doc: DocumentAt, token: Any = None) -> None:
        self._warm_timers.pop(doc.uri, None)
        if not self.host.ready or not self.settings.language_enabled(doc.language_id):
            return
        plan = self._plan(doc)
        if plan is None:
            return
        engine = self.host.engine
        job = self.worker.submit(doc.uri, lambda cancel: engine.warm(plan.request, cancel), background=True)

        def done(future) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            self.metrics.warmups += 1
            self.metrics.warm_tokens += future.result()
            self.metrics.last_warm = {"uri": doc.uri, "token": token, "tokens": future.result()}
        job.future.add_done_callback(done)

    def closed(self, uri: str) -> None:
        """The document was closed: its warm-up timer, waiting and running engine work are dropped."""
        timer = self._warm_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()
        self.worker.cancel(uri)
        self.worker.cancel(uri + NEXT_KEY)
        self.last_suggestion.pop(uri, None)
        self.last_answered.pop(uri, None)
        self.generation.pop(uri, None)
        self.repo.closed(uri)

    async def infill(self, prefix: str, suffix: str, request_options: Dict[str, Any]) -> Dict[str, Any]:
        """dllm/infill: a raw engine infill for plugins that build their own context (LocalBackend.infill)."""
        answer = await self.local.infill(prefix, suffix, request_options)
        self.metrics.forwards += answer["forwards"]
        return answer

    def shown(self, text: str) -> None:
        self.stats.record_shown(text)
        self.flush()

    def accepted(self, length: int) -> None:
        self.stats.record_accepted(length)
        self.flush()

    def flush(self) -> None:
        self._unsaved = 0
        self.stats.save()

    def close(self) -> None:
        self.flush()
        if self.remote is not None:
            self._close_remote(self.remote)
        self.worker.stop(timeout=2.0)
