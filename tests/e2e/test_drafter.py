"""End to end: the `drafter` setting. A trained drafter changes no text; a bad one is one
warning and the model serves without it."""
import tempfile

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient

from e2e_helpers import capabilities, config, make_client, wait_for_state

pytestmark = pytest.mark.asyncio
DOC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return "


async def start(tiny_gguf_qwen2, drafter):
    client = make_client()
    cfg = config(tempfile.mkdtemp(prefix="dllm-state-"))
    await client.start_io(*cfg.server_command, env=cfg.server_env)
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities(), initialization_options={"dllm": {
            "model": str(tiny_gguf_qwen2), "snippetTokens": 0, "drafter": drafter, "warmUp": False}}))
    await wait_for_state(client, "ready", "error", timeout=120)
    return client


async def infill(client, drafting):
    return await client.protocol.send_request_async("dllm/infill", {
        "prefix": DOC, "suffix": "\n", "options": {"maxNewTokens": 12, "drafting": drafting}})


@pytest.mark.parametrize("kind", ["mask", "head"])
async def test_a_trained_drafter_changes_no_text(tiny_gguf_qwen2, tmp_path, kind):
    import torch
    from engine import Engine
    from engine.drafting.head import DraftHead
    from engine.drafting.mask_slots import MaskAdapter
    cfg = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32").cfg
    drafter = MaskAdapter(cfg, rank=2, mask_slots=3) if kind == "mask" else DraftHead(cfg, list(range(60)), inner=16)
    with torch.no_grad():
        for p in drafter.parameters():
            p.normal_()
    if kind == "head":
        drafter.first_min_prob = drafter.min_prob = 0.0          # draft every guess, right or wrong
    path = tmp_path / "drafter.safetensors"
    drafter.save(path)
    client = await start(tiny_gguf_qwen2, str(path))
    try:
        assert client.dllm_status[-1].state == "ready"
        assert not [m for m in client.messages if m.type == types.MessageType.Warning]
        off, on = await infill(client, False), await infill(client, True)
        assert on.text == off.text and on.newTokens == off.newTokens and on.forwards <= off.forwards
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_a_bad_drafter_is_one_warning_and_the_model_serves(tiny_gguf_qwen2, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    client = await start(tiny_gguf_qwen2, str(junk))
    try:
        assert client.dllm_status[-1].state == "ready"
        warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
        assert len(warnings) == 1 and "drafter" in warnings[0] and str(junk) in warnings[0], warnings
        res = await infill(client, True)
        assert res.forwards >= 1
    finally:
        await client.shutdown_session()
        await client.stop()
