"""End-to-end helpers: `python -m dllm_lsp.cli --stdio` driven by pytest-lsp with a tiny random model."""
import asyncio
import os
import sys
import time

import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

SERVER = [sys.executable, "-m", "dllm_lsp.cli", "--stdio"]


def make_client() -> LanguageClient:
    """pytest-lsp's client, also recording our custom notifications."""
    client = pytest_lsp.client.make_test_lsp_client()
    client.dllm_updates, client.dllm_status = [], []

    @client.feature("dllm/inlineCompletionUpdate")
    def on_update(params):
        client.dllm_updates.append((time.perf_counter(), params))

    @client.feature("dllm/status")
    def on_status(params):
        client.dllm_status.append(params)

    return client


def config(state_dir) -> ClientServerConfig:
    env = {**os.environ, "DLLM_LSP_STATE_DIR": str(state_dir), "OMP_NUM_THREADS": "1"}
    return ClientServerConfig(server_command=SERVER, client_factory=make_client, server_env=env)


def capabilities(encodings=None, configuration=False) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        workspace=types.WorkspaceClientCapabilities(configuration=True) if configuration else None,
        general=types.GeneralClientCapabilities(position_encodings=encodings) if encodings else None,
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities()))


async def wait_for_state(client, *states, timeout=60.0):
    """Wait until the last dllm/status has one of `states`; return it."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if client.dllm_status and client.dllm_status[-1].state in states:
            return client.dllm_status[-1]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no dllm/status in {states} after {timeout}s: {client.dllm_status}")


def open_doc(client, uri, text, language="python", version=1):
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))


def inline_params(uri, line, character):
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))


def insert(client, uri, version, line, character, text):
    pos = types.Position(line=line, character=character)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=text)]))


async def request_raw(client, method, params, timeout=5.0):
    """Send a request exactly as given (no client-side typing), so malformed params reach the server."""
    from concurrent.futures import Future
    msg_id = f"raw-{time.perf_counter_ns()}"
    fut = Future()
    client.protocol._request_futures[msg_id] = fut
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)


def notify_raw(client, method, params):
    client.protocol._send_data({"jsonrpc": "2.0", "method": method, "params": params})


async def start_real_model_client(extra_env=None):
    """A client of a server on the pulled default model (where `dllm-lsp pull` put it), initialized
    with default settings and ready; the caller shuts it down (stop_client)."""
    import tempfile
    cfg = config(tempfile.mkdtemp(prefix="dllm-state-"))
    client = make_client()
    env = {**cfg.server_env, "DLLM_LSP_CACHE": os.environ["DLLM_TEST_USER_CACHE"], **(extra_env or {})}
    await client.start_io(*cfg.server_command, env=env)
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities(), initialization_options={"dllm": {"model": "default"}}))
    status = await wait_for_state(client, "ready", "error", timeout=180)
    assert status.state == "ready", status
    return client


async def stop_client(client) -> None:
    await client.shutdown_session()
    await client.stop()
