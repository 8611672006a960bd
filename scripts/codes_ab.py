"""Our kernel's products from int8 codes (a GGUF's own weights) against its fp16 ones, alternated
in one process: 24 matrices the size of the default's gate|up projection (9728 x 896, ~420 MB of
fp16, more than the L3 cache), random values, 2 threads, median of 7 (3 for long inputs).

    python scripts/codes_ab.py [ROWS ...]        (default: 1 2 3 4 5 6 7 9 12)
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import engine.kernels.cpu.gemm as cpu_gemm  # noqa: E402


def main(rows_list):
    if cpu_gemm.library() is None:
        sys.exit(f"our kernel cannot run here: {cpu_gemm.unavailable_reason()}")
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    layers, n, k = 24, 9728, 896
    fp16 = [cpu_gemm.pack(torch.randn(n, k, generator=gen) * 0.02) for _ in range(layers)]
    codes = [cpu_gemm.pack_codes(torch.randint(-16, 16, (n, k), generator=gen, dtype=torch.int8),
                                 torch.rand(n, k // 32, generator=gen) * 0.01, None) for _ in range(layers)]
    for rows in rows_list:
        x = torch.randn(rows, k)
        times = {"fp16": [], "codes": []}
        for _ in range(7 if rows < 50 else 3):
            t0 = time.perf_counter()
            for p in fp16:
                cpu_gemm.gemm(x, p, None)
            times["fp16"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for p in codes:
                cpu_gemm.codes_gemm(x, p, None)
            times["codes"].append(time.perf_counter() - t0)
        print(f"{rows:4d} rows  " + "  ".join(f"{name} {statistics.median(v) * 1e3:7.1f} ms" for name, v in times.items()),
              flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 2, 3, 4, 5, 6, 7, 9, 12])
