"""`dllm-lsp http`: the engine behind the ecosystem's FIM HTTP APIs (aiohttp).

    POST /v1/completions       OpenAI completions (prompt + suffix), streamed as SSE with `data: [DONE]`
    POST /v1/fim/completions   Inception's FIM shape (same fields; choices[].text)
    POST /v1/chat/completions  OpenAI chat (messages rendered with the ChatML template; causal models only)
    POST /infill               llama.cpp's shape as llama.vscode / llama.vim send it
    GET  /v1/models            the one model served
    GET  /health               200 {"status": "ok", ...} once the model is loaded, else 503

Design. Wire formats are pure functions in http/wire.py; this module is the I/O around them.
The engine is the LSP server's: one `EngineHost` loaded on one `EngineWorker` thread
(runtime/worker.py), so every decode runs on one thread, one at a time, through `Engine.stream` (the
same decode path as the editor's completions; what differs is only that the client built
the context, so no syntax decision and no post-processing: the API contract is raw text and
stop strings). The prefix and suffix are cut to the server's token budgets with
`context.windows` and `input_extra` files become a snippet header with
`context.pick_snippets`, both as for the editor.

Admission: at most `queue_limit` requests are waiting or decoding; the next one is answered
429 with Retry-After at once (no unbounded queue); while the model loads (or failed to) every
completion is 503. Each request has its own worker key, so none supersedes another (the LSP
server's "newest per document wins" belongs to the editor, which knows documents).
Cancellation: aiohttp cancels a handler whose client disconnected (handler_cancellation), and a
failed write to a closed stream does the same; either way the decode's cancel flag is set
(the engine checks it before every forward pass) or the waiting job is dropped.

Robustness: every error is a JSON body in OpenAI's error shape: bad JSON, wrong types,
unsupported options -> 400; a missing or wrong bearer token -> 401; an unknown path -> 404;
a body over `max_body` bytes -> 413; anything unexpected -> 500 and a log line. The server
never dies because of one request.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from aiohttp import web

from dllm_lsp.http.chat import chat_answer_body, chat_chunk_body, parse_chat_request
from dllm_lsp.http.fields import BadRequest
from dllm_lsp.http.fim_engine import Busy, FimEngine, NotReady
from dllm_lsp.http.wire import (APIS, DRAFT_HEADER, SSE_DONE, FimQuery, answer_body, chunk_body, error_body,
                                parse_request, sse, usage_chunk)

log = logging.getLogger(__name__)

TOKEN_ENV = "DLLM_LSP_TOKEN"
CONFIG_DIR_ENV = "DLLM_LSP_CONFIG_DIR"
DEFAULT_MAX_BODY = 2 * 1024 * 1024
MAX_TOKENS_CAP = 1024
ENGINE_KEY = web.AppKey("engine", object)
MAX_BODY_KEY = web.AppKey("max_body", int)


# ---- the token ---------------------------------------------------------------------------------

def token_path() -> Path:
    base = os.environ.get(CONFIG_DIR_ENV)
    if not base:
        import platformdirs
        base = platformdirs.user_config_dir("dllm-lsp")
    return Path(base) / "http-token"


def resolve_token() -> Tuple[str, str, bool]:
    """(token, where it came from, whether it was generated now). $DLLM_LSP_TOKEN wins; else the
    token file in the user config dir; else a new random token written there (mode 0600)."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env, f"${TOKEN_ENV}", False
    path = token_path()
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except OSError:
        existing = ""
    if existing:
        return existing, str(path), False
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, str(path), True


def is_loopback(host: str) -> bool:
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---- HTTP --------------------------------------------------------------------------------------

def json_error(status: int, message: str, param: Optional[str] = None, headers=None) -> web.Response:
    return web.json_response(error_body(status, message, param), status=status, headers=headers)


def make_app(engine: FimEngine, token: str, max_body: int = DEFAULT_MAX_BODY) -> web.Application:
    """The aiohttp application; `engine` must be started by the caller (FimEngine.start)."""
    expected = ("Bearer " + token).encode("utf-8")

    @web.middleware
    async def guard(request: web.Request, handler):
        given = request.headers.get("Authorization", "").encode("utf-8")
        if not hmac.compare_digest(given, expected):
            engine.counters.bad += 1
            return json_error(401, "missing or wrong bearer token (send `Authorization: Bearer <token>`; the "
                                   "token is $DLLM_LSP_TOKEN or the file `dllm-lsp http` printed at its first start)",
                              headers={"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except BadRequest as exc:
            engine.counters.bad += 1
            return json_error(400, str(exc), exc.param)
        except NotReady as exc:
            return json_error(503, str(exc), headers={"Retry-After": "2"})
        except Busy as exc:
            return json_error(429, str(exc), headers={"Retry-After": "1"})
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            engine.counters.bad += 1
            return json_error(exc.status, exc.text if exc.text and not exc.text.startswith(str(exc.status))
                              else exc.reason, headers={"Allow": exc.headers["Allow"]} if "Allow" in exc.headers
                              else None)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:       # one bad request must never take the server down
            log.exception("error serving %s %s", request.method, request.path)
            engine.counters.errors += 1
            return json_error(500, f"internal error: {type(exc).__name__}: {exc}")

    app = web.Application(middlewares=[guard], client_max_size=max_body)
    app[ENGINE_KEY] = engine
    app[MAX_BODY_KEY] = max_body
    for api, path in (("openai", "/v1/completions"), ("inception", "/v1/fim/completions"), ("llamacpp", "/infill")):
        app.router.add_post(path, completion_handler(api))
    app.router.add_post("/v1/chat/completions", chat_handler)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app


async def read_json(request: web.Request) -> Any:
    limit = request.app[MAX_BODY_KEY]
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length,
                                            text=f"the body is {request.content_length} bytes; the limit is {limit}")
    raw = await request.read()          # a chunked body over the limit raises 413 here
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    try:                                # "\ud800" is valid JSON but no text the tokenizer can take
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("the body holds a lone UTF-16 surrogate (\\ud800-\\udfff): not text") from None
    except (ValueError, RecursionError):
        raise BadRequest("the body is nested too deeply") from None
    return body


def completion_handler(api: str):
    assert api in APIS

    async def handle(request: web.Request) -> web.StreamResponse:
        engine: FimEngine = request.app[ENGINE_KEY]
        q = parse_request(api, await read_json(request), MAX_TOKENS_CAP)
        if request.headers.get(DRAFT_HEADER, "").strip().lower() in ("1", "true"):
            q = replace(q, draft=True)
        meta = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": engine.model_id}
        if not q.stream:
            answer = await engine.run(q)
            return web.json_response(answer_body(api, answer, **meta))
        engine.admit()                          # 429 / 503 as a status, before the stream starts
        return await stream(request, engine, api, q, meta)

    return handle


async def chat_handler(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions: the messages rendered with ChatML, decoded as a raw prompt."""
    engine: FimEngine = request.app[ENGINE_KEY]
    q = parse_chat_request(await read_json(request), MAX_TOKENS_CAP)
    if engine.host.ready and engine.host.engine.cfg.attention != "causal":
        raise BadRequest(f"model {engine.model_id} is a block-diffusion infilling model and cannot chat; "
                         "/v1/chat/completions needs a causal (AR) model such as --model default "
                         "(Qwen2.5-Coder); use /v1/completions or /infill with this one", "model")
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": engine.model_id}
    if not q.stream:
        answer = await engine.run(q)
        return web.json_response(chat_answer_body(answer, **meta))
    engine.admit()
    return await stream(request, engine, "chat", q, meta)


def _delta_event(api: str, text: str, meta: Dict[str, Any], dllm=None, finish_reason=None) -> bytes:
    """One SSE event carrying new text (chat: as choices[0].delta.content)."""
    if api == "chat":
        return sse(chat_chunk_body({"content": text}, finish_reason=finish_reason, **meta))
    return sse(chunk_body(api, text, dllm=dllm, finish_reason=finish_reason, **meta))


async def stream(request: web.Request, engine: FimEngine, api: str, q: FimQuery, meta: Dict[str, Any]):
    """SSE: a chunk per forward pass that committed text (and, with the draft extension, per pass
    that changed the draft); the last chunk carries finish_reason (llama.cpp: stop, timings)."""
    updates: asyncio.Queue = asyncio.Queue()
    done = object()
    task = asyncio.ensure_future(engine.run(q, lambda *u: updates.put_nowait(u)))
    task.add_done_callback(lambda _: updates.put_nowait(done))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    sent, last_draft = "", None
    try:
        await resp.prepare(request)
        if api == "chat":                       # OpenAI's first chat chunk: the role, no content
            await resp.write(sse(chat_chunk_body({"role": "assistant", "content": ""}, **meta)))
        while True:
            item = await updates.get()
            while item is not done and not updates.empty():        # coalesce: the engine ran ahead
                nxt = updates.get_nowait()
                if nxt is done:
                    updates.put_nowait(done)
                    break
                item = nxt
            if item is done:
                break
            visible, draft, forwards = item
            delta = visible[len(sent):] if visible.startswith(sent) else ""
            if delta or (q.draft and draft != last_draft):
                ext = {"stable": visible if delta else sent, "draft": draft, "forwards": forwards} if q.draft else None
                await resp.write(_delta_event(api, delta, meta, dllm=ext))
                sent += delta
                last_draft = draft
        try:
            answer = task.result()
        except (Busy, NotReady) as exc:         # raced past admit(): say so in the stream
            await resp.write(sse(error_body(429 if isinstance(exc, Busy) else 503, str(exc))))
            return resp
        rest = answer.text[len(sent):] if answer.text.startswith(sent) else ""
        ext = {"stable": answer.text, "draft": answer.text, "forwards": answer.forwards} if q.draft else None
        if api == "llamacpp":
            await resp.write(sse(chunk_body(api, rest, answer=answer, dllm=ext, **meta)))
        else:
            if api == "chat":                   # the rest as content, then an empty delta with the reason
                if rest:
                    await resp.write(_delta_event(api, rest, meta))
                await resp.write(sse(chat_chunk_body({}, finish_reason=answer.finish_reason, **meta)))
            else:
                await resp.write(sse(chunk_body(api, rest, finish_reason=answer.finish_reason, dllm=ext, **meta)))
            if q.include_usage:
                await resp.write(sse(usage_chunk(answer, **meta, object="chat.completion.chunk" if api == "chat"
                                                 else "text_completion")))
            await resp.write(SSE_DONE)
        await resp.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        task.cancel()                            # the client went away: stop decoding
        raise
    except Exception as exc:
        task.cancel()
        log.exception("stream failed")
        engine.counters.errors += 1
        if resp.prepared:
            try:
                await resp.write(sse(error_body(500, f"internal error: {type(exc).__name__}: {exc}")))
            except ConnectionError:
                pass
            return resp
        raise
    finally:
        if not task.done():
            task.cancel()
    return resp


async def models(request: web.Request) -> web.Response:
    engine: FimEngine = request.app[ENGINE_KEY]
    return web.json_response({"object": "list", "data": [
        {"id": engine.model_id, "object": "model", "created": 0, "owned_by": "dllm-lsp",
         "meta": {"state": engine.host.state}}]})


async def health(request: web.Request) -> web.Response:
    engine: FimEngine = request.app[ENGINE_KEY]
    body = engine.health()
    return web.json_response(body, status=200 if body["status"] == "ok" else 503)


# ---- running it ----------------------------------------------------------------------------------

async def serve(engine: FimEngine, token: str, host: str, port: int, max_body: int,
                ready: Optional[Callable[[int], None]] = None, stop: Optional[asyncio.Event] = None) -> None:
    """Listen until `stop` is set (or forever); `ready(port)` once the socket is bound."""
    engine.start()
    runner = web.AppRunner(make_app(engine, token, max_body), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port
    if ready is not None:
        ready(bound)
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()
        engine.close()
