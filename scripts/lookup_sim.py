"""Replay lookup drafting on recorded greedy outputs: tokens per forward without the model.

    python scripts/lookup_sim.py record OUT.json [--limit 20] [--kind stdlib-line] [--seed 0]
    python scripts/lookup_sim.py replay OUT.json

`record` decodes bench decode's cases once with the default model, one token per pass, and
keeps each case's prompt ids, its lead (the prefix tokens) and its greedy tokens (line cases:
to the first newline). `replay` runs engine.drafting.lookup.PromptLookup through the decoder's loop on
them: a pass commits the drafts that equal the greedy tokens, then one more. Its counts are the
decoder's own (the verifier accepts exactly the drafts that equal its argmax), so a drafting
rule is measured in seconds: this is how DRAFTS_FOR_MATCH and the FIM lead were chosen. Pass
times come from `scripts/pass_cost.py`; `--cost 141,135,...` (ms for 1, 2, ... rows) adds an
estimated model time per suggestion.
"""
import argparse, json, sys
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.drafting.lookup import PromptLookup


def replay_case(case: dict, max_draft: int = 8, budget: int = 24, lead: bool = True, cost=None):
    """(forwards, drafted, accepted, ms) of one recorded case."""
    g = case["greedy"]
    d = PromptLookup(max_draft=max_draft)
    d.start(case["ctx"], lead=case["lead"] if lead else None, barriers=case["barriers"])
    done = forwards = drafted = accepted = 0
    ms = 0.0
    while done < len(g):
        drafts = d.draft(g[:done], budget - done - 1)
        n = 0
        while n < len(drafts) and done + n < len(g) - 1 and drafts[n] == g[done + n]:
            n += 1
        forwards, drafted, accepted = forwards + 1, drafted + len(drafts), accepted + n
        if cost:
            ms += cost[min(len(drafts) + 1, len(cost) - 1)]
        done += n + 1
    return forwards, drafted, accepted, ms


def ceiling(cases) -> float:
    """Tokens per forward if every pass after the first drafted the rest perfectly: a cold first
    pass can only draft from lookup (no drafter has seen a model state yet), so a case whose
    first-pass lookup drafts do not finish it takes at least two passes."""
    tokens = passes = 0
    for c in cases:
        g = c["greedy"]
        d = PromptLookup(max_draft=8)
        d.start(c["ctx"], lead=c["lead"], barriers=c["barriers"])
        drafts = d.draft([], c["budget"] - 1)
        n = 0
        while n < len(drafts) and n < len(g) - 1 and drafts[n] == g[n]:
            n += 1
        tokens, passes = tokens + len(g), passes + (1 if n + 1 >= len(g) else 2)
    return tokens / passes


def replay(cases, cost=None) -> None:
    for label, lead in (("lead = prefix (FIM)", True), ("lead = whole prompt", False)):
        t = f = dr = ac = ms = 0
        for c in cases:
            fw, d, a, m = replay_case(c, budget=c["budget"], lead=lead, cost=cost)
            t, f, dr, ac, ms = t + len(c["greedy"]), f + fw, dr + d, ac + a, ms + m
        extra = f"  est. model ms/suggestion {ms / len(cases):.0f}" if cost else ""
        print(f"{label:22s} tokens/forward {t / f:.3f}  forwards/suggestion {f / len(cases):.2f}  "
              f"accepted {ac / max(1, dr):.0%} of {dr / len(cases):.1f} drafts{extra}")
    print(f"ceiling with perfect drafts from the second pass on: {ceiling(cases):.2f} tokens/forward")


def record(out: Path, kind: str, limit: int, seed: int) -> None:
    import torch
    from engine import Engine
    from dllm_lsp.bench.decode import decode
    from dllm_lsp.bench.decode_cases import humaneval_cases, request_for, stdlib_cases
    from dllm_lsp.settings import Settings
    torch.set_num_threads(2)
    eng = Engine.load("default")
    cfg, settings = eng.cfg, Settings()
    cases = humaneval_cases(limit, seed) if kind == "humaneval-line" else stdlib_cases(kind, limit, eng.tokenizer, seed)
    rows = []
    for c in cases:
        req = replace(request_for(c, eng.tokenizer, settings, 8), drafting=False)
        ctx, lead = eng.decoder().prompt(req)
        run = decode(eng, req, c.line)
        rows.append({"name": c.name, "ctx": ctx, "lead": lead, "greedy": list(run.tokens), "budget": req.max_new_tokens,
                     "barriers": [t for t in (cfg.fim_prefix_id, cfg.fim_suffix_id, cfg.fim_middle_id) if t is not None]})
        print(c.name, repr(eng.tokenizer.decode(list(run.tokens))), file=sys.stderr, flush=True)
    out.write_text(json.dumps(rows))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["record", "replay"])
    p.add_argument("file", type=Path)
    p.add_argument("--kind", default="stdlib-line")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cost", default=None, help="ms of a pass over 1, 2, ... rows, comma-separated")
    a = p.parse_args()
    if a.what == "record":
        record(a.file, a.kind, a.limit, a.seed)
    else:
        cost = [0.0] + [float(x) for x in a.cost.split(",")] if a.cost else None
        replay(json.loads(a.file.read_text()), cost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
