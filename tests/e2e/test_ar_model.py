"""End to end over stdio with AR-FIM models from GGUF files: warm-up, drafting, the real default.

The tiny GGUF model (random weights) checks the protocol: a didOpen / dllm/cursor warms the
context in the background, `dllm/infill` takes `drafting` and answers `newTokens`, and the text
is the same with drafting on and off. The real default model (when pulled, as setup and CI
do) must complete the README's demo hole correctly through a real LSP connection.
"""
import asyncio
import tempfile
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

from dllm_lsp.bench.typing_cases import Key, cursor_after
from e2e_helpers import (capabilities, config, inline_params, insert, open_doc, start_real_model_client, stop_client,
                          wait_for_state)

pytestmark = pytest.mark.asyncio(loop_scope="module")
STATE_DIR = tempfile.mkdtemp(prefix="dllm-state-")
DOC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return "


@pytest_lsp.fixture(config=config(STATE_DIR), scope="module")
async def client(lsp_client: LanguageClient, tiny_gguf_qwen2):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities(), initialization_options={"dllm": {
            "model": str(tiny_gguf_qwen2), "snippetTokens": 0, "maxNewTokensLine": 12, "warmUpDelayMs": 50}}))
    await wait_for_state(lsp_client, "ready", "error", timeout=120)
    yield
    await lsp_client.shutdown_session()


async def metrics(client):
    return await client.protocol.send_request_async("dllm/metrics", {})


async def wait_metric(client, key, at_least, timeout=30.0):
    for _ in range(int(timeout / 0.05)):
        m = await metrics(client)
        if getattr(m, key) >= at_least:
            return m
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} stayed below {at_least}: {m}")


async def test_open_and_cursor_warm_the_context(client: LanguageClient):
    assert client.dllm_status[-1].state == "ready", client.dllm_status[-1]
    before = await metrics(client)
    open_doc(client, "file:///w.py", DOC)
    m = await wait_metric(client, "warmups", before.warmups + 1)
    assert m.warmTokens > before.warmTokens
    client.protocol.notify("dllm/cursor", {"uri": "file:///w.py", "position": {"line": 9, "character": 11},
                                           "token": "t-1"})
    m2 = await wait_metric(client, "warmups", m.warmups + 1)
    assert m2.lastWarm.token == "t-1" and m2.lastWarm.uri == "file:///w.py"
    # the cursor moved to the end of the file, which is where didOpen warmed: nothing new to compute
    assert m2.warmTokens - m.warmTokens <= 2
    result = await client.text_document_inline_completion_async(inline_params("file:///w.py", 9, 11))
    assert isinstance(result, (types.InlineCompletionList, list))
    client.protocol.notify("dllm/cursor", {"uri": "file:///nope.py", "position": {}})   # ignored, no crash
    assert (await metrics(client)).state == "ready"


async def test_infill_drafting_option_gives_the_same_text(client: LanguageClient):
    params = {"prefix": DOC, "suffix": "\n\n\ndef div(a, b):\n    return a / b\n", "options": {"maxNewTokens": 16}}
    off = await client.protocol.send_request_async("dllm/infill", {**params, "options": {"maxNewTokens": 16, "drafting": False}})
    on = await client.protocol.send_request_async("dllm/infill", {**params, "options": {"maxNewTokens": 16, "drafting": True}})
    assert on.text == off.text and on.newTokens == off.newTokens
    assert off.forwards == off.newTokens + (off.finishReason == "eos")
    assert on.forwards <= off.forwards


async def test_an_accepted_suggestion_is_followed_by_one_prepared_in_the_background(client: LanguageClient):
    """Tab, Tab, Tab: once a suggestion is answered, the one after accepting it is decoded in the
    background; inserting the suggestion and asking again answers from it, with no engine run."""
    uri = "file:///tab.py"
    open_doc(client, uri, "x = 1\ny = ")                 # where the tiny model suggests something
    before = await metrics(client)
    result = await client.text_document_inline_completion_async(inline_params(uri, 1, 4))
    items = result.items if isinstance(result, types.InlineCompletionList) else result
    assert items and items[0].insert_text, "the tiny model suggested nothing here"
    suggestion = items[0].insert_text
    await wait_metric(client, "prepared", before.prepared + 1)
    runs = (await metrics(client)).engineRuns
    insert(client, uri, 2, 1, 4, suggestion)
    line, character = cursor_after(Key(suggestion, 1, 4))
    after = await client.text_document_inline_completion_async(inline_params(uri, line, character))
    m = await metrics(client)
    assert m.last.reason == "cached" and m.engineRuns == runs, m.last
    assert isinstance(after, (types.InlineCompletionList, list))


@pytest.mark.slow
async def test_the_real_default_model_completes_the_readme_demo(real_model_file):
    """The README's main job through a real LSP connection, on the pulled default model."""
    client = await start_real_model_client()
    try:
        demo = Path(__file__).resolve().parents[2] / "examples" / "demo.py"
        open_doc(client, "file:///demo.py", demo.read_text())
        result = await asyncio.wait_for(client.text_document_inline_completion_async(
            inline_params("file:///demo.py", 13, 27)), timeout=180)
        texts = [i.insert_text for i in (result.items if isinstance(result, types.InlineCompletionList) else result)]
        assert texts and "counts.get(word, 0) + 1" in texts[0], texts
    finally:
        await stop_client(client)


async def test_asked_again_at_the_same_place_an_invoked_request_carries_alternatives(client: LanguageClient):
    """Cycling: an automatic (or a first explicit) request answers one item, fast; an explicit
    request at the state last answered adds the alternatives."""
    def invoked_at(uri, line, character):
        return client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    first = "file:///first.py"
    open_doc(client, first, "x = 1\ny = ")
    assert len((await invoked_at(first, 1, 4)).items) == 1       # a first explicit request: no alternatives
    uri = "file:///alts.py"
    open_doc(client, uri, "x = 1\ny = ")                 # where the tiny model suggests something
    auto = await client.text_document_inline_completion_async(inline_params(uri, 1, 4))
    assert len(auto.items) == 1
    invoked = await invoked_at(uri, 1, 4)
    texts = [i.insert_text for i in invoked.items]
    assert texts[0] == auto.items[0].insert_text               # the first item is the greedy suggestion
    assert 2 <= len(texts) <= 3 and len(set(texts)) == len(texts) and all(texts)
    assert (await metrics(client)).last.alternatives == len(texts) - 1
