"""Warm decodes only: draft settings compared on bench decode's stdlib-line cases.

    python scripts/draft_settings.py [N_CASES] [SEED]

Each case is prefilled once; every variant then decodes it warm twice (the first round warms
every path and is not counted). Prints tokens per forward, warm p50 / mean and how many texts
equal the first variant's. Measured the draft head's thresholds (docs/models.md).
"""
import statistics, sys, torch
from dataclasses import replace
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from engine import Engine
import dllm_lsp.bench.decode as bd
import dllm_lsp.bench.decode_cases as cases
from dllm_lsp.settings import Settings
torch.set_num_threads(2)
e = Engine.load("default", device="cpu", dtype="auto")
head = bd.load_drafters(e, ["auto"])[0]
n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
cases = cases.stdlib_cases("stdlib-line", n, e.tokenizer, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
variants = [("one-per-pass", {"drafting": False}, None, None),
            ("lookup max8", {"draft_with": "lookup"}, None, None),
            ("lookup max4", {"draft_with": "lookup", "max_draft_tokens": 4}, None, None),
            ("lookup+head 0/.3", {"draft_with": "auto"}, (0.0, 0.3), None),
            ("lookup+head .3/.3", {"draft_with": "auto"}, (0.3, 0.3), None),
            ("lookup+head .5/.5", {"draft_with": "auto"}, (0.5, 0.5), None),
            ("lookup4+head .3/.3", {"draft_with": "auto", "max_draft_tokens": 4}, (0.3, 0.3), None)]
res = {v[0]: {"ms": [], "fw": 0, "tok": 0, "same": 0} for v in variants}
for c in cases:
    req = cases.request_for(c, e.tokenizer, Settings(), 8)
    e.use_drafter(None); e.context_cache.clear(); e.warm(req)
    ref = None
    for rep in range(2):
        for name, ch, th, _ in variants:
            e.use_drafter(head if th else None)
            if th:
                head.first_min_prob, head.min_prob = th
            out = bd.decode(e, replace(req, **ch), c.line)
            if rep == 0:
                continue                     # first round: warms every path, not counted
            r = res[name]
            r["ms"].append(out.ms); r["fw"] += out.forwards; r["tok"] += len(out.tokens)
            ref = ref or out.tokens
            r["same"] += out.tokens == ref
for name, r in res.items():
    print(f"{name:20s} tok/fwd {r['tok'] / r['fw']:.3f}  warm p50 {statistics.median(r['ms']):7.1f}  mean {statistics.mean(r['ms']):7.1f} ms  same {r['same']}/{len(r['ms'])}", flush=True)
