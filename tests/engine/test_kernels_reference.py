"""The torch reference kernels against plain formulas, the decision kernel's chunked algebra,
backend selection, and a CPU compile of the CUDA source (NVRTC, when libnvrtc is installed)."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.kernels import select_backend
import engine.kernels.reference as reference

ROOT = Path(__file__).resolve().parents[2]
NEG_INF = float("-inf")


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


# ---- rms_norm ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_formula_and_adds_residual(dtype):
    g = torch.Generator().manual_seed(0)
    x, res = torch.randn(3, 5, 64, generator=g).to(dtype), torch.randn(3, 5, 64, generator=g).to(dtype)
    w = (1 + 0.1 * torch.randn(64, generator=g)).to(dtype)
    normed, new_res = reference.rms_norm(x, w, 1e-6, res)
    summed = (x.double() + res.double())
    expect = summed / torch.sqrt(summed.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()
    assert new_res.dtype == normed.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 2 ** -6
    assert _rel(new_res, summed) <= tol
    assert _rel(normed, expect) <= tol * 2


def test_rms_norm_without_residual_returns_input_as_residual():
    x, w = torch.randn(4, 32), torch.ones(32)
    normed, new_res = reference.rms_norm(x, w, 1e-5)
    assert new_res is x
    assert torch.allclose(normed.pow(2).mean(-1), torch.ones(4), atol=1e-3)


# ---- rope ----------------------------------------------------------------------------------------
def test_rope_equals_complex_rotation_of_half_pairs():
    g = torch.Generator().manual_seed(1)
    b, hq, hk, t, d = 1, 4, 2, 6, 16
    q, k = torch.randn(b, hq, t, d, generator=g), torch.randn(b, hk, t, d, generator=g)
    pos = torch.arange(5, 5 + t).double()
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2).double() / d))
    ang = pos[:, None] * inv_freq[None]                                          # [T, D/2]
    cos, sin = torch.cat([ang, ang], -1).cos().float(), torch.cat([ang, ang], -1).sin().float()
    rq, rk = reference.apply_rope(q, k, cos, sin)
    for x, rx in ((q, rq), (k, rk)):
        z = torch.complex(x[..., : d // 2].double(), x[..., d // 2:].double()) * torch.polar(torch.ones_like(ang), ang)
        assert torch.allclose(rx[..., : d // 2].double(), z.real, atol=1e-5)
        assert torch.allclose(rx[..., d // 2:].double(), z.imag, atol=1e-5)
        assert torch.allclose(rx.norm(dim=-1), x.norm(dim=-1), atol=1e-4)       # a rotation keeps norms


def test_rope_gives_the_rotate_half_formula_bit_for_bit():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 5, 14, 64, generator=g).transpose(1, 2)                  # strided, as in the model
    k, cos, sin = torch.randn(1, 2, 5, 64, generator=g), torch.randn(5, 64, generator=g), torch.randn(5, 64, generator=g)
    rq, rk = reference.apply_rope(q, k, cos, sin)
    assert torch.equal(rq, q * cos + reference.rotate_half(q) * sin)
    assert torch.equal(rk, k * cos + reference.rotate_half(k) * sin)


def test_swiglu_is_silu_gate_times_up():
    g, u = torch.randn(7, 33), torch.randn(7, 33)
    assert torch.allclose(reference.swiglu(g, u), g * torch.sigmoid(g) * u, atol=1e-6)


# ---- decision -----------------------------------------------------------------------------------
def _decision_by_definition(logits):
    p = torch.softmax(logits.double(), -1)
    top = p.sort(-1, descending=True).values
    second = top[:, 1] if p.shape[1] > 1 else torch.zeros(p.shape[0], dtype=torch.float64)
    ent = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    # first index of the maximum logit
    m = logits.max(-1, keepdim=True).values
    first = torch.stack([(row == mx).nonzero()[0, 0] for row, mx in zip(logits, m)])
    return top[:, 0], first, ent, top[:, 0] - second


@pytest.mark.parametrize("vocab", [1, 2, 17, 1000, 4099])
def test_decision_matches_softmax_definitions(vocab):
    g = torch.Generator().manual_seed(vocab)
    logits = 3 * torch.randn(6, vocab, generator=g)
    if vocab > 2:
        logits[:, 1] = NEG_INF                       # the mask id, as the decoder sets it
        logits[0, 2] = logits[0, 3] = logits[0].max() + 1.0  # a tie: first index wins
    conf, arg, ent, margin = reference.decision(logits)
    e_conf, e_arg, e_ent, e_margin = _decision_by_definition(logits)
    assert conf.dtype == ent.dtype == margin.dtype == torch.float32 and arg.dtype == torch.int64
    assert torch.allclose(conf.double(), e_conf, atol=1e-6)
    assert torch.equal(arg, e_arg)
    assert torch.allclose(ent.double(), e_ent, atol=1e-5)
    assert torch.allclose(margin.double(), e_margin, atol=1e-6)
    assert not torch.isnan(ent).any()
    if vocab > 2:
        assert arg[0].item() == 2 and margin[0].item() == 0.0


def test_decision_of_uniform_logits_has_log_v_entropy():
    conf, _, ent, margin = reference.decision(torch.zeros(2, 1000))
    assert torch.allclose(ent, torch.full((2,), math.log(1000)), atol=1e-4)
    assert torch.allclose(conf, torch.full((2,), 1e-3)) and torch.all(margin == 0)


@pytest.mark.parametrize("vocab,chunk", [(1, 4096), (2, 1), (45, 1), (45, 7), (1000, 333), (4099, 4096),
                                          (10001, 4096), (126464, 4096), (152064, 4096)])
def test_chunked_decision_algebra_equals_reference(vocab, chunk):
    """The merge algebra of fused.cu (per-chunk stats merged left to right) equals the definition."""
    g = torch.Generator().manual_seed(vocab + chunk)
    rows = 3 if vocab > 50000 else 5
    logits = 4 * torch.randn(rows, vocab, generator=g)
    if vocab > 10:
        logits[:, 3] = NEG_INF
        logits[1, : vocab // 2] = NEG_INF                      # whole chunks with nothing in them
        logits[2, 5] = logits[2, vocab - 1] = logits[2].max() + 2   # a tie across chunks
    got = reference.decision_by_chunks(logits, chunk)
    want = reference.decision(logits)
    assert torch.equal(got[1], want[1])
    for a, b in zip((got[0], got[2], got[3]), (want[0], want[2], want[3])):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_chunked_decision_of_bf16_logits():
    logits = (2 * torch.randn(4, 5000)).to(torch.bfloat16)       # many exact ties in bf16
    got, want = reference.decision_by_chunks(logits, 512), reference.decision(logits)
    assert torch.equal(got[1], want[1])
    assert torch.allclose(got[2], want[2], rtol=1e-4, atol=1e-6)


# ---- backend selection ----------------------------------------------------------------------------
def test_select_backend_on_cpu_is_the_reference():
    assert select_backend("auto", "cpu") is reference
    assert select_backend("torch", "cpu") is reference
    assert select_backend("torch", "cuda") is reference
    with pytest.raises(ValueError, match="needs a CUDA device"):
        select_backend("cupy", "cpu")
    with pytest.raises(ValueError, match="'auto', 'torch' or 'cupy'"):
        select_backend("triton", "cpu")


def test_select_backend_on_cuda_without_cupy_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)               # `import cupy` raises ImportError
    monkeypatch.delitem(sys.modules, "engine.kernels.cuda.ops", raising=False)
    monkeypatch.delattr(sys.modules["engine.kernels"], "cupy_ops", raising=False)
    assert select_backend("auto", "cuda") is reference
    with pytest.raises(ValueError, match="CuPy is unavailable"):
        select_backend("cupy", "cuda:0")


def test_cpu_engine_never_imports_cupy(tiny_block_model):
    code = ("import sys, engine\n"
            "from engine import Engine, InfillRequest\n"
            f"eng = Engine.load({str(tiny_block_model)!r}, device='cpu')\n"
            "eng.infill(InfillRequest(prefix='def f(x):\\n    return ', max_new_tokens=4))\n"
            "import engine.bench.steps, engine.kernels.cuda.graph\n"
            "assert eng.describe()['kernels'] == 'torch'\n"
            "assert eng.model.graphed_step is None\n"
            "print(sorted(m for m in sys.modules if m == 'cupy' or m.startswith('cupy.')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---- the CUDA source compiles (NVRTC, no GPU needed) ------------------------------------------------
def test_fused_cu_compiles_with_nvrtc():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import nvrtc_compile
    finally:
        sys.path.pop(0)
    lib = nvrtc_compile.find_nvrtc()
    if lib is None:
        pytest.skip("libnvrtc not installed (pip install nvidia-cuda-nvrtc-cu12)")
    source = (ROOT / "engine" / "kernels" / "cuda" / "fused.cu").read_text()
    names = nvrtc_compile.extern_kernels(source)
    assert {"rms_norm_f32", "rms_norm_bf16", "rope_f32", "rope_bf16", "swiglu_f32", "swiglu_bf16",
            "decision_partial_f32", "decision_partial_bf16", "decision_finish"} <= set(names)
    for arch in ("compute_80", "compute_90"):
        ok, log, ptx = nvrtc_compile.compile_ptx(source, arch, lib)
        assert ok, log
        assert "warning" not in log.lower(), log
        for name in names:
            assert f".entry {name}(" in ptx
