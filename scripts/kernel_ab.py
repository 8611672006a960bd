"""Pass cost of the default model: our fp16 CPU kernel (engine/kernels/cpu/gemm.py) against fbgemm.

    python scripts/kernel_ab.py

Both weight forms are loaded in one process and their passes alternated (600 cached tokens, the
output projection of the last row, 2 threads, median of 11), then the 24 layers' products alone;
the table of the kernel in docs/benchmarks.md came from this loop. Needs the pulled default and the kernel.
"""
import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from engine import Engine
import engine.kernels.cpu.gemm as cpu_gemm
from engine.model.transformer import causal_visibility
torch.set_num_threads(2)
ours = Engine.load("default", device="cpu", dtype="auto").model
lib = cpu_gemm.library
cpu_gemm.library = lambda: None
fb = Engine.load("default", device="cpu", dtype="auto").model
cpu_gemm.library = lib
S = 600
res = {}
with torch.inference_mode():
    kvs = {n: m.hidden(torch.randint(0, 1000, (1, S)), torch.arange(S), None, causal_visibility(S, 0))[1] for n, m in (("ours", ours), ("fbgemm", fb))}
    models = {"ours": ours, "fbgemm": fb}
    for rep in range(11):
        for T in (1, 2, 3, 5, 8):
            x = torch.randint(0, 1000, (1, T))
            for n, m in models.items():
                t0 = time.perf_counter()
                h, _ = m.hidden(x, torch.arange(S, S + T), kvs[n], causal_visibility(T, S)); m.head(h[:, -1:])
                res.setdefault((T, n), []).append((time.perf_counter() - t0) * 1e3)
    for T in (1, 2, 3, 5, 8):
        a, b = sorted(res[(T, "ours")])[5], sorted(res[(T, "fbgemm")])[5]
        print(f"rows {T}: ours {a:.1f} ms, fbgemm {b:.1f} ms ({a / b:.2f})")
    # products only, the real weights: layer 0..23 through HalfLinear
    for T in (1, 3, 5):
        xs = torch.randn(T, 896)
        for n, m in models.items():
            ts = []
            for _ in range(7):
                t0 = time.perf_counter()
                for layer in m.layers:
                    layer.self_attn.qkv(xs); layer.self_attn.o_proj(xs); g = layer.mlp.gate_up(xs); layer.mlp.down_proj(torch.randn(T, 4864))
                ts.append((time.perf_counter() - t0) * 1e3)
            print(f"products rows {T} {n}: {sorted(ts)[3]:.1f} ms")
