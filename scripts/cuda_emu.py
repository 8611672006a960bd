"""Run engine/kernels/cuda/fused.cu on the CPU: g++ + cuda_emu.h, behind a fake `cupy` module.

    ops = emulated_cupy_ops()      # engine.kernels.cuda.ops, its launches executed by the emulator

The .cu source is compiled as C++ together with generated `emu_<kernel>(gx, gy, bx, args...)`
wrappers; the fake cupy's RawModule hands out kernels that call them through ctypes with
the tensors' data pointers. So cupy_ops' host code and the CUDA C kernels run unchanged on
CPU tensors and can be compared with the torch reference (tests/engine/test_fused_emulated.py).
Slow (one OS thread per CUDA thread): small shapes only.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
CU = HERE.parent / "engine" / "kernels" / "cuda" / "fused.cu"
C_TYPES = {"int": ctypes.c_int, "long long": ctypes.c_longlong, "float": ctypes.c_float}


def signatures(source: str) -> dict:
    """name -> [(param text, ctypes type)] for the extern "C" kernels."""
    out = {}
    for name, params in re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', source):
        parsed = []
        for p in (x.strip() for x in params.split(",")):
            if "*" in p:
                parsed.append((p, ctypes.c_void_p))
            else:
                base = " ".join(p.split()[:-1])
                parsed.append((p, C_TYPES[base]))
        out[name] = parsed
    return out


def build() -> ctypes.CDLL:
    if shutil.which("g++") is None:
        raise RuntimeError("g++ not found")
    source = CU.read_text()
    sigs = signatures(source)
    wrappers = []
    for name, params in sigs.items():
        decl = ", ".join(p for p, _ in params)
        args = ", ".join(p.split()[-1].lstrip("*") for p, _ in params)
        wrappers.append(f'extern "C" void emu_{name}(unsigned gx, unsigned gy, unsigned bx, {decl}) '
                        f'{{ emu_launch(gx, gy, bx, [=] {{ {name}({args}); }}); }}')
    full = '#include "cuda_emu.h"\n' + source + "\n" + "\n".join(wrappers) + "\n"
    digest = hashlib.sha256((full + (HERE / "cuda_emu.h").read_text()).encode()).hexdigest()[:16]
    lib_path = Path(tempfile.gettempdir()) / f"dllm_cuda_emu_{digest}.so"
    if not lib_path.is_file():
        tmp = lib_path.with_suffix(f".{id(full)}.tmp")
        subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-I", str(HERE),
                        "-o", str(tmp), "-x", "c++", "-"], input=full, text=True, check=True, capture_output=True)
        tmp.replace(lib_path)
    lib = ctypes.CDLL(str(lib_path))
    for name, params in sigs.items():
        fn = getattr(lib, f"emu_{name}")
        fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_uint] + [t for _, t in params]
        fn.restype = None
    return lib


class _Array:
    def __init__(self, t):
        self.tensor = t


def fake_cupy(lib) -> types.ModuleType:
    class Kernel:
        def __init__(self, name):
            self.fn = getattr(lib, f"emu_{name}")

        def __call__(self, grid, block, args):
            grid = tuple(grid) + (1,) * (2 - len(grid))
            conv = [a.tensor.data_ptr() if isinstance(a, _Array) else a.item() for a in args]
            self.fn(grid[0], grid[1], block[0], *conv)

    class RawModule:
        def __init__(self, code, **kwargs):
            assert code == CU.read_text()

        def get_function(self, name):
            return Kernel(name)

    return cupy_module(RawModule, _Array)


class _NoContext:
    """cupy.cuda.Device / ExternalStream stand-in: a context manager that does nothing."""

    def __init__(self, *a, **k):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def cupy_module(raw_module, from_dlpack) -> types.ModuleType:
    """A stand-in `cupy` module with what engine/kernels/cuda/ops.py uses: RawModule, from_dlpack
    and no-op device/stream contexts (shared with tests/engine/test_cupy_host.py)."""
    mod = types.ModuleType("cupy")
    mod.RawModule = raw_module
    mod.from_dlpack = from_dlpack
    mod.cuda = types.SimpleNamespace(Device=_NoContext, ExternalStream=_NoContext)
    return mod


def emulated_cupy_ops():
    """engine.kernels.cuda.ops imported against the emulator (sys.modules['cupy'] is replaced)."""
    sys.modules["cupy"] = fake_cupy(build())
    sys.modules.pop("engine.kernels.cuda.ops", None)
    ops = importlib.import_module("engine.kernels.cuda.ops")
    ops._is_device_tensor = lambda t: t.device.type == "cpu"
    ops._torch_stream_ptr = lambda device: 0
    return ops
