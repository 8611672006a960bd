"""The LSP server with `backend` pointed at a second process running `dllm-lsp http`, end to end over stdio.

The same tiny model decodes in both set-ups, so the suggestion through the remote backend
(each of the three APIs) must equal the in-process one; streaming reaches the editor as
dllm/inlineCompletionUpdate; a newer keystroke and $/cancelRequest close the HTTP request
(the HTTP server sees its decode end early); a refused connection and a 401 each show once
and never hold typing up.
"""
import asyncio
import os
import socket
import tempfile
import time
from concurrent.futures import Future

import pytest
from lsprotocol import types

from e2e_helpers import capabilities, config, inline_params, make_client, open_doc, wait_for_state
from http_helpers import TOKEN

pytestmark = pytest.mark.asyncio(loop_scope="module")
DOC = "def add(a, b):\n    return \n"
BLOCK_DOC = "def f(x):\n    \n"
KEY_ENV = "DLLM_TEST_BACKEND_KEY"


async def start_lsp(settings):
    cfg = config(tempfile.mkdtemp(prefix="dllm-state-"))
    client = make_client()
    await client.start_io(*cfg.server_command, env={**cfg.server_env, KEY_ENV: TOKEN})
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities(), initialization_options={"dllm": {"snippetTokens": 0, "warmUp": False, **settings}}))
    return client


async def stop_lsp(client):
    await client.shutdown_session()
    await client.stop()


def texts(result):
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    return [i.insert_text for i in items]


async def complete(client, uri, line, character, timeout=60):
    return texts(await asyncio.wait_for(client.text_document_inline_completion_async(
        inline_params(uri, line, character)), timeout))


def backend(server, api, key=True):
    return {"url": server.url, "api": api, "model": "tiny", **({"apiKeyEnv": KEY_ENV} if key else {})}


async def test_remote_suggestion_equals_the_local_one_for_every_api_and_streams(http_server, http_model):
    local = await start_lsp({"model": http_model})
    try:
        assert (await wait_for_state(local, "ready", "error", timeout=120)).state == "ready"
        open_doc(local, "file:///a.py", DOC)
        want = await complete(local, "file:///a.py", 1, 11)
    finally:
        await stop_lsp(local)
    assert want and want[0], want
    for api in ("openai", "inception", "llamacpp"):
        client = await start_lsp({"backend": backend(http_server, api), "model": "/nonexistent/not-loaded"})
        try:
            status = await wait_for_state(client, "ready", "error", timeout=60)
            assert status.state == "ready" and http_server.url in status.message, status
            open_doc(client, "file:///a.py", DOC)
            got = await complete(client, "file:///a.py", 1, 11)
            assert got == want, api
            updates = [p for _, p in client.dllm_updates if p.uri == "file:///a.py"]
            assert updates[-1].done and updates[-1].stable == want[0]
            streamed = [u for u in updates if not u.done]
            assert streamed and any(u.draft for u in streamed), api       # text arrived while decoding
            stables = [u.stable for u in streamed]
            assert all(b.startswith(a) for a, b in zip(stables, stables[1:]))     # stable only grows
            assert not [m for m in client.messages if m.type == types.MessageType.Error]
        finally:
            await stop_lsp(client)


def send_inline(client, msg_id, uri, line, character) -> Future:
    """An inline completion request with an id of ours (so that $/cancelRequest can name it)."""
    fut = Future()
    client.protocol._request_futures[msg_id] = fut
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/inlineCompletion",
                                "params": {"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
                                           "context": {"triggerKind": 2}}})
    return fut


async def wait_until(predicate, timeout=30.0, what=""):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_newer_keystroke_and_cancel_request_close_the_http_request(http_server):
    client = await start_lsp({"backend": backend(http_server, "openai"), "maxNewTokensBlock": 1000,
                              "model": "/nonexistent/not-loaded"})
    try:
        await wait_for_state(client, "ready", timeout=60)
        open_doc(client, "file:///b.py", BLOCK_DOC)
        before = http_server.health()["counters"]
        seen = len(client.dllm_updates)
        first = send_inline(client, "req-1", "file:///b.py", 1, 4)
        await wait_until(lambda: any(not p.done for _, p in client.dllm_updates[seen:]), what="the first stream")
        second = send_inline(client, "req-2", "file:///b.py", 1, 4)          # a newer request: supersedes req-1
        result = await asyncio.wait_for(asyncio.wrap_future(first), 30)      # a raw answer: {items: []}
        assert list(getattr(result, "items", ["not an inline completion list"])) == []
        seen = len(client.dllm_updates)
        await wait_until(lambda: any(not p.done for _, p in client.dllm_updates[seen:]), what="the second stream")
        client.protocol._send_data({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "req-2"}})
        with pytest.raises(Exception):
            await asyncio.wait_for(asyncio.wrap_future(second), 30)         # answered RequestCancelled
        await wait_until(lambda: http_server.health()["counters"]["decodes"] >= before["decodes"] + 2
                         and http_server.health()["queue"]["active"] == 0, what="both decodes to end")
        after = http_server.health()["counters"]
        assert after["cancelled"] - before["cancelled"] == 2, after
        # each was asked for up to 1000 tokens of a model that rarely stops: both were cut short
        assert after["completion_tokens"] - before["completion_tokens"] < 1000, after
    finally:
        await stop_lsp(client)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_refused_and_401_show_once_and_never_hold_typing(http_server):
    dead = {"url": f"http://127.0.0.1:{free_port()}", "api": "llamacpp"}
    client = await start_lsp({"backend": dead, "model": "/nonexistent/not-loaded"})
    try:
        await wait_for_state(client, "ready", timeout=60)
        open_doc(client, "file:///c.py", DOC)
        t0 = time.perf_counter()
        for col in (11, 11, 11):
            assert await complete(client, "file:///c.py", 1, col, timeout=10) == []
        assert time.perf_counter() - t0 < 10
        errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
        assert len(errors) == 1 and dead["url"] in errors[0] and "cannot connect" in errors[0], errors
        assert [s.state for s in client.dllm_status].count("error") == 1
        # the live server without the key: 401, shown once, with the server's words
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"dllm": {
            "backend": backend(http_server, "openai", key=False), "snippetTokens": 0, "warmUp": False,
            "model": "/nonexistent/not-loaded"}}))
        await wait_until(lambda: client.dllm_status[-1].state == "ready", what="the new backend")
        for _ in range(2):
            assert await complete(client, "file:///c.py", 1, 11, timeout=10) == []
        errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
        assert len(errors) == 2 and "401" in errors[1] and "bearer token" in errors[1], errors
        # with the key the same server answers, and the status says so
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"dllm": {
            "backend": backend(http_server, "openai"), "snippetTokens": 0, "warmUp": False,
            "model": "/nonexistent/not-loaded"}}))
        await wait_until(lambda: client.dllm_status[-1].state == "ready", what="the keyed backend")
        assert await complete(client, "file:///c.py", 1, 11) != []
        assert len([m for m in client.messages if m.type == types.MessageType.Error]) == 2
    finally:
        await stop_lsp(client)
