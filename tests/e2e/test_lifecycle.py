"""End to end: settings messages, a failing model, reloads, answers before the model is ready, utf-8."""
import asyncio
import tempfile
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

from e2e_helpers import capabilities, config, inline_params, open_doc, wait_for_state

STATE_DIR = tempfile.mkdtemp(prefix="dllm-state-")


@pytest_lsp.fixture(config=config(STATE_DIR))
async def client(lsp_client: LanguageClient):
    yield
    await lsp_client.shutdown_session()


def settings_change(client, **settings):
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"dllm": settings}))


def messages(client, kind):
    return [m.message for m in client.messages if m.type == kind]


async def eventually(check, timeout=10.0, what=""):
    """Poll `check()` until it is truthy or `timeout` passes (notifications arrive in their own time);
    return its last value, and fail with `what` and that value if it never held."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert value, f"not within {timeout}s: {what}"
    return value


async def test_bad_settings_a_failing_model_and_a_reload(client: LanguageClient, tiny_model, tmp_path):
    missing = str(tmp_path / "no-such-model")
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities(), initialization_options={"model": missing, "threshold": 7, "policy": "fast"}))
    status = await wait_for_state(client, "error")
    assert "no-such-model" in status.message
    # window/showMessage and dllm/status are separate notifications: wait for each, do not assume an order
    warnings = await eventually(lambda: messages(client, types.MessageType.Warning), what="the bad settings' warning")
    assert len(warnings) == 1 and "dllm.threshold" in warnings[0] and "dllm.policy" in warnings[0]  # one line names both
    errors = await eventually(lambda: messages(client, types.MessageType.Error), what="the load error message")
    assert len(errors) == 1 and "no-such-model" in errors[0]              # the cause, once

    uri = "file:///ws/a.py"
    open_doc(client, uri, "x = 1\ny = \n")
    t0 = time.monotonic()
    result = await client.text_document_inline_completion_async(inline_params(uri, 1, 4))
    assert list(result.items) == [] and time.monotonic() - t0 < 1.0     # empty, quickly; the server is up

    settings_change(client, model=missing, threshold=0.5)                 # same failure again: no new message
    await wait_for_state(client, "error")
    await client.protocol.send_request_async("dllm/metrics", {})         # a round trip: what was sent has arrived
    assert len(messages(client, types.MessageType.Error)) == 1

    settings_change(client, model=tiny_model)                             # a changed model setting reloads
    t0 = time.monotonic()
    early = await client.text_document_inline_completion_async(inline_params(uri, 1, 4))
    assert list(early.items) == [] and time.monotonic() - t0 < 1.0       # before ready: empty at once
    await wait_for_state(client, "ready")
    late = await client.text_document_inline_completion_async(inline_params(uri, 1, 4))
    assert isinstance(late, types.InlineCompletionList)
    metrics = await client.protocol.send_request_async("dllm/metrics", {})
    assert metrics.notReady >= 2 and metrics.model == tiny_model

    def ended_loads():
        return [t for t, r in client.progress_reports.items()
                if str(t).startswith("dllm-load") and r and type(r[-1]).__name__ == "WorkDoneProgressEnd"]
    await eventually(lambda: len(ended_loads()) >= 2, what=f"$/progress begin and end for each load: {client.progress_reports}")


async def test_utf8_and_settings_pulled_with_workspace_configuration(client: LanguageClient, tiny_model):
    result = await client.initialize_session(types.InitializeParams(
        capabilities=capabilities([types.PositionEncodingKind.Utf8, types.PositionEncodingKind.Utf16], configuration=True),
        initialization_options={"model": tiny_model, "snippetTokens": 0}))
    assert result.capabilities.position_encoding == types.PositionEncodingKind.Utf8
    await wait_for_state(client, "ready")
    uri = "file:///ws/u.py"
    open_doc(client, uri, 's = "🎉é" + \n')
    end_utf8 = len('s = "🎉é" + '.encode("utf-8"))                       # 16 bytes, 11 code points
    ok = await client.text_document_inline_completion_async(inline_params(uri, 0, end_utf8))
    assert isinstance(ok, types.InlineCompletionList)
    from pygls.exceptions import JsonRpcException
    with pytest.raises(JsonRpcException):
        await client.text_document_inline_completion_async(inline_params(uri, 0, end_utf8 + 1))
    metrics = await client.protocol.send_request_async("dllm/metrics", {})
    assert metrics.positionEncoding == "utf-8"

    # settings changed with no payload: the server pulls the "dllm" section (workspace/configuration)
    client.set_configuration({"model": tiny_model, "maxNewTokensLine": 3}, section="dllm")
    applied = (await client.protocol.send_request_async("dllm/metrics", {})).configurations
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    while (await client.protocol.send_request_async("dllm/metrics", {})).configurations == applied:
        await asyncio.sleep(0.02)                                         # until the pulled section is applied
    await client.text_document_inline_completion_async(inline_params(uri, 0, end_utf8))
    metrics = await client.protocol.send_request_async("dllm/metrics", {})
    assert metrics.last.reason == "ok" and 1 <= metrics.last.forwards <= 3
