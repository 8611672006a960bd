"""The LSP server's remote backend: send the completion plan to an HTTP FIM server instead of the engine.

Setting `backend` = {"url": "http://gpu-box:8012", "api": "openai" | "inception" | "llamacpp",
"model": "...", "apiKeyEnv": "NAME_OF_ENV_VAR", "timeoutMs": 10000}. Everything that belongs to
the editor stays in the LSP process: the syntax decision, the context windows, the snippets,
post-processing, the type-along cache, streaming to the editor. Only the decode moves:

    plan (core/plan.py) ─ query_for_plan ─▶ FimQuery ─ fim_api.request_body ─▶ POST url+path (SSE)
      ◀─ Decoded ◀─ finish_completion ◀─ text += chunk.text ◀─ fim_api.parse_chunk ◀─ data: {...}

`query_for_plan` is pure: prefix and suffix as the plan cut them, the token budget of the
plan's mode, the stop string "\\n" for a line completion (block completions end where
`postprocess.is_settled` says, checked on the streamed text), greedy decoding, and for
llama.cpp's /infill the snippet header split back into `input_extra` files (the other APIs
have no snippet field and get the header inside the prompt). Requests always stream: every
event's committed text goes through `stream_completion` to the same
`dllm/inlineCompletionUpdate` as local decoding, and the stream is closed as soon as the
answer is settled. A server that speaks our draft extension (`dllm-lsp http`) also sends
the draft; others just send text.

Cancellation closes the HTTP request: a newer request for the same document supersedes
the running one (its caller gets `Superseded`, as from the engine worker), and a cancelled
caller (LSP $/cancelRequest) cancels its request. Failures raise `BackendError(kind)`
(refused, timeout, auth, busy, server, http, protocol); after a refused connection or a
timeout the backend fails fast for a short, growing back-off (1 s doubling to 16 s, reset by
the first success), so a dead server never makes typing wait. The service shows each kind of
failure once (lsp/service.py). The `Decoded` it returns counts streamed events as `forwards` (the
server's own passes are not visible) and leaves `new_tokens` at 0.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any, Dict, Optional, Set

from dllm_lsp.core.plan import Plan, finish_completion
from dllm_lsp.runtime.host import Decoded, Update
from dllm_lsp.runtime.stream import PlanView, Watch
from dllm_lsp.http.wire import DRAFT_HEADER, FimQuery, parse_answer, parse_chunk, request_body, split_snippets
from dllm_lsp.runtime.worker import Superseded

log = logging.getLogger(__name__)

BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 16.0


class BackendError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind          # refused | timeout | auth | busy | server | http | protocol


def query_for_plan(plan: Plan, api: str, model: str = "") -> FimQuery:
    """What to ask a FIM server for `plan` (pure)."""
    prefix, snippets = plan.prefix, ()
    if api == "llamacpp" and plan.snippet_header and prefix.startswith(plan.snippet_header):
        prefix, snippets = prefix[len(plan.snippet_header):], tuple(split_snippets(plan.snippet_header))
    req = plan.request
    if api == "llamacpp" and req.repo is not None:       # llama.cpp lays input_extra out as the repo
        snippets = tuple(snippets) + tuple(req.repo.files)
    return FimQuery(prefix=prefix, suffix=plan.suffix, snippets=snippets, max_tokens=req.max_new_tokens,
                    temperature=req.temperature, stop=("\n",) if plan.mode == "line" else (), stream=True,
                    deadline_ms=req.deadline_ms, model=model)


def error_message(status: int, body: bytes) -> str:
    """The server's own words from an error body (OpenAI / llama.cpp shapes), else its start."""
    try:
        data = json.loads(body.decode("utf-8", "replace"))
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return f"HTTP {status}: {err['message']}"
        if isinstance(err, str):
            return f"HTTP {status}: {err}"
    except ValueError:
        pass
    return f"HTTP {status}: {body[:200].decode('utf-8', 'replace').strip()}"


def error_kind(status: int) -> str:
    return {401: "auth", 403: "auth", 429: "busy", 503: "busy"}.get(status, "server" if status >= 500 else "http")


class RemoteBackend:
    """One configured server; `decode` is awaited on the LSP server's asyncio loop."""

    def __init__(self, config: Dict[str, Any]):
        self.url = config["url"].rstrip("/")
        self.api = config.get("api", "openai")
        self.model = config.get("model", "")
        self.api_key_env = config.get("apiKeyEnv", "")
        self.timeout_s = float(config.get("timeoutMs", 10000)) / 1000
        self._session = None
        self._running: Dict[str, asyncio.Task] = {}
        self._superseded: Set[int] = set()
        self._down_until = 0.0
        self._backoff = BACKOFF_FIRST_S
        self._down_error: Optional[BackendError] = None

    def describe(self) -> str:
        return f"{self.url} ({self.api})"

    def headers(self) -> Dict[str, str]:
        out = {"Accept": "text/event-stream, application/json", DRAFT_HEADER: "1"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            out["Authorization"] = f"Bearer {key}"
        return out

    async def decode(self, key: str, plan: Plan, on_update: Optional[Update] = None) -> Decoded:
        """Decode `plan` remotely; a newer call with the same `key` (a document) supersedes this one."""
        now = time.monotonic()
        if now < self._down_until and self._down_error is not None:
            raise BackendError(self._down_error.kind, str(self._down_error))
        old = self._running.get(key)
        if old is not None and not old.done():
            self._superseded.add(id(old))
            old.cancel()
        task = asyncio.ensure_future(self._decode(plan, on_update))
        self._running[key] = task
        try:
            decoded = await task
        except asyncio.CancelledError:
            if id(task) in self._superseded:
                raise Superseded(key) from None
            task.cancel()                       # our caller was cancelled: close the request
            raise
        except BackendError as exc:
            if exc.kind in ("refused", "timeout"):
                self._down_until, self._down_error = time.monotonic() + self._backoff, exc
                self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
            raise
        finally:
            self._superseded.discard(id(task))
            if self._running.get(key) is task:
                del self._running[key]
        self._backoff, self._down_until, self._down_error = BACKOFF_FIRST_S, 0.0, None
        return decoded

    async def _decode(self, plan: Plan, on_update: Optional[Update]) -> Decoded:
        import aiohttp
        path, body = request_body(self.api, query_for_plan(plan, self.api, self.model))
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, connect=min(self.timeout_s, 3.0))
        t0 = time.perf_counter()
        text, events, reason = "", 0, "eos"
        watch = Watch(PlanView(plan), on_update, t0)
        resp, finished = None, False
        try:
            resp = await self._session.post(self.url + path, json=body, headers=self.headers(), timeout=timeout)
            if resp.status != 200:
                raise BackendError(error_kind(resp.status), error_message(resp.status, await resp.read()))
            if "text/event-stream" not in resp.headers.get("Content-Type", ""):
                text, reason = parse_answer(self.api, await resp.json(content_type=None))
                events, finished = 1, True
            else:
                async for raw in resp.content:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    chunk = parse_chunk(self.api, line[5:].strip())
                    if chunk is None:
                        continue
                    events += 1
                    text += chunk.text
                    if chunk.finish_reason:
                        reason = "length" if chunk.finish_reason == "length" else "eos"
                    draft = chunk.draft if chunk.draft is not None else text
                    if watch.update(text, draft, events) and not chunk.done:   # more cannot change it: hang up
                        reason = "settled"
                        break
                else:
                    finished = True                          # read to the end: the connection can be reused
        except BackendError:
            raise
        except aiohttp.ClientConnectorError as exc:
            raise BackendError("refused", f"cannot connect: {exc.os_error or exc}") from None
        except asyncio.TimeoutError:
            raise BackendError("timeout", f"no answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientResponseError as exc:
            raise BackendError("http", f"HTTP {exc.status}: {exc.message}") from None
        except aiohttp.ClientError as exc:
            raise BackendError("http", f"{type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            raise BackendError("protocol", f"unexpected answer: {exc}") from None
        finally:
            if resp is not None:             # closing is what ends a decode we stopped reading (cancel, settled)
                resp.release() if finished else resp.close()
        final = finish_completion(plan, text)
        ms = (time.perf_counter() - t0) * 1000
        watch.finished(final)
        return Decoded(text=final, raw=text, forwards=events, new_tokens=0, ms=ms, first_text_ms=watch.first_text_ms,
                       finish_reason=reason)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        if self._session is not None and not self._session.closed:
            await self._session.close()
