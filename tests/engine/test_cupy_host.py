"""cupy_ops' host side on the CPU, with a fake CuPy that records launches instead of running them.

CuPy does not check RawKernel arguments against the kernel's C signature: a wrong count or a
Python int where the kernel wants a 32-bit int silently corrupts memory on the GPU. So each
recorded launch is checked against the signature parsed from fused.cu (count, pointer element
types per dtype variant, exact numpy scalar types), and the launch geometry against the data
(every element has a thread, every vocabulary chunk a block). What the kernels compute is
checked on the GPU box (tests/gpu); that the source compiles, by test_kernels_reference.
"""
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

CU = Path(__file__).resolve().parents[2] / "engine" / "kernels" / "cuda" / "fused.cu"
_spec = importlib.util.spec_from_file_location("cuda_emu", CU.parents[3] / "scripts" / "cuda_emu.py")
cuda_emu = importlib.util.module_from_spec(_spec)      # the CUDA emulator's stand-in cupy module
_spec.loader.exec_module(cuda_emu)
POINTER_DTYPES = {"float": torch.float32, "bf16_t": torch.int16, "int": torch.int32, "long long": torch.int64}
SCALAR_TYPES = {"int": np.int32, "long long": np.int64, "float": np.float32}


def kernel_signatures():
    """name -> [(kind 'ptr'|'scalar', base type)] from the extern "C" kernels of fused.cu."""
    src = CU.read_text()
    sigs = {}
    for name, params in re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', src):
        parsed = []
        for param in params.split(","):
            words = param.replace("__restrict__", "").replace("const", "").strip()
            base = re.sub(r"\s*\*?\s*\w+$", "", words.replace("*", " * ")).replace("*", "").strip()
            base = " ".join(base.split())
            parsed.append(("ptr" if "*" in param else "scalar", base))
        sigs[name] = parsed
    return sigs


class FakeArray:
    def __init__(self, t):
        self.tensor = t

    def views(self, t) -> bool:
        """Same memory as torch tensor t (DLPack hands over a detached view, not a copy)."""
        return self.tensor.data_ptr() == t.data_ptr() and self.tensor.numel() == t.numel()


class FakeKernel:
    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def __call__(self, grid, block, args):
        self.calls.append((self.name, grid, block, args))


@pytest.fixture()
def fake_ops(monkeypatch):
    calls, modules = [], []
    sigs = kernel_signatures()

    class RawModule:
        def __init__(self, code, **kwargs):
            assert code == CU.read_text()
            modules.append(self)

        def get_function(self, name):
            assert name in sigs, f"no extern \"C\" kernel {name} in fused.cu"
            return FakeKernel(name, calls)

    monkeypatch.setitem(sys.modules, "cupy", cuda_emu.cupy_module(RawModule, FakeArray))
    monkeypatch.delitem(sys.modules, "engine.kernels.cuda.ops", raising=False)
    ops = importlib.import_module("engine.kernels.cuda.ops")
    monkeypatch.setattr(ops, "_is_device_tensor", lambda t: True)
    monkeypatch.setattr(ops, "_torch_stream_ptr", lambda device: 0)
    yield ops, calls, sigs, modules
    sys.modules.pop("engine.kernels.cuda.ops", None)
    if hasattr(sys.modules["engine.kernels"], "cupy_ops"):
        delattr(sys.modules["engine.kernels"], "cupy_ops")      # the fake-backed module must not linger


def check_launch(call, sigs):
    name, grid, block, args = call
    params = sigs[name]
    assert len(args) == len(params), f"{name}: {len(args)} args for {len(params)} parameters"
    for i, ((kind, base), arg) in enumerate(zip(params, args)):
        if kind == "ptr":
            assert isinstance(arg, FakeArray), f"{name} arg {i}: expected an array"
            assert arg.tensor.dtype == POINTER_DTYPES[base], f"{name} arg {i}: {arg.tensor.dtype} for {base}*"
        else:
            assert type(arg) is SCALAR_TYPES[base], f"{name} arg {i}: {type(arg)} for {base}"
    assert all(isinstance(g, int) and g > 0 for g in grid) and len(grid) <= 3
    assert all(isinstance(b, int) and b > 0 for b in block) and block[0] % 32 == 0 and block[0] <= 1024
    return dict(zip(range(len(args)), args))


@pytest.mark.parametrize("dtype,suffix", [(torch.float32, "f32"), (torch.bfloat16, "bf16")])
def test_rms_norm_launch(fake_ops, dtype, suffix):
    ops, calls, sigs, _ = fake_ops
    x, res, w = torch.randn(1, 5, 96).to(dtype), torch.randn(1, 5, 96).to(dtype), torch.randn(96).to(dtype)
    out, new_res = ops.rms_norm(x, w, 1e-6, res)
    (call,) = calls
    assert call[0] == f"rms_norm_{suffix}" and call[1] == (5,)
    a = check_launch(call, sigs)
    assert a[3].views(out) and a[4].views(new_res) and int(a[5]) == 1 and int(a[6]) == 96
    assert out.shape == new_res.shape == x.shape and out.dtype == dtype
    calls.clear()
    out, new_res = ops.rms_norm(x, w, 1e-6)
    assert new_res is x and int(check_launch(calls[0], sigs)[5]) == 0


@pytest.mark.parametrize("dtype,suffix", [(torch.float32, "f32"), (torch.bfloat16, "bf16")])
def test_rope_launch_covers_every_pair_with_the_views_strides(fake_ops, dtype, suffix):
    ops, calls, sigs, _ = fake_ops
    b, t, hq, hk, d = 1, 7, 6, 2, 16
    q = torch.randn(b, t, hq, d).to(dtype).transpose(1, 2)          # [B,Hq,T,D] view, as the model has
    k = torch.randn(b, t, hk, d).to(dtype).transpose(1, 2)
    cos = sin = torch.randn(t, d)
    rq, rk = ops.apply_rope(q, k, cos, sin)
    assert rq is q and rk is k                                      # in place
    (call,) = calls
    a = check_launch(call, sigs)
    assert call[0] == f"rope_{suffix}"
    nq, nk = int(a[14]), int(a[15])
    assert nq == b * hq * t * d // 2 and nk == b * hk * t * d // 2
    assert call[1][0] * call[2][0] >= nq + nk
    assert [int(a[i]) for i in (8, 9, 10)] == list(q.stride()[:3])
    assert [int(a[i]) for i in (11, 12, 13)] == list(k.stride()[:3])
    assert (int(a[4]), int(a[5]), int(a[6]), int(a[7])) == (hq, hk, t, d // 2)


def test_rope_odd_layouts_fall_back_to_reference(fake_ops):
    ops, calls, _, _ = fake_ops
    q, k = torch.randn(1, 2, 3, 8)[..., ::2], torch.randn(1, 2, 3, 4)   # last dim not contiguous
    ops.apply_rope(q, k, torch.randn(3, 4), torch.randn(3, 4))
    assert calls == []


@pytest.mark.parametrize("dtype,suffix", [(torch.float32, "f32"), (torch.bfloat16, "bf16")])
def test_swiglu_launch(fake_ops, dtype, suffix):
    ops, calls, sigs, _ = fake_ops
    g, u = torch.randn(1, 3, 1000).to(dtype), torch.randn(1, 3, 1000).to(dtype)
    out = ops.swiglu(g, u)
    (call,) = calls
    a = check_launch(call, sigs)
    assert call[0] == f"swiglu_{suffix}" and int(a[3]) == 3000 and a[2].views(out)


@pytest.mark.parametrize("vocab", [1, 4095, 4096, 4097, 126464, 152064])
@pytest.mark.parametrize("dtype,suffix", [(torch.float32, "f32"), (torch.bfloat16, "bf16")])
def test_decision_launches_cover_the_vocabulary(fake_ops, vocab, dtype, suffix):
    ops, calls, sigs, _ = fake_ops
    logits = torch.zeros(5, vocab + 3).to(dtype)[:, :vocab]         # a row stride larger than the vocabulary
    conf, arg, ent, margin = ops.decision(logits)
    partial, finish = calls
    assert partial[0] == f"decision_partial_{suffix}" and finish[0] == "decision_finish"
    a, f = check_launch(partial, sigs), check_launch(finish, sigs)
    chunks, rows = partial[1]
    assert rows == 5 and chunks * int(a[3]) >= vocab > (chunks - 1) * int(a[3])
    assert int(a[1]) == vocab + 3 and int(a[2]) == vocab                # row stride, vocabulary
    assert a[4].tensor.numel() == 5 * chunks * 4 and a[5].tensor.numel() == 5 * chunks
    assert finish[1] == (5,) and finish[2] == (32,) and int(f[2]) == chunks
    assert f[0].views(a[4].tensor) and f[1].views(a[5].tensor)
    assert all(f[i].views(t) for i, t in zip((3, 4, 5, 6), (conf, arg, ent, margin)))
    assert arg.dtype == torch.int64 and conf.dtype == torch.float32


def test_unsupported_inputs_go_to_the_reference(fake_ops):
    ops, calls, _, _ = fake_ops
    half = torch.randn(2, 8).half()
    ops.swiglu(half, half)
    ops.rms_norm(torch.randn(2, 8), torch.randn(8).double(), 1e-6)     # mixed dtypes
    ops.decision(torch.randn(3, 4, 5))                                 # not [N, V]
    assert calls == []


def test_module_compiled_once_per_device(fake_ops):
    ops, calls, _, modules = fake_ops
    x = torch.randn(2, 8)
    for _ in range(3):
        ops.swiglu(x, x)
        ops.decision(x)
    assert len(modules) == 1 and len(calls) == 9


def test_outputs_can_be_preallocated(fake_ops):
    ops, calls, sigs, _ = fake_ops
    x = torch.randn(2, 8)
    out = torch.full_like(x, float("nan"))
    assert ops.swiglu(x, x, out=out) is out
    with pytest.raises(ValueError):
        ops.swiglu(x, x, out=torch.empty(3, 8))
    outs = (torch.empty(2), torch.empty(2, dtype=torch.int64), torch.empty(2), torch.empty(2))
    assert ops.decision(x, out=outs) == outs
