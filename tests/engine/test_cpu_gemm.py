"""Our fp16-weight CPU kernel (engine/kernels/cpu/gemm.py) against its oracles: the torch reference
(x @ W^T + b in fp32 from the same fp16 values), fbgemm's products (bit for bit where fbgemm
sums in order),
and itself (a row's outputs do not depend on the rows beside it); and the fallback to fbgemm."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import engine.kernels.cpu.gemm as cpu_gemm
from engine.model.packed import HalfLinear, KernelPack, dense_weight, fp16_gemm_available, pack_block, pack_fp16

needs_kernel = pytest.mark.skipif(cpu_gemm.unavailable_reason() is not None,
                                  reason=f"the fp16 CPU kernel cannot run here: {cpu_gemm.unavailable_reason()}")
needs_fbgemm = pytest.mark.skipif(not fp16_gemm_available(), reason="this torch build has no fbgemm fp16 GEMM")


def test_pack_puts_16_outputs_a_block_column_by_column_and_unpacks_exactly():
    w = torch.randn(64, 7)
    packed = cpu_gemm.pack(w)
    assert packed.shape == (4, 7, 16) and packed.dtype == torch.float16
    assert packed[2, 5, 3] == w[2 * 16 + 3, 5].half()
    assert torch.equal(cpu_gemm.unpack(packed), w.half().float())
    with pytest.raises(ValueError, match="multiple of 32"):
        cpu_gemm.pack(torch.randn(48, 7))
    assert cpu_gemm.supports(96) and not cpu_gemm.supports(100)


@needs_kernel
@pytest.mark.parametrize("n,k", [(32, 5), (64, 40), (96, 896), (1152, 896), (896, 4864)])
@pytest.mark.parametrize("bias", [False, True])
def test_kernel_matches_the_torch_reference_for_every_row_count(n, k, bias):
    gen = torch.Generator().manual_seed(n + k)
    packed = cpu_gemm.pack(torch.randn(n, k, generator=gen) / k ** 0.5)
    b = torch.randn(n, generator=gen) if bias else None
    for rows in (1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 40):
        x = torch.randn(rows, k, generator=gen)
        got, want = cpu_gemm.gemm(x, packed, b), cpu_gemm.reference(x, packed, b)
        assert got.shape == (rows, n)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (rows, (got - want).abs().max())


@needs_kernel
def test_each_row_gets_the_same_numbers_whatever_rows_are_beside_it():
    gen = torch.Generator().manual_seed(1)
    packed, b = cpu_gemm.pack(torch.randn(1152, 896, generator=gen)), torch.randn(1152, generator=gen)
    x = torch.randn(40, 896, generator=gen)
    whole = cpu_gemm.gemm(x, packed, b)
    for lo, hi in ((0, 1), (3, 5), (5, 8), (8, 14), (14, 40), (39, 40)):
        assert torch.equal(cpu_gemm.gemm(x[lo:hi], packed, b), whole[lo:hi]), (lo, hi)


@needs_kernel
@needs_fbgemm
def test_kernel_gives_fbgemms_numbers_bit_for_bit_where_fbgemm_sums_in_order():
    """fbgemm's own products for 1, 2, 7 or 32 rows differ from its others in the last bits
    (other paths); for the row counts below it sums each output over k in order, as we do."""
    gen = torch.Generator().manual_seed(2)
    w, b = torch.randn(1152, 896, generator=gen).half().float(), torch.randn(1152, generator=gen)
    fb = torch.ops.quantized.linear_prepack_fp16(w, b)
    packed = cpu_gemm.pack(w)
    for rows in (3, 4, 5, 6, 8, 9, 12, 16):
        x = torch.randn(rows, 896, generator=gen)
        assert torch.equal(cpu_gemm.gemm(x, packed, b), torch.ops.quantized.linear_dynamic_fp16(x, fb)), rows


@needs_kernel
def test_bad_inputs_are_refused_before_the_kernel_reads_them():
    packed = cpu_gemm.pack(torch.randn(32, 8))
    with pytest.raises(ValueError, match="inputs of shape"):
        cpu_gemm.gemm(torch.randn(2, 9), packed, None)
    with pytest.raises(ValueError, match="bias"):
        cpu_gemm.gemm(torch.randn(2, 8), packed, torch.randn(31))
    assert cpu_gemm.gemm(torch.randn(0, 8), packed, None).shape == (0, 32)


@needs_kernel
@needs_fbgemm
def test_half_linear_uses_the_kernel_where_the_size_fits_and_fbgemm_elsewhere():
    model = nn.Sequential(nn.Linear(64, 96), nn.Linear(96, 50))
    x = torch.randn(4, 64)
    want = model(x).detach()
    pack_fp16(model)
    assert isinstance(model[0], HalfLinear) and model[0].kernel == "ours" and model[1].kernel == "fbgemm"
    assert isinstance(model[0].packed[0], KernelPack)
    assert torch.allclose(model(x), want, rtol=1e-2, atol=1e-2)
    assert torch.equal(dense_weight(model[0]), cpu_gemm.unpack(model[0].packed[0].weight))


@needs_fbgemm
def test_without_the_kernel_blocks_are_fbgemms(monkeypatch):
    monkeypatch.setattr(cpu_gemm, "library", lambda: None)
    block = pack_block(torch.randn(64, 16), torch.randn(64))
    assert not isinstance(block, KernelPack)


def test_the_switch_and_a_broken_compiler_leave_the_kernel_off(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(cpu_gemm.ENV_SWITCH, "0")
    assert cpu_gemm.unavailable_reason() == f"{cpu_gemm.ENV_SWITCH}=0"
    cpu_gemm.library.cache_clear()
    try:
        assert cpu_gemm.library() is None
        monkeypatch.delenv(cpu_gemm.ENV_SWITCH)
        if cpu_gemm.unavailable_reason() is not None:
            pytest.skip(f"the kernel cannot run here: {cpu_gemm.unavailable_reason()}")
        monkeypatch.setenv("DLLM_LSP_CACHE", str(tmp_path))          # nothing built there yet
        monkeypatch.setenv("CC", "false")                            # a compiler that fails
        cpu_gemm.library.cache_clear()
        with caplog.at_level(logging.WARNING, logger="engine.kernels.cpu.gemm"):
            assert cpu_gemm.library() is None
        assert "not built" in caplog.text and not list(tmp_path.rglob("*.so"))
    finally:
        cpu_gemm.library.cache_clear()


@needs_kernel
def test_real_model_runs_on_the_kernel_and_a_pass_over_drafts_reads_as_one_row_passes(real_engine):
    """The default model with our kernel: a pass over 6 new tokens gives every row the hidden
    state of 6 one-token passes (to the last bits: attention's softmax groups its sums by the key
    count) and the same next token at every row."""
    from engine.model.kvcache import kv_cat
    from engine.model.transformer import causal_visibility
    model = real_engine.model
    assert real_engine.describe()["weights"] in ("gguf (our kernel, AVX-512)", "gguf (our kernel, AVX2)")   # the file's own codes
    gen = torch.Generator().manual_seed(3)
    ctx = torch.randint(0, 5000, (1, 200), generator=gen)
    new = torch.randint(0, 5000, (1, 6), generator=gen)
    with torch.inference_mode():
        _, past = model.hidden(ctx, torch.arange(200), None, causal_visibility(200, 0))
        many, _ = model.hidden(new, torch.arange(200, 206), past, causal_visibility(6, 200))
        cur, rows = past, []
        for i in range(6):
            h, kv = model.hidden(new[:, i:i + 1], torch.arange(200 + i, 201 + i), cur, None)
            rows.append(h)
            cur = kv_cat(cur, kv)
        one_by_one = torch.cat(rows, dim=1)
        assert torch.allclose(one_by_one, many, rtol=0, atol=1e-3)
        assert torch.equal(model.head(many).argmax(-1), model.head(one_by_one).argmax(-1))
