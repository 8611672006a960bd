"""`dllm-lsp http`'s engine side: a FIM or chat query decoded by the engine (decode_query: the
request built as for the editor, context windows and snippet header included, then the stream
with stop strings and llama.cpp's deadline), and FimEngine, the loaded model on its worker thread
with admission control (Busy past the queue limit, NotReady while loading), shared by all
handlers of http/server.py."""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from engine.api import RepoContext

import dllm_lsp.core.context as context
import dllm_lsp.core.syntax as syntax
from dllm_lsp.runtime.host import EngineHost, _StopFlag
from dllm_lsp.runtime.stream import StopView, Watch
from dllm_lsp.http.wire import FimAnswer, FimQuery
from dllm_lsp.settings import Settings
from dllm_lsp.runtime.worker import EngineWorker, Superseded

log = logging.getLogger(__name__)

DEFAULT_QUEUE = 8

class Busy(Exception):
    """The bounded queue is full (429)."""


class NotReady(Exception):
    """The model is loading or failed to load (503)."""


@dataclass
class Counters:
    requests: int = 0          # completion requests admitted
    completed: int = 0
    cancelled: int = 0         # the client went away (or the decode was cancelled) before the end
    rejected: int = 0          # 429
    unavailable: int = 0       # 503
    bad: int = 0               # 4xx other than 429
    errors: int = 0            # 500
    decodes: int = 0           # decodes the engine finished, cancelled ones included (counted when they end)
    forwards: int = 0          # their forward passes and new tokens
    completion_tokens: int = 0

    def as_json(self) -> Dict[str, int]:
        return dict(self.__dict__)


Update = Callable[[str, str, int], None]      # (visible committed text, draft, forward passes)


def comment_for(filename: str) -> str:
    return syntax.spec_for(syntax.language_for_path(filename)).comment or "#"


def decode_query(engine, settings: Settings, q: FimQuery, cancel: Optional[threading.Event] = None,
                 on_update: Optional[Update] = None) -> FimAnswer:
    """One query through the engine (on the engine thread): context windows, snippets, stop strings."""
    t0 = time.perf_counter()
    count = context.token_counter(engine.tokenizer)
    if q.raw_prompt:
        req, prompt_tokens = chat_request(settings, q), count(q.prefix)
    else:
        req, prompt_tokens = fim_request(settings, q, count, repo_layout=engine.reads_repo_layout)
    return _decode(engine, req, q, prompt_tokens, t0, cancel, on_update)


def chat_request(settings: Settings, q: FimQuery):
    """A chat query's InfillRequest: the rendered prompt as it is (the engine cuts it from the left
    to fit the model), no context windows, no snippets."""
    return settings.infill_request(q.prefix, max_new_tokens=max(1, q.max_tokens or settings.max_new_tokens_block),
                                   raw_prompt=True, temperature=q.temperature, seed=q.seed or 0,
                                   stop_at_eos=not q.ignore_eos)


def fim_request(settings: Settings, q: FimQuery, count, repo_layout: bool = False):
    """A FIM query's InfillRequest (context windows and snippets as for the editor) and its prompt
    tokens. On a model that reads the repo layout the snippets (`input_extra`) become its files,
    the newest (last) that fit in repoTokens, as llama.cpp's /infill lays them out; else a
    comment header chosen by overlap within snippetTokens."""
    header, repo = "", None
    if q.snippets and repo_layout and settings.repo_tokens > 0:
        files, used = [], 0
        for name, text in reversed(q.snippets):
            used += count(name) + count(text) + 2
            if used > settings.repo_tokens:
                break
            files.insert(0, (name or "file", text))
        repo = RepoContext("project", "file", tuple(files)) if files else None
    elif q.snippets and settings.snippet_tokens > 0:
        header = context.pick_snippets(list(q.snippets), q.prefix[-800:] + q.suffix[:200], settings.snippet_tokens,
                                       count, comment_for(q.snippets[0][0]), max_snippets=len(q.snippets))
    budget = max(16, settings.prefix_tokens - (count(header) if header else 0))
    prefix, suffix = context.windows(q.prefix + q.suffix, len(q.prefix), budget, settings.suffix_tokens, count)
    n = settings.max_new_tokens_block if q.max_tokens is None else q.max_tokens
    req = settings.infill_request(header + prefix, suffix, max_new_tokens=max(1, n), temperature=q.temperature,
                                  seed=q.seed or 0, stop_at_eos=not q.ignore_eos, ends_at_newline="\n" in q.stop,
                                  draft_sources=tuple(t[-20_000:] for _, t in q.snippets[:2]) if settings.drafting else (),
                                  repo=repo)
    return req, count(req.prefix) + count(req.suffix) + (sum(count(t) for _, t in repo.files) if repo else 0)


def _decode(engine, req, q: FimQuery, prompt_tokens: int, t0: float, cancel, on_update) -> FimAnswer:
    """Run `req` on the engine with `q`'s stop strings and deadline; the answer."""
    if q.max_tokens == 0:                   # llama.vscode's "prepare" request: prefill the context only
        engine.warm(req, cancel)
        ms = (time.perf_counter() - t0) * 1000
        return FimAnswer("", "length", prompt_tokens=prompt_tokens, prompt_ms=ms, total_ms=ms)
    stop = _StopFlag(cancel)
    view = StopView(q.stop, q.deadline_ms)
    watch = Watch(view, on_update, t0)
    prompt_ms = None
    last = None
    for last in engine.stream(req, stop):
        if prompt_ms is None:
            prompt_ms = (time.perf_counter() - t0) * 1000
        if last.result is not None:
            break
        if watch.update(last.stable, last.draft, last.forwards):
            stop.set()
    res = last.result
    text, word = view.scanner.final(res.text)
    if cancel is not None and cancel.is_set():
        reason = "cancelled"
    elif view.timed_out:
        reason = "length"
    elif word or res.finish_reason in ("eos", "cancelled"):     # "cancelled" here: our stop after a stop string
        reason = "stop"
    else:
        reason = "length"                                         # length, deadline
    total = (time.perf_counter() - t0) * 1000
    return FimAnswer(text=text, finish_reason=reason, prompt_tokens=prompt_tokens, completion_tokens=res.new_tokens,
                     forwards=res.forwards, prompt_ms=prompt_ms or total, total_ms=total, stop_word=word)


class FimEngine:
    """The loaded model on its worker thread, with admission control; shared by all handlers."""

    def __init__(self, settings: Settings, queue_limit: int = DEFAULT_QUEUE, model_id: Optional[str] = None):
        self.settings = settings
        self.queue_limit = max(1, queue_limit)
        self.host = EngineHost()
        self.worker = EngineWorker(max_pending=self.queue_limit + 2, name="dllm-http-engine")
        self.model_id = model_id or model_id_of(settings.model)
        self.counters = Counters()
        self.active = 0
        self._ids = itertools.count(1)
        self.load_job = None

    def start(self):
        self.host.state = "loading"
        self.load_job = self.worker.run_exclusive(lambda cancel: self.host.load(self.settings, cancel), key="load")
        return self.load_job

    def admit(self) -> None:
        if not self.host.ready:
            self.counters.unavailable += 1
            raise NotReady(f"model {self.settings.model} failed to load: {self.host.error}"
                           if self.host.state == "error" else f"model {self.settings.model} is loading")
        if self.active >= self.queue_limit:
            self.counters.rejected += 1
            raise Busy(f"{self.active} requests are waiting or decoding (the limit is {self.queue_limit}); "
                       "retry shortly")

    async def run(self, q: FimQuery, on_update: Optional[Update] = None) -> FimAnswer:
        """Decode `q` on the engine thread; cancelling the awaiting task cancels the decode."""
        self.admit()
        key = f"http-{next(self._ids)}"
        loop = asyncio.get_running_loop()
        engine, settings = self.host.engine, self.settings

        def push(visible: str, draft: str, forwards: int) -> None:
            try:
                loop.call_soon_threadsafe(on_update, visible, draft, forwards)
            except RuntimeError:                       # the loop is gone (shutdown): just decode on
                pass

        self.active += 1
        self.counters.requests += 1
        job = self.worker.submit(key, lambda cancel: decode_query(engine, settings, q, cancel,
                                                                   push if on_update else None))
        job.future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._account, f))
        try:
            answer = await asyncio.wrap_future(job.future)
        except (asyncio.CancelledError, Superseded):
            self.worker.cancel(key)
            self.counters.cancelled += 1
            raise
        finally:
            self.active -= 1
        if answer.finish_reason == "cancelled":
            self.counters.cancelled += 1
        else:
            self.counters.completed += 1
        return answer

    def _account(self, future) -> None:
        """When a decode ends (also one whose client went away): what the engine spent on it."""
        if future.cancelled() or future.exception() is not None:
            return
        answer = future.result()
        self.counters.decodes += 1
        self.counters.forwards += answer.forwards
        self.counters.completion_tokens += answer.completion_tokens

    def health(self) -> Dict[str, Any]:
        state = {"ready": "ok"}.get(self.host.state, self.host.state)
        out = {"status": state, "model": self.model_id, "queue": {"active": self.active, "limit": self.queue_limit},
               "counters": self.counters.as_json()}
        if self.host.error:
            out["error"] = self.host.error
        return out

    def close(self) -> None:
        self.worker.stop(timeout=2.0)


def model_id_of(model: str) -> str:
    p = Path(model)
    return p.name if (os.sep in model or model.endswith(".gguf")) and p.name else model
