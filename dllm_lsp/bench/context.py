"""`dllm-lsp bench context`: what the prefix and suffix budgets cost per keystroke, and per cold start.

With the prefix-suffix-middle prompt of an AR FIM model the context cache survives a keystroke
only up to the cursor: the tokens after it (the end of the prefix, the whole suffix window and
`<|fim_middle|>`) are recomputed. For each (prefix budget, suffix budget) pair and each sampled
cursor position (a line of a real file cut after its first token, as in `bench lsp`):

  cold       the whole context prefilled from nothing (a file just opened, no warm-up);
  keystroke  the context is cached (as after warm-up), the user types one character, and the
             first forward pass of the next request runs: what it costs to recompute.

Both are the time of the engine's prefill to the first logits, measured with the server's own
context windows (`dllm_lsp.core.context.windows`) and the engine's exact ContextCache; the suggestion
itself is not decoded (its cost does not depend on the budgets). Quality per budget comes from
`dllm-lsp eval heldout --prefix-tokens P --suffix-tokens S` (the same cursor sampling).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="source files to sample cursor positions from")
    parser.add_argument("--model", default="default", help="model ('default', a .gguf file, a folder)")
    parser.add_argument("--prefix", default="256,512,1024", help="prefix budgets in tokens, comma-separated")
    parser.add_argument("--suffix", default="0,64,128,256", help="suffix budgets in tokens, comma-separated")
    parser.add_argument("--positions", type=int, default=12, help="cursor positions sampled over all files")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the position sample")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")


def positions(texts: Sequence[Tuple[str, str]], n: int, seed: int) -> List[Tuple[str, int]]:
    """(text, cursor offset) pairs: a non-blank line, cursor after its first word."""
    rng = random.Random(seed)
    out = []
    candidates = []
    for name, text in texts:
        start = 0
        for line in text.split("\n"):
            stripped = line.lstrip()
            if len(stripped) > 8 and not stripped.startswith("#"):
                first = len(line) - len(stripped) + max(1, len(stripped.split(" ")[0]))
                candidates.append((name, start + first))
            start += len(line) + 1
    by_name = dict(texts)
    for name, offset in rng.sample(candidates, min(n, len(candidates))):
        out.append((by_name[name], offset))
    return out


def measure(engine, text: str, offset: int, prefix_budget: int, suffix_budget: int) -> Tuple[float, float, int]:
    """(cold ms, keystroke ms, context tokens) for one position and one budget pair."""
    from engine.api import InfillRequest
    from dllm_lsp.core.context import token_counter, windows
    count = token_counter(engine.tokenizer)

    def request(doc: str, cursor: int) -> InfillRequest:
        prefix, suffix = windows(doc, cursor, prefix_budget, suffix_budget, count)
        return InfillRequest(prefix=prefix, suffix=suffix, max_new_tokens=1)

    req = request(text, offset)
    engine.context_cache.clear()
    t0 = time.perf_counter()
    engine.warm(req, chunk=1 << 30)
    cold = (time.perf_counter() - t0) * 1000
    typed = text[:offset] + "x" + text[offset:]
    req2 = request(typed, offset + 1)
    t1 = time.perf_counter()
    engine.warm(req2, chunk=1 << 30)
    keystroke = (time.perf_counter() - t1) * 1000
    return cold, keystroke, len(engine.decoder().context_ids(req))


def run(args) -> int:
    import torch
    from engine import Engine
    torch.set_num_threads(max(1, args.threads))
    engine = Engine.load(args.model)
    print(f"model {args.model} loaded in {engine.load_ms:.0f} ms ({engine.describe()['dtype']}, "
          f"{args.threads} threads)", flush=True)
    if engine.cfg.attention != "causal":
        print("bench context measures AR FIM models (prefix-suffix-middle); this model is "
              f"{engine.cfg.family}", flush=True)
        return 2
    texts = [(str(p), p.read_text(encoding="utf-8", errors="replace")) for p in args.files]
    cursor = positions(texts, args.positions, args.seed)
    measure(engine, *cursor[0], 64, 16)                       # first-call overheads, not counted
    rows: Dict[str, dict] = {}
    print(f"{'prefix':>7} {'suffix':>7} {'tokens':>7} {'cold p50':>10} {'cold p95':>10} {'key p50':>10} {'key p95':>10}")
    for p in [int(v) for v in args.prefix.split(",")]:
        for s in [int(v) for v in args.suffix.split(",")]:
            cold, key, toks = zip(*(measure(engine, t, o, p, s) for t, o in cursor))
            q = lambda v, k: statistics.quantiles(v, n=100, method="inclusive")[k - 1] if len(v) > 1 else v[0]
            row = {"prefix": p, "suffix": s, "tokens_mean": round(statistics.mean(toks), 1),
                   "cold_p50_ms": round(q(cold, 50), 1), "cold_p95_ms": round(q(cold, 95), 1),
                   "keystroke_p50_ms": round(q(key, 50), 1), "keystroke_p95_ms": round(q(key, 95), 1)}
            rows[f"{p}/{s}"] = row
            print(f"{p:>7} {s:>7} {row['tokens_mean']:>7} {row['cold_p50_ms']:>10} {row['cold_p95_ms']:>10} "
                  f"{row['keystroke_p50_ms']:>10} {row['keystroke_p95_ms']:>10}", flush=True)
    if args.json:
        print(json.dumps({"model": args.model, "positions": len(cursor), "threads": args.threads,
                          "load_ms": round(engine.load_ms), "rows": rows}))
    return 0
