"""Typing as a person types, then a pause: a suggestion must come (issue 26).

Each keystroke is a didChange followed by an automatic textDocument/inlineCompletion, and the
previous request is cancelled ($/cancelRequest), as VS Code does; keys are 100 ms apart, then
the typist pauses and waits for the last request's answer. With the default settings the
background warm-up fires 300 ms after the last key, while the last request still decodes on
the real model: it must not cost that request its answer (it used to cancel it, and the pause
showed nothing). Both ways a client syncs documents: ranges (incremental) and whole documents.
"""
import asyncio
import textwrap
from pathlib import Path

import pytest
from lsprotocol import types

from e2e_helpers import inline_params, open_doc, start_real_model_client, stop_client

# a real module's size around the cursor (the prompt then fills the server's windows, and the
# answer takes longer than the warm-up's delay): the standard library's textwrap before the
# function typed into, the same after it
_MODULE = Path(textwrap.__file__).read_text(encoding="utf-8")
_BEFORE = "\n".join(_MODULE.split("\n")[:150]) + "\n\n\n"
DOC = (_BEFORE +
       "def count_chars(words):\n"
       "    total = 0\n"
       "    for word in words:\n"
       "        \n"
       "    return total\n\n\n" + "\n".join(_MODULE.split("\n")[150:300]))
LINE, COLUMN = _BEFORE.count("\n") + 3, 8     # the blank line in the loop body, after its indentation
TYPED = "total += len("


def change(client, uri: str, version: int, text: str, at: int, key: str, whole: bool) -> None:
    if whole:
        content = [types.TextDocumentContentChangeWholeDocument(text=text)]
    else:
        pos = types.Position(line=LINE, character=at)
        content = [types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=key)]
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version), content_changes=content))


async def type_then_pause(client, uri: str, whole: bool, gap_s: float = 0.1):
    """Type TYPED one key at a time, each key with its own request (cancelling the one before);
    return the items answered to the last request, which the pause waits for."""
    lines = DOC.split("\n")
    previous = None
    futures = []
    for i, key in enumerate(TYPED):
        column = COLUMN + i
        lines[LINE] = lines[LINE][:column] + key + lines[LINE][column:]
        change(client, uri, i + 2, "\n".join(lines), column, key, whole)
        if previous is not None:
            client.protocol.notify("$/cancelRequest", types.CancelParams(id=previous))
        previous = f"typing-{whole}-{i}"
        futures.append(client.protocol.send_request("textDocument/inlineCompletion",
                                                    inline_params(uri, LINE, column + 1), msg_id=previous))
        await asyncio.sleep(gap_s)        # the typist's rhythm, not a wait for the server
    result = await asyncio.wait_for(asyncio.wrap_future(futures[-1]), timeout=120)
    for f in futures[:-1]:                # the cancelled ones are answered too (an error or empty)
        try:
            await asyncio.wait_for(asyncio.wrap_future(f), timeout=120)
        except Exception:
            pass
    items = result.items if hasattr(result, "items") else (result or [])
    return [i.insert_text if isinstance(i.insert_text, str) else i.insert_text.value for i in items]


@pytest.mark.slow
@pytest.mark.parametrize("whole", [False, True], ids=["incremental", "whole-document"])
async def test_a_pause_after_typing_shows_a_suggestion_with_default_settings(real_model_file, whole):
    client = await start_real_model_client({"OMP_NUM_THREADS": "2"})
    try:
        uri = f"file:///typing_{'whole' if whole else 'incremental'}.py"
        open_doc(client, uri, DOC)
        texts = await type_then_pause(client, uri, whole)
        assert texts and texts[0].strip(), f"no suggestion at the pause: {texts}"
        assert "word" in texts[0], texts          # the loop variable: the model reads the right cursor
        m = await client.protocol.send_request_async("dllm/metrics", {})
        assert m.last.reason == "ok", m.last
    finally:
        await stop_client(client)
