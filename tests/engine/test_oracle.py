"""The engine's logits against transformers' Llama / Qwen2 run with a full (non-causal) mask.

The tiny checkpoints are written in each family's exact layout (LLaDA: sharded, LLaDA names;
Dream: Qwen2 names with q/k/v biases; both stored in bf16) and read back by the engine in
float32; the oracle gets the same (bf16-rounded) weights under its own names.
"""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from engine import Engine  # noqa: E402
from engine.testing.checkpoints import write_dream_model, write_llada_model  # noqa: E402


def _hf_state(engine):
    state = {}
    for name, tensor in engine.model.state_dict().items():
        state[name if name.startswith("lm_head") else f"model.{name}"] = tensor.float()
    return state


def _oracle_logits(hf_model, ids):
    t = ids.shape[1]
    full = torch.zeros(1, 1, t, t)                      # additive mask: everyone sees everyone
    with torch.no_grad():
        return hf_model(ids, attention_mask=full).logits


def _shapes(cfg) -> dict:
    """Our config's sizes under transformers' names (the same for Llama and Qwen2 configs)."""
    return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                num_key_value_heads=cfg.num_kv_heads, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps,
                max_position_embeddings=cfg.max_position)


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_llada_sharded_matches_llama(tmp_path):
    folder = write_llada_model(tmp_path / "llada", heads=4, kv_heads=4)
    assert len(list(folder.glob("model-*.safetensors"))) > 1, "the LLaDA checkpoint should be sharded"
    eng = Engine.load(folder, device="cpu", dtype="float32")
    cfg = eng.cfg
    hf_cfg = transformers.LlamaConfig(**_shapes(cfg), attention_bias=False, tie_word_embeddings=False)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    hf.load_state_dict(_hf_state(eng), strict=True)
    ids = torch.randint(0, cfg.vocab_size, (1, 23), generator=torch.Generator().manual_seed(1))
    ours = eng.model.logits(ids)
    assert _rel_err(ours, _oracle_logits(hf, ids)) <= 1e-4
    # logits are not shifted for LLaDA and attention is bidirectional: the last token moves logits[0]
    ids2 = ids.clone()
    ids2[0, -1] = (ids2[0, -1] + 1) % cfg.vocab_size
    assert not torch.allclose(eng.model.logits(ids2)[0, 0], ours[0, 0])


@pytest.mark.parametrize("tie,kv_heads,model_type", [(False, 2, "Dream"), (True, 1, "qwen2")])
def test_dream_and_qwen2_match_qwen2_with_shift(tmp_path, tie, kv_heads, model_type):
    folder = write_dream_model(tmp_path / "dream", kv_heads=kv_heads, tie=tie, model_type=model_type)
    eng = Engine.load(folder, device="cpu", dtype="float32")
    cfg = eng.cfg
    assert cfg.logit_shift and cfg.qkv_bias and cfg.tie_embeddings == tie and cfg.mask_id == 2
    hf_cfg = transformers.Qwen2Config(**_shapes(cfg), tie_word_embeddings=tie, use_sliding_window=False)
    hf = transformers.Qwen2ForCausalLM(hf_cfg).eval()
    state = _hf_state(eng)
    if tie:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    hf.load_state_dict(state, strict=True)
    ids = torch.randint(0, cfg.vocab_size, (1, 19), generator=torch.Generator().manual_seed(2))
    oracle = _oracle_logits(hf, ids)
    shifted = torch.cat([oracle[:, :1], oracle[:, :-1]], dim=1)   # Dream: token i from hidden i-1
    assert _rel_err(eng.model.logits(ids), shifted) <= 1e-4


def test_bf16_storage_is_converted_to_requested_dtype(tiny_dream_model):
    eng = Engine.load(tiny_dream_model, device="cpu", dtype="bfloat16")
    assert eng.model.dtype == torch.bfloat16
    assert Engine.load(tiny_dream_model, device="cpu").model.dtype == torch.float32
