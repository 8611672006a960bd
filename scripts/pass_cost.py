"""Forward-pass time of the default model against the rows in the pass (600 context tokens cached).

    python scripts/pass_cost.py [THREADS] [ROWS,ROWS,...]

Prints the median of 9 passes per row count and its ratio to a one-row pass: what a verify
pass with k drafts costs against a plain decoding step (docs/benchmarks.md, "Decode").
"""
import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from engine import Engine
from engine.model.transformer import causal_visibility
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
e = Engine.load("default", device="cpu", dtype="auto")
m = e.model
S = 600
with torch.inference_mode():
    _, kv = m.hidden(torch.randint(0, 1000, (1, S)), torch.arange(S), None, causal_visibility(S, 0))
    def one(T):
        x = torch.randint(0, 1000, (1, T))
        t0 = time.perf_counter()
        m(x, torch.arange(S, S + T), kv, causal_visibility(T, S), 0)
        return (time.perf_counter() - t0) * 1000
    for T in (1, 2, 9):
        one(T)
    base = None
    for T in [int(a) for a in sys.argv[2].split(",")] if len(sys.argv) > 2 else (1, 2, 3, 4, 5, 7, 9, 13):
        ts = sorted(one(T) for _ in range(9))
        med = ts[4]
        base = base or med
        print(f"rows {T:2d}: median {med:6.1f} ms  ({med / base:.2f}x one row)", flush=True)
