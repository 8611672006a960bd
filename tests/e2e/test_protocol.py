"""End to end over stdio: capabilities, completions, streaming, cancellation, the cache, errors.

One server (a tiny random model) serves the whole module; tests that change settings put
them back. The model writes garbage text, which is fine: these tests check the protocol.
"""
import asyncio
import json
import tempfile
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from e2e_helpers import capabilities, config, inline_params, insert, notify_raw, open_doc, request_raw, wait_for_state

pytestmark = pytest.mark.asyncio(loop_scope="module")
STATE_DIR = tempfile.mkdtemp(prefix="dllm-state-")
SETTINGS = {"snippetTokens": 0, "maxNewTokensLine": 16, "maxNewTokensBlock": 32, "threshold": 0.9}


@pytest_lsp.fixture(config=config(STATE_DIR), scope="module")
async def client(lsp_client: LanguageClient, tiny_model):
    lsp_client.init_result = await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities(), initialization_options={"dllm": {"model": tiny_model, **SETTINGS}}))
    await wait_for_state(lsp_client, "ready", "error")
    yield
    await lsp_client.shutdown_session()


def items_of(result):
    return list(result.items) if isinstance(result, types.InlineCompletionList) else list(result or [])


async def metrics(client):
    return await client.protocol.send_request_async("dllm/metrics", {})


def configure(client, tiny_model, **changes):
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"dllm": {"model": tiny_model, **SETTINGS, **changes}}))


async def test_capabilities_are_advertised(client: LanguageClient):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.position_encoding == types.PositionEncodingKind.Utf16
    assert client.dllm_status[-1].state == "ready"


async def test_model_loading_was_reported_with_progress(client: LanguageClient):
    reports = [r for token, r in client.progress_reports.items() if str(token).startswith("dllm-load")]
    assert reports, client.progress_reports
    kinds = [type(v).__name__ for v in reports[0]]
    assert kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd"
    assert "ready" in reports[0][-1].message
    assert [s.state for s in client.dllm_status][:2] == ["loading", "ready"]


async def test_a_completion_arrives_and_streams(client: LanguageClient):
    uri = "file:///ws/stream.py"
    open_doc(client, uri, "def add(a, b):\n    return \n")
    client.dllm_updates.clear()
    result = await client.text_document_inline_completion_async(inline_params(uri, 1, 11))
    items = items_of(result)
    assert len(items) == 1 and items[0].insert_text.strip()
    assert items[0].range.start == types.Position(line=1, character=11) == items[0].range.end
    updates = [p for _, p in client.dllm_updates if p.uri == uri]
    assert len(updates) >= 2 and updates[-1].done and not any(u.done for u in updates[:-1])
    stables = [u.stable for u in updates[:-1]]
    assert all(b.startswith(a) for a, b in zip(stables, stables[1:])), stables      # stable only grows
    assert any(u.draft for u in updates[:-1])
    assert updates[-1].stable == items[0].insert_text                                 # final text in the response too
    assert updates[-1].position.line == 1 and updates[-1].position.character == 11 and updates[-1].version == 1


async def test_typing_along_is_answered_from_the_cache(client: LanguageClient):
    uri = "file:///ws/typealong.py"
    open_doc(client, uri, "def add(a, b):\n    return \n")
    first = items_of(await client.text_document_inline_completion_async(inline_params(uri, 1, 11)))[0].insert_text
    assert len(first) >= 3
    before = await metrics(client)
    insert(client, uri, 2, 1, 11, first[:2])
    again = items_of(await client.text_document_inline_completion_async(inline_params(uri, 1, 13)))
    after = await metrics(client)
    assert again[0].insert_text == first[2:]
    assert after.cacheHits == before.cacheHits + 1 and after.forwards == before.forwards   # no forward pass


async def test_emoji_positions_use_utf16_units(client: LanguageClient):
    uri = "file:///ws/emoji.py"
    open_doc(client, uri, 'label = "🎉" + \n')                   # 🎉 is two utf-16 units
    end = len('label = "') + 2 + len('" + ')                       # 14 in utf-16 (13 code points)
    first = items_of(await client.text_document_inline_completion_async(inline_params(uri, 0, end)))
    assert first and len(first[0].insert_text) >= 3
    text = first[0].insert_text
    with pytest.raises(JsonRpcException):                         # one unit further is past the end
        await client.text_document_inline_completion_async(inline_params(uri, 0, end + 1))
    before = await metrics(client)
    insert(client, uri, 2, 0, end, text[:2])                      # an edit after the emoji, in utf-16 units
    again = items_of(await client.text_document_inline_completion_async(inline_params(uri, 0, end + 2)))
    after = await metrics(client)
    assert again[0].insert_text == text[2:] and after.cacheHits == before.cacheHits + 1


async def decoding_started(client, uri: str, since: int = 0, timeout: float = 20.0) -> None:
    """Wait for a dllm/inlineCompletionUpdate of `uri` after the first `since` updates (a decode has begun)."""
    t0 = time.monotonic()
    while not any(p.uri == uri for _, p in client.dllm_updates[since:]):
        assert time.monotonic() - t0 < timeout, f"no update for {uri} within {timeout}s"
        await asyncio.sleep(0.01)


async def test_cancel_mid_decode_is_answered_promptly(client: LanguageClient, tiny_model):
    configure(client, tiny_model, maxNewTokensBlock=1000, threshold=1.0)
    try:
        uri = "file:///ws/cancel.py"
        open_doc(client, uri, "for i in range(10):\n    \n")
        client.dllm_updates.clear()
        before = await metrics(client)
        task = asyncio.ensure_future(client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1, 4), msg_id="cancel-me"))
        await decoding_started(client, uri)
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
        t_cancel = time.monotonic()
        with pytest.raises(JsonRpcException) as err:
            await asyncio.wait_for(task, 5)
        assert time.monotonic() - t_cancel < 1.0
        assert err.value.code == -32800                                        # RequestCancelled
        after = await metrics(client)
        while after.cancelled == before.cancelled and time.monotonic() - t_cancel < 10:
            await asyncio.sleep(0.02)                                          # the worker's count of the cancel
            after = await metrics(client)
        assert after.cancelled == before.cancelled + 1
        assert after.forwards - before.forwards < 500                          # the engine stopped early
        # and the server keeps serving
        configure(client, tiny_model)
        result = await client.text_document_inline_completion_async(inline_params(uri, 1, 4))
        assert result is not None
    finally:
        configure(client, tiny_model)


async def test_a_newer_request_for_the_same_document_wins(client: LanguageClient, tiny_model):
    configure(client, tiny_model, maxNewTokensBlock=600, threshold=1.0)
    try:
        uri = "file:///ws/newest.py"
        open_doc(client, uri, "for i in range(10):\n    \n")
        seen = len(client.dllm_updates)
        older = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(uri, 1, 4)))
        await decoding_started(client, uri, since=seen)                        # the older one is decoding
        configure(client, tiny_model, maxNewTokensBlock=8)
        t0 = time.monotonic()
        newer = await client.text_document_inline_completion_async(inline_params(uri, 1, 4))
        old_result = await asyncio.wait_for(older, 5)
        assert time.monotonic() - t0 < 5
        assert items_of(old_result) == []                                      # superseded: empty answer
        assert isinstance(newer, types.InlineCompletionList)
    finally:
        configure(client, tiny_model)


async def test_completion_fallback_gives_one_item_with_a_text_edit(client: LanguageClient):
    uri = "file:///ws/fallback.py"
    open_doc(client, uri, "def add(a, b):\n    return \n")
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=1, character=11)))
    assert len(result.items) == 1
    edit = result.items[0].text_edit
    assert edit.range.start == edit.range.end == types.Position(line=1, character=11) and edit.new_text.strip()


async def test_infill_request_takes_prefix_and_suffix(client: LanguageClient):
    res = await client.protocol.send_request_async(
        "dllm/infill", {"prefix": "def f(x):\n    return ", "suffix": "\n", "options": {"maxNewTokens": 6}})
    assert isinstance(res.text, str) and 1 <= res.forwards <= 6 and res.finishReason in ("eos", "length")
    one_line = await client.protocol.send_request_async(
        "dllm/infill", {"prefix": "def f(x):\n    return ", "suffix": "\n",
                        "options": {"maxNewTokens": 6, "endsAtNewline": True}})
    assert one_line.text == res.text                  # only the drafts change, never the text
    with pytest.raises(JsonRpcException) as err:
        await client.protocol.send_request_async("dllm/infill", {"prefix": "x", "options": {"endsAtNewline": "yes"}})
    assert err.value.code == -32602 and "endsAtNewline" in err.value.message
    with pytest.raises(JsonRpcException) as err:
        await client.protocol.send_request_async("dllm/infill", {"suffix": "x"})
    assert err.value.code == -32602
    with pytest.raises(JsonRpcException) as err:
        await client.protocol.send_request_async("dllm/infill", {"prefix": "x", "options": {"maxNewTokens": "many"}})
    assert err.value.code == -32602 and "maxNewTokens" in err.value.message


async def test_errors_are_answered_and_the_server_keeps_serving(client: LanguageClient):
    uri = "file:///ws/errors.py"
    open_doc(client, uri, "x = 1\ny = \n")
    cases = [
        (types.TEXT_DOCUMENT_INLINE_COMPLETION, {"textDocument": {"uri": uri}}, -32602),          # no position
        (types.TEXT_DOCUMENT_INLINE_COMPLETION, {"textDocument": {"uri": uri}, "position": {"line": "a", "character": 0},
                                                 "context": {"triggerKind": 1}}, -32602),
        ("dllm/noSuchMethod", {}, -32601),
        (types.TEXT_DOCUMENT_INLINE_COMPLETION, {"textDocument": {"uri": uri}, "position": {"line": 9, "character": 0},
                                                 "context": {"triggerKind": 1}}, -32602),        # past the end
        (types.TEXT_DOCUMENT_INLINE_COMPLETION, {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 99},
                                                 "context": {"triggerKind": 1}}, -32602),
        (types.TEXT_DOCUMENT_INLINE_COMPLETION, {"textDocument": {"uri": "file:///nope.py"},
                                                 "position": {"line": 0, "character": 0}, "context": {"triggerKind": 1}}, -32602),
    ]
    for method, params, code in cases:
        with pytest.raises(JsonRpcException) as err:
            await request_raw(client, method, params)
        assert err.value.code == code, (method, params, err.value)
    notify_raw(client, "dllm/noSuchNotification", {"x": 1})                  # ignored, no crash
    notify_raw(client, types.TEXT_DOCUMENT_DID_CHANGE, {"bogus": True})      # malformed notification: logged
    notify_raw(client, "dllm/didAcceptCompletion", [1, 2])                   # wrong shape: ignored
    result = await client.text_document_inline_completion_async(inline_params(uri, 1, 4))
    assert isinstance(result, types.InlineCompletionList)


async def test_shown_and_accepted_are_counted_locally(client: LanguageClient):
    client.protocol.notify("dllm/didShowCompletion", {"uri": "file:///ws/a.py", "position": {"line": 0, "character": 0},
                                                      "text": "abc"})
    client.protocol.notify("dllm/didAcceptCompletion", {"uri": "file:///ws/a.py",
                                                        "position": {"line": 0, "character": 0}, "acceptedLength": 3})
    await metrics(client)                           # a round trip: both notifications were handled
    from pathlib import Path
    data = json.loads((Path(STATE_DIR) / "stats.json").read_text())
    assert data["shown"] >= 1 and data["accepted"] >= 1 and data["acceptedChars"] >= 3


async def test_settings_take_effect(client: LanguageClient, tiny_model):
    uri = "file:///ws/settings.py"
    open_doc(client, uri, "def add(a, b):\n    return \n")
    try:
        configure(client, tiny_model, streaming=False)                      # no notifications
        client.dllm_updates.clear()
        result = await client.text_document_inline_completion_async(inline_params(uri, 1, 11))
        assert list(result.items) and not [p for _, p in client.dllm_updates if p.uri == uri]

        configure(client, tiny_model, enabledLanguages={"python": False})   # per-language switch
        before = await metrics(client)
        result = await client.text_document_inline_completion_async(inline_params(uri, 1, 11))
        after = await metrics(client)
        assert list(result.items) == [] and after.engineRuns == before.engineRuns

        configure(client, tiny_model, debounceMs=300)                       # a newer request inside the window wins
        open_doc(client, "file:///ws/debounce.py", "x = 1\ny = \n")
        before = await metrics(client)
        first = asyncio.ensure_future(client.text_document_inline_completion_async(
            inline_params("file:///ws/debounce.py", 1, 4)))
        await asyncio.sleep(0.05)
        second = await client.text_document_inline_completion_async(inline_params("file:///ws/debounce.py", 1, 4))
        first = await first
        after = await metrics(client)
        assert list(first.items) == [] and after.engineRuns == before.engineRuns + 1
        assert after.superseded == before.superseded + 1 and isinstance(second, types.InlineCompletionList)
    finally:
        configure(client, tiny_model)


async def test_status_carries_the_last_latency(client: LanguageClient):
    uri = "file:///ws/status.py"
    open_doc(client, uri, "def add(a, b):\n    return \n")
    await asyncio.sleep(2.1)                                     # status updates are rate-limited to one per 2 s
    n = len(client.dllm_status)
    await client.text_document_inline_completion_async(inline_params(uri, 1, 11))
    await metrics(client)
    assert len(client.dllm_status) == n + 1
    last = client.dllm_status[-1]
    assert last.state == "ready" and last.lastLatencyMs is not None and last.lastLatencyMs > 0
