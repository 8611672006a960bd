"""Compile engine/kernels/*.cu to PTX with NVRTC, without a GPU: a CPU-side check of the CUDA C.

NVRTC (libnvrtc) compiles for a virtual architecture without touching a device, so the
kernels' syntax, types and intrinsics are checked here exactly as CuPy will compile them
on the GPU box (same compiler, no extra headers). libnvrtc is found in the pip package
`nvidia-cuda-nvrtc-cu12` (or `nvidia-cuda-nvrtc`), $DLLM_NVRTC_LIB, or the system.

    python scripts/nvrtc_compile.py [--arch compute_80 --arch compute_90]
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Tuple

KERNEL_DIR = Path(__file__).resolve().parent.parent / "engine" / "kernels" / "cuda"


def find_nvrtc() -> Optional[str]:
    candidates = [os.environ.get("DLLM_NVRTC_LIB", "")]
    for pkg in ("nvidia.cuda_nvrtc", "nvidia.cu13", "nvidia.cuda_nvrtc.cu13"):
        try:
            mod = __import__(pkg, fromlist=["__path__"])
        except ImportError:
            continue
        for base in getattr(mod, "__path__", []):
            candidates += sorted(glob.glob(os.path.join(base, "lib", "libnvrtc.so*")))
    candidates += sorted(glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*")) + ["libnvrtc.so"]
    for path in candidates:
        if not path or "builtins" in path or ".alt." in path:
            continue
        try:
            ctypes.CDLL(path)
            return path
        except OSError:
            continue
    return None


def compile_ptx(source: str, arch: str = "compute_90", lib: Optional[str] = None,
                name: str = "fused.cu") -> Tuple[bool, str, str]:
    """(ok, compiler log, ptx) for `source` compiled for virtual architecture `arch`."""
    nvrtc = ctypes.CDLL(lib or find_nvrtc())
    prog = ctypes.c_void_p()
    rc = nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    if rc != 0:
        return False, f"nvrtcCreateProgram failed ({rc})", ""
    try:
        opts = [f"--gpu-architecture={arch}".encode()]
        argv = (ctypes.c_char_p * len(opts))(*opts)
        rc = nvrtc.nvrtcCompileProgram(prog, len(opts), argv)
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        if rc != 0:
            return False, log, ""
        nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetPTX(prog, ptx)
        return True, log, ptx.value.decode(errors="replace")
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))


def extern_kernels(source: str) -> List[str]:
    """Names of the extern "C" __global__ functions in a .cu source."""
    return re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(', source)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", help="virtual architecture(s), default compute_80 and compute_90")
    args = parser.parse_args(argv)
    lib = find_nvrtc()
    if lib is None:
        print("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12)", file=sys.stderr)
        return 2
    failed = 0
    for path in sorted(KERNEL_DIR.glob("*.cu")):
        source = path.read_text()
        for arch in args.arch or ["compute_80", "compute_90"]:
            ok, log, ptx = compile_ptx(source, arch, lib, path.name)
            missing = [k for k in extern_kernels(source) if f".entry {k}(" not in ptx]
            status = "ok" if ok and not missing else "FAILED"
            failed += status != "ok"
            print(f"{path.name} {arch}: {status}" + (f" (missing entries {missing})" if missing else ""))
            if log.strip():
                print(log)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
