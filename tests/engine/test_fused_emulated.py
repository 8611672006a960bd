"""fused.cu's kernels executed on the CPU by a CUDA emulator, through cupy_ops' real host code.

scripts/cuda_emu.py compiles the unchanged CUDA C with g++ against cuda_emu.h (blocks of OS
threads, barriers for __syncthreads and warp shuffles) and stands in for CuPy. The GPU
checks of tests/gpu/checks.py then run on CPU tensors at small shapes: indexing, strides,
reductions, the decision merge, bf16 rounding and the poisoned-output checks are exercised
here; speed, NVRTC specifics and DLPack are left for the GPU box.
"""
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.gpu import checks  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed (needed by the CUDA emulator)")


@pytest.fixture(scope="module")
def emulated():
    sys.path.insert(0, str(ROOT / "scripts"))
    saved = sys.modules.get("cupy"), sys.modules.get("engine.kernels.cuda.ops")
    try:
        import cuda_emu
        ops = cuda_emu.emulated_cupy_ops()
        yield ops
    finally:
        sys.path.remove(str(ROOT / "scripts"))
        for name, mod in zip(("cupy", "engine.kernels.cuda.ops"), saved):
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
        if saved[1] is None and hasattr(sys.modules["engine.kernels"], "cupy_ops"):
            delattr(sys.modules["engine.kernels"], "cupy_ops")     # the fake-backed module must not linger


@pytest.fixture()
def on_emulator(emulated, monkeypatch):
    monkeypatch.setattr(checks, "DEVICE", "cpu")
    monkeypatch.setattr(checks, "DRY", True)
    monkeypatch.setattr(checks, "FUSED_OVERRIDE", emulated)
    return emulated


DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,hidden,residual", [(1, 64, True), (3, 1000, True), (2, 96, False), (2, 4100, True)])
def test_rms_norm(on_emulator, dtype, rows, hidden, residual):
    checks.check_rms_norm(dtype, rows, hidden, residual)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seq,heads,kv,d,any_tables", [(1, 2, 2, 8, False), (5, 4, 2, 16, False),
                                                       (3, 6, 1, 64, False), (4, 3, 1, 16, True)])
def test_rope(on_emulator, dtype, seq, heads, kv, d, any_tables):
    checks.check_rope(dtype, seq, heads, kv, d, any_tables=any_tables)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,width", [(1, 1), (3, 1001), (2, 4096)])
def test_swiglu(on_emulator, dtype, rows, width):
    checks.check_swiglu(dtype, rows, width)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,vocab,scale", [(2, 1, 3.0), (3, 2, 3.0), (2, 4095, 3.0), (2, 4097, 3.0),
                                              (3, 9000, 3.0), (2, 5000, 30.0)])
def test_decision(on_emulator, dtype, rows, vocab, scale):
    checks.check_decision(dtype, rows, vocab, scale=scale)


def test_decision_of_a_row_without_finite_logits_is_nan(on_emulator):
    logits = torch.full((2, 10), float("-inf"))
    logits[1, 4] = 0.0
    conf, arg, ent, margin = on_emulator.decision(logits)
    assert torch.isnan(conf[0]) and arg[0] == 0
    assert conf[1] == 1.0 and arg[1] == 4 and ent[1] == 0.0 and margin[1] == 1.0


def test_model_layer_with_emulated_kernels(on_emulator):
    """A whole (tiny) model's logits with the emulated kernels equal the torch reference's."""
    from engine.testing.random_weights import random_model
    import engine.kernels.reference as reference
    cfg = checks._small_config(300).with_(hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16,
                                          intermediate_size=96, num_layers=2)
    model = random_model(cfg, "cpu", torch.float32, kernels="torch", std=0.1)
    ids = torch.randint(0, 300, (1, 6))
    want = model.logits(ids)
    model.kernels = on_emulator
    try:
        got = model.logits(ids)
    finally:
        model.kernels = reference
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
