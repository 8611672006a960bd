"""RemoteBackend against small in-process HTTP servers: failure kinds, back-off, non-streamed answers,
and a newer request closing the older one's connection."""
import asyncio
import json
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dllm_lsp.core.plan import plan_completion
from dllm_lsp.http.client import BackendError, RemoteBackend
from dllm_lsp.settings import Settings
from dllm_lsp.runtime.worker import Superseded

TEXT = "def add(a, b):\n    return \n"
PLAN = plan_completion(TEXT, TEXT.index("return ") + 7, "python", Settings(), None)


async def serve(handler, path="/v1/completions"):
    app = web.Application()
    app.router.add_post(path, handler)
    server = TestServer(app)
    await server.start_server()
    return server


def sse(text, **extra):
    return b"data: " + json.dumps({"choices": [{"text": text, "finish_reason": None}], **extra}).encode() + b"\n\n"


async def test_streamed_text_feeds_updates_and_is_finished_like_local_text():
    seen = {}

    async def handler(request):
        seen["body"], seen["auth"] = await request.json(), request.headers.get("Authorization")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("a + ", "b", "  # sum\nnext line"):
            await resp.write(sse(piece, dllm={"draft": "a + b  # sum"}))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    server = await serve(handler)
    import os
    os.environ["DLLM_TEST_KEY_RB"] = "k1"
    backend = RemoteBackend({"url": str(server.make_url("")), "api": "openai", "model": "m", "apiKeyEnv": "DLLM_TEST_KEY_RB"})
    updates = []
    try:
        decoded = await backend.decode("doc", PLAN, lambda s, d, n: updates.append((s, d)))
    finally:
        await backend.close()
        await server.close()
    assert decoded.text == "a + b  # sum" and decoded.finish_reason == "settled"      # the line ended: hung up
    assert seen["auth"] == "Bearer k1" and seen["body"]["stop"] == ["\n"] and seen["body"]["stream"] is True
    assert seen["body"]["max_tokens"] == Settings().max_new_tokens_line and seen["body"]["model"] == "m"
    assert [d for _, d in updates][0] == "a + b  # sum"                               # the draft extension
    stables = [s for s, _ in updates]
    assert all(b.startswith(a) for a, b in zip(stables, stables[1:]))


async def test_a_plain_json_answer_is_accepted_too():
    async def handler(request):
        return web.json_response({"content": "a + b\n", "stop": True})

    server = await serve(handler, "/infill")
    backend = RemoteBackend({"url": str(server.make_url("")), "api": "llamacpp"})
    try:
        decoded = await backend.decode("doc", PLAN)
    finally:
        await backend.close()
        await server.close()
    assert decoded.text == "a + b"


@pytest.mark.parametrize("status,kind", [(401, "auth"), (500, "server"), (503, "busy"), (404, "http")])
async def test_http_errors_carry_their_kind_and_the_servers_words(status, kind):
    async def handler(request):
        return web.json_response({"error": {"message": f"nope {status}"}}, status=status)

    server = await serve(handler)
    backend = RemoteBackend({"url": str(server.make_url("")), "api": "openai"})
    try:
        with pytest.raises(BackendError) as err:
            await backend.decode("doc", PLAN)
    finally:
        await backend.close()
        await server.close()
    assert err.value.kind == kind and f"nope {status}" in str(err.value)


async def test_a_timeout_then_fails_fast_during_the_back_off():
    calls = []

    async def handler(request):
        calls.append(time.monotonic())
        await asyncio.sleep(5)
        return web.json_response({})

    server = await serve(handler)
    backend = RemoteBackend({"url": str(server.make_url("")), "api": "openai", "timeoutMs": 300})
    try:
        t0 = time.perf_counter()
        with pytest.raises(BackendError) as err:
            await backend.decode("doc", PLAN)
        assert err.value.kind == "timeout" and time.perf_counter() - t0 < 3
        t0 = time.perf_counter()
        with pytest.raises(BackendError) as again:
            await backend.decode("doc", PLAN)
        assert again.value.kind == "timeout" and time.perf_counter() - t0 < 0.1 and len(calls) == 1
    finally:
        await backend.close()
        await server.close()


async def test_refused_is_its_own_kind():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    backend = RemoteBackend({"url": f"http://127.0.0.1:{port}", "api": "inception"})
    try:
        with pytest.raises(BackendError) as err:
            await backend.decode("doc", PLAN)
    finally:
        await backend.close()
    assert err.value.kind == "refused"


async def test_a_newer_request_for_the_document_closes_the_older_ones_connection():
    closed = asyncio.Event()

    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for _ in range(200):
                await resp.write(sse("x"))
                await asyncio.sleep(0.02)
        except (ConnectionError, asyncio.CancelledError):
            closed.set()
            raise
        return resp

    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    server = TestServer(app)                    # aiohttp's test server cancels handlers on disconnect
    await server.start_server()
    backend = RemoteBackend({"url": str(server.make_url("")), "api": "openai"})
    try:
        first = asyncio.ensure_future(backend.decode("doc", PLAN))
        await asyncio.sleep(0.2)
        second = asyncio.ensure_future(backend.decode("doc", PLAN))
        with pytest.raises(Superseded):
            await first
        await asyncio.wait_for(closed.wait(), 5)         # the server saw the first request go away
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
    finally:
        await backend.close()
        await server.close()
