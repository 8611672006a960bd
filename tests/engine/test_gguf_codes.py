"""The GGUF's own weights as int8 codes (loading/gguf_codes.py) and our kernel's products from them
(cpu_gemm.codes_gemm): codes that dequantize to gguf's own values bit for bit, products against
the torch reference and row-independent, an engine whose packed matrices hold exactly the
file's weights, and drafted text equal to one token per pass on that weight format."""
from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from engine import Engine
import engine.kernels.cpu.gemm as cpu_gemm
import engine.loading.gguf_codes as gguf_codes
from engine.loading.gguf_import import EXACT_FILE, cached_folder, hf_tensor_name, read_exact
from engine.model.packed import HalfLinear, SliceOf, dense_weight
from engine.testing.gguf_files import _random_kquant

from test_causal_decode import check_drafts_give_the_one_per_pass_text  # tests/engine is on sys.path

needs_kernel = pytest.mark.skipif(cpu_gemm.unavailable_reason() is not None,
                                  reason=f"our CPU kernel cannot run here: {cpu_gemm.unavailable_reason()}")


def _blocks(kind: str, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Raw blocks of one tensor [rows, cols] of type `kind`, as gguf's reader gives them."""
    qtype = gguf.GGMLQuantizationType[kind]
    rng = np.random.default_rng(seed)
    if kind in ("Q4_K", "Q6_K"):
        return _random_kquant(qtype, rows, cols, rng)
    return gguf.quants.quantize(rng.normal(0, 0.3, (rows, cols)).astype(np.float32), qtype)


@pytest.mark.parametrize("kind, group, offsets, low, high", [
    ("Q8_0", 32, False, -128, 127), ("Q5_0", 32, False, -16, 15), ("Q6_K", 16, False, -32, 31), ("Q4_K", 32, True, 0, 15)])
def test_codes_dequantize_to_ggufs_own_values_bit_for_bit(kind, group, offsets, low, high):
    rows, cols = 6, 512
    raw = _blocks(kind, rows, cols)
    c = gguf_codes.codes_of(kind, raw, rows, cols)
    assert c.codes.dtype == np.int8 and c.codes.shape == (rows, cols) and c.group == group
    assert c.scale.dtype == np.float32 and c.scale.shape == (rows, cols // group)
    assert (c.offset is not None) == offsets
    assert low <= c.codes.min() and c.codes.max() <= high and len(np.unique(c.codes)) > 8
    want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind]).reshape(rows, cols).astype(np.float32)
    got = gguf_codes.dequantize(c)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    in_torch = gguf_codes.dequantize_torch(*(None if t is None else torch.from_numpy(t) for t in c))
    assert torch.equal(in_torch, torch.from_numpy(want))
    order = np.array([2, 0, 5, 1, 4, 3])
    assert np.array_equal(gguf_codes.dequantize(gguf_codes.take_rows(c, order)), want[order])


def test_other_types_have_no_codes_and_wrong_sizes_are_refused():
    assert gguf_codes.codes_of("F16", np.zeros((2, 64), np.uint8), 2, 32) is None
    assert not gguf_codes.supported("Q5_K") and gguf_codes.supported("Q4_K")
    with pytest.raises(ValueError, match="do not make"):
        gguf_codes.codes_of("Q8_0", _blocks("Q8_0", 2, 64), 2, 96)
    with pytest.raises(ValueError, match="do not make"):
        gguf_codes.codes_of("Q6_K", _blocks("Q6_K", 2, 256), 2, 128)


def _pack(rows_out, k, group, offsets, seed=0):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(-32, 32, (rows_out, k), generator=gen, dtype=torch.int8)
    scale = torch.rand(rows_out, k // group, generator=gen) * 0.05
    offset = torch.rand(rows_out, k // group, generator=gen) * 0.05 if offsets else None
    return codes, scale, offset


def test_pack_codes_layout_and_unpack():
    codes, scale, offset = _pack(64, 96, 32, True)
    p = cpu_gemm.pack_codes(codes, scale, offset)
    assert p.codes.shape == (4, 96, 16) and p.scale.shape == (4, 3, 16) and p.group == 32 and p.out_features == 64
    assert p.codes[2, 70, 5] == codes[37, 70] and p.scale[2, 2, 5] == scale[37, 2]
    want = gguf_codes.dequantize(gguf_codes.Codes(codes.numpy(), scale.numpy(), offset.numpy()))
    assert torch.equal(cpu_gemm.unpack_codes(p), torch.from_numpy(want))
    for bad in ((codes[:48], scale[:48], None), (codes.short(), scale, None), (codes, scale[:, :2], None),
                (codes[:, :90], scale, None), (codes, scale, offset[:, :1])):
        with pytest.raises(ValueError):
            cpu_gemm.pack_codes(*bad)
    three = torch.rand(64, 3)                                   # 96 / 3 = 32 columns, but 3 groups of ...
    with pytest.raises(ValueError, match="power of two"):
        cpu_gemm.pack_codes(torch.zeros(64, 72, dtype=torch.int8), three, None)      # ... 24: not a power of two


@needs_kernel
@pytest.mark.parametrize("group, offsets", [(32, False), (16, False), (32, True)])
def test_code_products_match_the_reference_and_rows_do_not_see_each_other(group, offsets):
    p = cpu_gemm.pack_codes(*_pack(96, 256, group, offsets, seed=group))
    bias = torch.randn(96)
    gen = torch.Generator().manual_seed(1)
    for rows in [*range(1, 14), 16, 17, 31, 32, 33, 40, 100]:   # every kernel, and the long inputs' path (>= 16)
        x = torch.randn(rows, 256, generator=gen)
        got = cpu_gemm.codes_gemm(x, p, bias)
        assert torch.allclose(got, cpu_gemm.codes_reference(x, p, bias), rtol=1e-4, atol=1e-4), rows
        one_by_one = torch.cat([cpu_gemm.codes_gemm(x[i:i + 1], p, bias) for i in range(rows)])
        assert torch.equal(got, one_by_one), rows
    assert cpu_gemm.codes_gemm(torch.empty(0, 256), p, None).shape == (0, 96)
    with pytest.raises(ValueError, match="inputs of shape"):
        cpu_gemm.codes_gemm(torch.randn(2, 255), p, None)
    with pytest.raises(ValueError, match="bias"):
        cpu_gemm.codes_gemm(torch.randn(2, 256), p, torch.randn(95))
    with pytest.raises(ValueError, match="not a kernel pack"):
        cpu_gemm.codes_gemm(torch.randn(2, 256), p._replace(scale=p.scale.double()), None)


@needs_kernel
@pytest.mark.skipif(not cpu_gemm.wide_available(), reason="the CPU has no AVX-512 (avx512f): only the AVX2 path runs")
@pytest.mark.parametrize("group, offsets", [(32, False), (32, True)])
def test_the_avx512_paths_give_the_avx2_paths_bits(group, offsets):
    """The few-row kernels (1-15 rows, a decoding pass) and the long path (>= 16): the same bits
    with AVX-512 as without; 96 outputs take the 2-block tiles, 128 the 4-block sweeps (1-15 rows)."""
    gen = torch.Generator().manual_seed(2)
    try:
        for n_out in (96, 128):
            p = cpu_gemm.pack_codes(*_pack(n_out, 256, group, offsets, seed=3))
            bias = torch.randn(n_out)
            for rows in (*range(1, 16), 16, 17, 23, 32, 35, 64):
                x = torch.randn(rows, 256, generator=gen)
                cpu_gemm.set_wide(True)
                wide = cpu_gemm.codes_gemm(x, p, bias)
                alone = cpu_gemm.codes_gemm(x[-1:], p, bias)
                cpu_gemm.set_wide(False)
                narrow = cpu_gemm.codes_gemm(x, p, bias)
                assert torch.equal(wide, narrow), (n_out, rows)
                assert torch.equal(wide[-1:], alone), (n_out, rows)                 # and one row alone
                assert torch.allclose(wide, cpu_gemm.codes_reference(x, p, bias), rtol=1e-4, atol=1e-4)
    finally:
        cpu_gemm.set_wide(True)


@pytest.mark.skipif(not cpu_gemm.wide_available(), reason="the CPU has no AVX-512 (avx512f): only the AVX2 path runs")
@pytest.mark.parametrize("group, offsets", [(32, False), (16, False), (32, True)])
def test_four_block_sweeps_give_the_two_block_sweeps_bits(group, offsets):
    """2-15 rows over outputs that come in fours of blocks (192 = 12 blocks) sweep 4 blocks at once,
    6 rows a sweep; 2 blocks and 7 rows a sweep give the same bits, and so does each row alone."""
    gen = torch.Generator().manual_seed(5)
    p = cpu_gemm.pack_codes(*_pack(192, 256, group, offsets, seed=6))
    bias = torch.randn(192)
    try:
        for rows in range(1, 16):
            x = torch.randn(rows, 256, generator=gen)
            cpu_gemm.set_four_blocks(True)
            four = cpu_gemm.codes_gemm(x, p, bias)
            cpu_gemm.set_four_blocks(False)
            two = cpu_gemm.codes_gemm(x, p, bias)
            assert torch.equal(four, two), rows
            assert torch.equal(four, torch.cat([cpu_gemm.codes_gemm(x[i:i + 1], p, bias) for i in range(rows)])), rows
    finally:
        cpu_gemm.set_four_blocks(True)


def test_an_embedding_held_as_codes_makes_the_files_rows():
    from engine.model.packed import CodesEmbedding
    codes, scale, offset = _pack(50, 64, 32, True, seed=4)
    table = CodesEmbedding(codes, scale, offset)
    want = cpu_gemm.unpack_codes(cpu_gemm.pack_codes(torch.cat([codes, codes[:14]]), torch.cat([scale, scale[:14]]),
                                                     torch.cat([offset, offset[:14]])))[:50]
    assert torch.equal(table.weight, want)
    ids = torch.tensor([[3, 49, 0, 3]])
    rows = table(ids)
    assert rows.shape == (1, 4, 64) and torch.equal(rows[0], want[ids[0]])
    seen = []
    table.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))       # the mask adapter's way in
    table(torch.tensor([7]))
    assert seen == [(1, 64)] and table.n_params == 50 * 64


@needs_kernel
def test_the_engine_multiplies_exactly_the_files_weights(tiny_gguf_qwen2):
    """auto on a converted GGUF: every matrix with codes (one group and offset form across a
    fused matrix) holds exactly gguf's dequantized values, the vectors are the file's fp32, the
    rest (F16, BF16, Q5_K here) stays fp16; logits stay close to the bf16 copy's."""
    folder = cached_folder(tiny_gguf_qwen2)
    assert (folder / EXACT_FILE).is_file()
    engine = Engine.load(tiny_gguf_qwen2, device="cpu")
    assert engine.describe()["weights"].startswith("gguf + fp16")
    reader = gguf.GGUFReader(str(tiny_gguf_qwen2))
    values = {hf_tensor_name(t.name)[len("model."):] if hf_tensor_name(t.name).startswith("model.") else hf_tensor_name(t.name):
              (t.tensor_type.name, gguf.quants.dequantize(t.data, t.tensor_type).reshape(
                  [int(d) for d in reversed(t.shape.tolist())]).astype(np.float32))
              for t in reader.tensors}
    forms = {}
    modules = dict(engine.model.named_modules())
    for name, module in modules.items():
        if isinstance(module, (HalfLinear, SliceOf)) and name + ".weight" in values:
            kind, want = values[name + ".weight"]
            fused = module.fused if isinstance(module, SliceOf) else module
            forms[name] = fused.form
            if fused.form == "gguf":
                assert torch.equal(dense_weight(module), torch.from_numpy(want)), name
    assert forms["layers.0.mlp.down_proj"] == "gguf" and forms["layers.1.mlp.down_proj"] == "gguf"      # Q4_K, Q6_K
    assert forms["layers.2.mlp.down_proj"] == "fp16"                                                     # Q5_K
    assert forms["layers.0.mlp.up_proj"] == "gguf"                                                       # Q5_0|Q8_0
    assert forms["lm_head"] == ("gguf" if cpu_gemm.supports(engine.cfg.vocab_size) else "fp16")          # Q8_0
    assert forms["layers.0.self_attn.q_proj"] == "fp16"                      # fused with an F16 and a BF16 matrix
    from engine.model.packed import CodesEmbedding
    assert isinstance(engine.model.embed_tokens, CodesEmbedding)                        # an untied table: codes
    assert torch.equal(engine.model.embed_tokens.weight, torch.from_numpy(values["embed_tokens.weight"][1]))
    assert torch.equal(engine.model.layers[1].input_layernorm.weight,
                       torch.from_numpy(values["layers.1.input_layernorm.weight"][1]))
    bf16 = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="fp16-weights")
    ids = torch.tensor([[3, 17, 42, 9, 100, 5]])
    with torch.inference_mode():
        a, b = engine.model.logits(ids), bf16.model.logits(ids)
    # bf16 rounds each weight by up to 2^-9 of itself: the logits move by ~1% of their range
    assert (a - b).abs().max() < 0.03 * a.abs().max() and not torch.equal(a, b)
    assert read_exact(folder, engine.cfg).codes["layers.0.mlp.down_proj.weight"][2] is not None    # Q4_K's offsets


@needs_kernel
def test_a_tied_table_stays_dense_with_the_files_values(tmp_path):
    from engine.testing.gguf_files import write_gguf_model
    path = write_gguf_model(tmp_path / "tied.gguf", tie=True, types={"token_embd": "Q8_0", "ffn_up": "Q8_0", "ffn_gate": "Q5_0"})
    engine = Engine.load(path, device="cpu")
    assert engine.model.lm_head is None and isinstance(engine.model.embed_tokens, torch.nn.Embedding)
    t = next(t for t in gguf.GGUFReader(str(path)).tensors if t.name == "token_embd.weight")
    want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(engine.model.embed_tokens.weight.shape)
    assert torch.equal(engine.model.embed_tokens.weight, torch.from_numpy(want.astype(np.float32)))
    assert engine.model.layers[0].mlp.up_proj.fused.form == "gguf"


def test_dtype_gguf_needs_a_converted_gguf_and_the_cpu(tiny_gguf_qwen2, tmp_path):
    import engine.model.forms as E
    from types import SimpleNamespace
    causal = SimpleNamespace(attention="causal")
    assert E.pick_weights("auto", "cpu", torch.float32, causal, has_exact=False) in ("fp16", "dense")
    with pytest.raises(ValueError, match="dtype gguf needs"):
        E.pick_weights("gguf", "cpu", torch.float32, causal, has_exact=False)
    with pytest.raises(ValueError, match="dtype gguf needs"):
        E.pick_weights("gguf", "cuda", torch.float32, causal, has_exact=True)
    if cpu_gemm.library() is not None:
        assert E.pick_weights("auto", "cpu", torch.float32, causal, has_exact=True) == "gguf"
        assert E.pick_weights("gguf", "cpu", torch.float32, causal, has_exact=True) == "gguf"
    assert E.pick_weights("fp16-weights", "cpu", torch.float32, causal, has_exact=True) == "fp16"
    assert read_exact(tmp_path, None) is None                                 # a folder without exact weights
    (tmp_path / EXACT_FILE).parent.mkdir()
    (tmp_path / EXACT_FILE).write_bytes(b"not safetensors")
    from engine.errors import CheckpointError
    with pytest.raises(CheckpointError, match="exact weights"):
        read_exact(tmp_path, None)


@pytest.fixture(scope="module")
def tiny_codes(tiny_gguf_qwen2):
    if cpu_gemm.library() is None:
        pytest.skip(f"our CPU kernel cannot run here: {cpu_gemm.unavailable_reason()}")
    return Engine.load(tiny_gguf_qwen2, device="cpu", dtype="gguf")


def test_drafted_text_is_the_one_per_pass_text_on_the_files_codes(tiny_codes):
    check_drafts_give_the_one_per_pass_text(tiny_codes, 40, seed=11, budgets=(16, 5))


def test_real_file_codes_are_ggufs_values(real_model_file):
    """One matrix of each type the default file uses (Q5_0, Q8_0, Q6_K, Q4_K)."""
    reader = gguf.GGUFReader(str(real_model_file))
    seen = set()
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind in seen or not gguf_codes.supported(kind) or t.name.startswith(("token_embd", "output")):
            continue
        seen.add(kind)
        cols, rows = (int(d) for d in t.shape.tolist())
        want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(rows, cols).astype(np.float32)
        got = gguf_codes.dequantize(gguf_codes.codes_of(kind, t.data, rows, cols))
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), t.name
    assert seen == {"Q5_0", "Q8_0", "Q6_K", "Q4_K"}
