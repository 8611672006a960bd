"""fp16 weights through fbgemm (model/packed.py): the product it computes, where Engine.load uses
it, and drafted text equal to one token per pass on that weight format (its own oracle)."""
import pytest
import torch
from torch import nn

from engine import Engine
import engine.kernels.cpu.gemm as cpu_gemm
from engine.model.packed import HalfLinear, SliceOf, dense_weight, fp16_gemm_available, is_linear, pack_fp16

from test_causal_decode import check_drafts_give_the_one_per_pass_text  # tests/engine is on sys.path

pytestmark = pytest.mark.skipif(not fp16_gemm_available(), reason="this torch build has no fbgemm fp16 linear")


@pytest.mark.parametrize("rows", [1, 3, 8, 37])
@pytest.mark.parametrize("bias", [False, True])
def test_the_product_is_x_times_the_fp16_rounded_weight(rows, bias):
    torch.manual_seed(rows)
    lin = nn.Linear(96, 200, bias=bias)
    half = HalfLinear(lin)
    x = torch.randn(2, rows, 96)
    w16 = lin.weight.detach().half().float()                       # what the packed weight holds
    want = x @ w16.t() + (lin.bias.detach() if bias else 0)
    got = half(x)
    assert got.shape == (2, rows, 200) and got.dtype == torch.float32
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, x @ lin.weight.detach().t() + (lin.bias.detach() if bias else 0), rtol=0, atol=0)
    assert torch.equal(dense_weight(half), w16)                     # unpacking gives the rounded weight back
    assert is_linear(half) and is_linear(lin) and not is_linear(nn.Embedding(3, 4))


def test_row_blocks_give_the_numbers_of_one_packed_matrix(monkeypatch):
    import engine.model.packed as H
    torch.manual_seed(0)
    lin = nn.Linear(64, 250, bias=True)
    whole = HalfLinear(lin)
    monkeypatch.setattr(H, "CHUNK_ROWS", 100)
    blocked = HalfLinear(lin)
    assert len(whole.packed) == 1 and len(blocked.packed) == 3
    x = torch.randn(5, 64)
    assert torch.equal(blocked(x), whole(x)) and torch.equal(dense_weight(blocked), dense_weight(whole))
    model = nn.Sequential(nn.Linear(64, 250), nn.Linear(250, 8))
    want = model(x).detach()
    assert pack_fp16(model, workers=3) == 2 and len(model[0].packed) == 3
    assert torch.allclose(model(x), want, rtol=1e-2, atol=1e-2)


def test_pack_swaps_every_linear_and_logits_stay_close(tiny_gguf_qwen2):
    dense = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")
    packed = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="fp16-weights")
    assert not any(isinstance(m, HalfLinear) for m in dense.model.modules())
    n = sum(isinstance(m, HalfLinear) for m in packed.model.modules())
    assert n == 4 * dense.cfg.num_layers + (dense.model.lm_head is not None)       # q|k|v and gate|up fused
    assert sum(isinstance(m, SliceOf) for m in packed.model.modules()) == 5 * dense.cfg.num_layers
    assert not any(isinstance(m, nn.Linear) for m in packed.model.modules())
    assert packed.describe()["weights"].startswith("fp16 (") and dense.describe()["weights"] == "float32"
    assert packed.describe()["parameters"] == dense.describe()["parameters"]
    ids = torch.tensor([[3, 17, 42, 9, 100, 5]])
    calls = []                               # every packed product runs (equal logits would not show it:
    for m in packed.model.modules():         # on some CPUs torch's fp32 sums are the kernel's, bit for bit)
        if isinstance(m, HalfLinear):
            m.register_forward_hook(lambda mod, args, out: calls.append(mod))
    with torch.inference_mode():
        a, b = dense.model.logits(ids), packed.model.logits(ids)
    assert torch.allclose(a, b, rtol=1e-2, atol=1e-2)
    assert len(set(map(id, calls))) == n
    assert pack_fp16(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))) == 2


def test_auto_packs_a_causal_model_on_the_cpu_only(tiny_gguf_qwen2):
    auto = Engine.load(tiny_gguf_qwen2, device="cpu")
    assert auto.cfg.attention == "causal" and any(isinstance(m, HalfLinear) for m in auto.model.modules())
    # where our kernel runs, auto multiplies the GGUF's own codes where a matrix has them
    # (test_gguf_codes.py); this file's F16/BF16/Q5_K matrices stay fp16
    want = "gguf + fp16 (" if cpu_gemm.library() is not None else "fp16 ("
    assert auto.describe()["weights"].startswith(want)
    with pytest.raises(ValueError, match="fp16-weights"):
        Engine.load(tiny_gguf_qwen2, device="meta", dtype="fp16-weights")


@pytest.fixture(scope="module")
def tiny_fp16(tiny_gguf_qwen2):
    return Engine.load(tiny_gguf_qwen2, device="cpu", dtype="fp16-weights")


def test_drafted_text_is_the_one_per_pass_text_on_fp16_weights(tiny_fp16):
    check_drafts_give_the_one_per_pass_text(tiny_fp16, 50, seed=7)


def test_pick_weights_packs_only_where_measured(monkeypatch):
    import engine.model.forms as E
    from types import SimpleNamespace
    causal, blocks = SimpleNamespace(attention="causal"), SimpleNamespace(attention="block_causal")
    assert E.pick_weights("auto", "cpu", torch.float32, causal) == "fp16"
    assert E.pick_weights("fp16-weights", "cpu", torch.float32, causal) == "fp16"
    assert E.pick_weights("float32", "cpu", torch.float32, causal) == "dense"
    assert E.pick_weights("auto", "cpu", torch.bfloat16, causal) == "dense"      # a CPU with bf16 units
    assert E.pick_weights("auto", "cpu", torch.float32, blocks) == "dense"       # dLLM families keep fp32
    assert E.pick_weights("auto", "cuda", torch.bfloat16, causal) == "dense"
    with pytest.raises(ValueError, match="fp16-weights needs the CPU"):
        E.pick_weights("fp16-weights", "cuda", torch.float32, causal)
    monkeypatch.setattr(E, "fp16_gemm_available", lambda: False)                # an ARM build of torch
    assert E.pick_weights("auto", "cpu", torch.float32, causal) == "dense"
    with pytest.raises(ValueError, match="fbgemm"):
        E.pick_weights("fp16-weights", "cpu", torch.float32, causal)


def _packed_copy(path, fuse):
    model = Engine.load(path, device="cpu", dtype="float32").model
    pack_fp16(model, fuse=fuse)
    return model


def test_fused_projections_give_the_separate_products_bit_for_bit(tiny_gguf_qwen2):
    from engine.model.transformer import causal_visibility
    dense = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")
    fused, separate = _packed_copy(tiny_gguf_qwen2, True), _packed_copy(tiny_gguf_qwen2, False)
    assert fused.layers[0].self_attn.qkv is not None and separate.layers[0].self_attn.qkv is None
    assert torch.equal(dense_weight(fused.layers[1].mlp.up_proj), dense_weight(separate.layers[1].mlp.up_proj))
    ids = torch.randint(0, dense.cfg.vocab_size, (1, 23))
    with torch.inference_mode():
        for model in (fused, separate):
            h, kv = model.hidden(ids[:, :20], torch.arange(20), None, causal_visibility(20, 0))
            model.out = (h, model.hidden(ids[:, 20:], torch.arange(20, 23), kv, causal_visibility(3, 20)))
    (h1, (h1b, kv1)), (h2, (h2b, kv2)) = fused.out, separate.out
    assert torch.equal(h1, h2) and torch.equal(h1b, h2b)                     # a prefill and a pass over its cache
    assert all(torch.equal(a, b) and a.is_contiguous() == b.is_contiguous()
               for pa, pb in zip(kv1, kv2) for a, b in zip(pa, pb))


def test_the_mask_adapter_hooks_act_on_fused_projections_as_on_separate_ones(tiny_gguf_qwen2):
    from engine.drafting.mask_slots import MaskAdapter
    from engine.model.transformer import causal_visibility
    dense = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")
    adapter = MaskAdapter(dense.cfg, rank=2, mask_slots=2)
    with torch.no_grad():
        for b in adapter.lora_b.values():
            b.normal_(0, 0.5)                                  # a trained-looking adapter: its hooks change outputs
    ids = torch.randint(0, dense.cfg.vocab_size, (1, 9))
    outs = []
    for fuse in (True, False):
        model = _packed_copy(tiny_gguf_qwen2, fuse)
        adapter.attach(model)
        with torch.inference_mode(), adapter.rows_from(6):
            outs.append(model.hidden(ids, torch.arange(9), None, causal_visibility(9, 0))[0])
        with torch.inference_mode(), adapter.rows_from(None):
            outs.append(model.hidden(ids, torch.arange(9), None, causal_visibility(9, 0))[0])
        adapter.detach_hooks()
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[3])
    assert not torch.equal(outs[0], outs[1])                   # the hooks did act on the mask rows
