"""`dllm-lsp bench pass`: where one forward pass of a decode goes, by part, for 1..k rows.

A verify pass reads the last committed token and k drafts (k + 1 rows) against a cached
context of `--context` tokens. Per row count it times, median of `--reps` passes:

    total        model.hidden + model.head of the last row, no instrumentation (what a pass costs)
    products     the layers' weight products (q|k|v, o, gate|up, down), timed by forward hooks on
                 the product modules (the fused ones are hooked as wholes, so the fused path stays)
    attention    the attention of the rows over the cache (`attend`)
    output       the output projection of the k + 1 rows (model.head, 151,936 x 896 on Qwen 0.5B)
    rest         total - the three: embedding, norms, RoPE, SwiGLU, the KV writes and the Python between

The parts come from a second, instrumented run of the same pass (hooks cost a few microseconds
each; `instrumented` reports that run's total beside the clean one). `--ab avx2` also times each
pass with the CPU kernel's AVX-512 paths off (cpu_gemm.set_wide(False): the AVX2 kernels, the
same bits), `--ab two-blocks` with its 2-15-row AVX-512 kernels sweeping 2 blocks of outputs
instead of 4 (set_four_blocks(False), the same bits), each alternated with the default in one
process. One table, and one JSON object on the last line
with `--json`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Dict, List

from dllm_lsp.commands.serve import add_device_arguments

PARTS = ("products", "attention", "output", "rest")


class PartClock:
    """Accumulates milliseconds per part while `attached` to a model."""

    def __init__(self):
        self.ms: Dict[str, float] = {p: 0.0 for p in PARTS}
        self._depth = 0

    def timed(self, part: str, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ms[part] += (time.perf_counter() - t0) * 1000
        return wrapper

    @contextmanager
    def attached(self, model):
        """Hooks on the layers' product modules (not the SliceOf views of a fused product: a hook
        there would turn the fused product off) and a timed `attend` in the transformer module."""
        import engine.model.transformer as transformer  # noqa: PLC0415
        from engine.model.packed import SliceOf, is_linear, HalfLinear  # noqa: PLC0415
        handles = []
        starts: List[float] = []

        def pre(mod, inputs):
            self._depth += 1
            if self._depth == 1:
                starts.append(time.perf_counter())

        def post(mod, inputs, out):
            if self._depth == 1:
                self.ms["products"] += (time.perf_counter() - starts.pop()) * 1000
            self._depth -= 1

        for layer in model.layers:
            for mod in layer.modules():
                if isinstance(mod, SliceOf) or not (isinstance(mod, HalfLinear) or is_linear(mod)):
                    continue
                handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
        original = transformer.attend
        transformer.attend = self.timed("attention", original)
        try:
            yield self
        finally:
            transformer.attend = original
            for h in handles:
                h.remove()


AB_SWITCHES = {"avx2": "set_wide", "two-blocks": "set_four_blocks"}   # --ab NAME: the kernel switch it turns off


def measure(engine, rows: int, context: int, reps: int, ab: str = "") -> dict:
    """One row count: the clean total's median and the instrumented parts' medians."""
    import torch  # noqa: PLC0415
    from engine.model.transformer import causal_visibility  # noqa: PLC0415
    model = engine.model
    gen = torch.Generator().manual_seed(rows)
    vocab = min(engine.cfg.vocab_size, 30000)
    with torch.inference_mode():
        _, kv = model.hidden(torch.randint(0, vocab, (1, context), generator=gen), torch.arange(context), None,
                             causal_visibility(context, 0))
        ids = torch.randint(0, vocab, (1, rows), generator=gen)
        positions = torch.arange(context, context + rows)
        seen = causal_visibility(rows, context)

        def one_pass(clock=None) -> float:
            t0 = time.perf_counter()
            hidden, _ = model.hidden(ids, positions, kv, seen)                             # [1, rows, H]
            t1 = time.perf_counter()
            model.head(hidden)                                                           # [1, rows, V]
            t2 = time.perf_counter()
            if clock is not None:
                clock.ms["output"] += (t2 - t1) * 1000
            return (t2 - t0) * 1000

        for _ in range(2):
            one_pass()
        clean = [one_pass() for _ in range(reps)]
        other = []
        if ab:
            from engine.kernels.cpu import gemm  # noqa: PLC0415
            switch = getattr(gemm, AB_SWITCHES[ab])
            for _ in range(reps):             # alternated: the other kernels, then the default ones
                switch(False)
                other.append(one_pass())
                switch(True)
                clean.append(one_pass())
        parts: Dict[str, List[float]] = {p: [] for p in PARTS}
        instrumented = []
        for _ in range(reps):
            clock = PartClock()
            with clock.attached(model):
                total = one_pass(clock)
            clock.ms["rest"] = total - clock.ms["products"] - clock.ms["attention"] - clock.ms["output"]
            instrumented.append(total)
            for p in PARTS:
                parts[p].append(clock.ms[p])
    out = {"rows": rows, "total_ms": round(statistics.median(clean), 2),
           "instrumented_ms": round(statistics.median(instrumented), 2)}
    out.update({f"{p}_ms": round(statistics.median(v), 2) for p, v in parts.items()})
    if other:
        out["ab"], out["ab_total_ms"] = ab, round(statistics.median(other), 2)
    return out


def table(results: List[dict]) -> str:
    lines = [f"{'rows':>4} {'total ms':>9} {'products':>9} {'attention':>10} {'output':>7} {'rest':>7} {'instr.':>7}"
             + "".join(f" {r['ab'] + ' ms':>10}" for r in results[:1] if "ab" in r)]
    for r in results:
        share = {p: r[f"{p}_ms"] / r["instrumented_ms"] if r["instrumented_ms"] else 0 for p in PARTS}
        lines.append(f"{r['rows']:>4} {r['total_ms']:>9.1f} "
                     + " ".join(f"{r[f'{p}_ms']:>{w}.1f}" for p, w in zip(PARTS, (9, 10, 7, 7)))
                     + f" {r['instrumented_ms']:>7.1f}"
                     + (f" {r['ab_total_ms']:>10.1f}" if "ab" in r else ""))
        lines.append("     " + " " * 9 + " ".join(f"{share[p]:>{w}.0%}" for p, w in zip(PARTS, (10, 10, 7, 7))))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="model ('default', a .gguf file, a folder)")
    p.add_argument("--rows", default="1,3,5,9", help="rows per pass, comma-separated (default 1,3,5,9)")
    p.add_argument("--context", type=int, default=600, help="cached context tokens (default 600)")
    p.add_argument("--reps", type=int, default=9, help="passes per row count (default 9)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    p.add_argument("--ab", choices=sorted(AB_SWITCHES), default="",
                   help="also time each pass with a CPU kernel path off, alternated in one process: avx2 (the "
                        "AVX-512 paths off), two-blocks (2-15 rows sweep 2 blocks of outputs, not 4)")
    add_device_arguments(p)


def run(args) -> int:
    import platform  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from engine.engine import Engine  # noqa: PLC0415
    from dllm_lsp.settings import Settings  # noqa: PLC0415
    torch.set_num_threads(replace(Settings(), threads=max(0, args.threads)).engine_threads())
    engine = Engine.load(args.model, device=args.device, dtype=args.dtype)
    rows = [int(r) for r in args.rows.split(",") if r.strip()]
    results = [measure(engine, r, args.context, args.reps, args.ab) for r in rows]
    desc = engine.describe()
    print(f"{engine.name}: {desc['weights']}, kernels {desc['kernels']}, {torch.get_num_threads()} threads, "
          f"{args.context} cached context tokens, median of {args.reps} ({platform.processor() or platform.machine()})")
    print(table(results))
    if args.json:
        print(json.dumps({"model": engine.name, "weights": desc["weights"], "kernels": desc["kernels"],
                          "threads": torch.get_num_threads(), "context": args.context, "reps": args.reps, "passes": results}))
    return 0
