"""`dllm-lsp eval realcode`: exact match on holes cut from third-party code, through the server's pipeline.

    dllm-lsp pull realcode                                  fetch the pinned sources (once)
    dllm-lsp eval realcode [--split reporting] [--limit N] [--model M] [--kinds line,rest,...]

Each hole (realcode_cases.py) is completed as a keystroke in the server completes it: plan
(mode, context windows, the repository context with the hole's package folder as the
workspace, request) -> decode_plan (Engine.stream with the server's early stop) ->
post-processing, each hole a fresh document (the context cache cleared). Beside it, on the same
context windows, the same model's plain greedy text: for a one-line kind its first line, for a
block all of it up to the end-of-text token, with no post-processing, no mode decision and no
stop rule (the model's own ceiling under our windows). The greedy run drafts too: the text is
one token per pass greedy decoding either way (tests/engine), only faster.

Reported per kind and over all: exact match and edit similarity of both, the holes where greedy
is right and the server is not (`lost`, the pipeline's losses; `--show-lost N` prints them), and
the server's p50 latency (cold: each hole a fresh document). A table, and one JSON object on the
last line with `--json`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from dllm_lsp.bench import realcode_cases as cases
from dllm_lsp.bench import realcode_sources as sources
from dllm_lsp.commands.serve import add_device_arguments

GREEDY_TOKENS = {"block": 160}      # the plain-greedy budget per kind (others: LINE_TOKENS)
LINE_TOKENS = 64


@dataclass
class Scored:
    hole: cases.Hole
    server: str
    greedy: str
    ms: float

    @property
    def server_exact(self) -> bool:
        return cases.exact(self.server, self.hole.expected)

    @property
    def greedy_exact(self) -> bool:
        return cases.exact(self.greedy, self.hole.expected)


def module_texts(split: str, root=None) -> Dict[str, List[Tuple[str, str]]]:
    """package -> (dotted module name, text) of its files."""
    return {pkg: [(module, (folder / rel).read_text(encoding="utf-8", errors="replace")) for module, rel in mods.items()]
            for pkg, (folder, mods) in module_files(split, root).items()}


def module_files(split: str, root=None) -> Dict[str, Tuple[Path, Dict[str, str]]]:
    """package -> (its folder, dotted module name -> path under the folder): the workspace an
    editor would have open around each hole."""
    base = sources.sources_root(root)
    out = {}
    for pkg, paths in sources.source_files(split, root).items():
        folder = base / next(p.folder_name for p in sources.PACKAGES if p.name == pkg)
        mods = {}
        for path in paths:
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path.relative_to(folder).as_posix()
        out[pkg] = (folder, mods)
    return out


def repo_view(hole: cases.Hole, files, engine):
    """The hole's document in its package's folder as an editor's workspace: the repository
    context reads the package's other files from the disk and the holed document itself."""
    from dllm_lsp.core.plan import RepoView  # noqa: PLC0415
    from dllm_lsp.runtime.workspace import Workspace  # noqa: PLC0415
    pkg, rest = hole.hole_id.split("/", 1)
    folder, mods = files[pkg]
    rel = mods[rest.split(":", 1)[0]]
    workspace = _workspaces.setdefault(str(folder), Workspace([str(folder)]))
    uri = (folder / rel).as_uri()
    return RepoView(name=folder.name, path=rel, read=workspace.reader(uri, {uri: hole.document}),
                    layout=engine.reads_repo_layout)


_workspaces: Dict[str, object] = {}


def greedy_answer(engine, hole: cases.Hole, settings, repo=None) -> str:
    """The model's plain greedy text on the server's context windows (see the module docstring).
    It runs right after the server's answer to the same hole, whose context it shares: the
    exact context cache spares its prefill (the text is the same either way)."""
    from dllm_lsp.core import context  # noqa: PLC0415
    count = context.token_counter(engine.tokenizer)
    prefix, suffix = context.windows(hole.document, hole.offset, settings.prefix_tokens, settings.suffix_tokens, count)
    budget = GREEDY_TOKENS.get(hole.kind, LINE_TOKENS)
    req = settings.infill_request(prefix, suffix, max_new_tokens=budget, repo=repo)
    if hole.kind == "block":
        return engine.infill(req).text
    stop = threading.Event()                 # a one-line kind keeps the first line: stop once it has ended
    last = None
    for last in engine.stream(req, stop):
        if last.result is None and "\n" in last.stable:
            stop.set()
    return cases.first_line(last.result.text)         # a stop keeps the committed tokens


def server_answer(engine, hole: cases.Hole, settings, repo=None):
    """The hole completed as the server completes a keystroke's request in a fresh document:
    plan (mode, windows, repository context, request), decode_plan (the server's early stop),
    post-processing -> (text, the request's RepoContext or None)."""
    from dllm_lsp.core.plan import plan_completion  # noqa: PLC0415
    from dllm_lsp.runtime.host import decode_plan  # noqa: PLC0415
    plan = plan_completion(hole.document, hole.offset, "python", settings, tokenizer=engine.tokenizer, repo=repo)
    if plan is None:
        return "", None
    engine.context_cache.clear()
    return decode_plan(engine, plan).text, plan.request.repo


def score(engine, holes: Sequence[cases.Hole], settings, progress=None, files=None) -> List[Scored]:
    """Each hole through the server's pipeline and plain greedy; `files` (module_files) gives
    each hole its package as the workspace (the repository context), None: the file alone."""
    out = []
    for k, hole in enumerate(holes):
        repo = repo_view(hole, files, engine) if files is not None else None
        t0 = time.perf_counter()
        answer, repo_context = server_answer(engine, hole, settings, repo)
        ms = (time.perf_counter() - t0) * 1000
        out.append(Scored(hole, answer, greedy_answer(engine, hole, settings, repo_context), ms))
        if progress:
            progress(k + 1, len(holes))
    return out


def summarize(scored: Sequence[Scored]) -> Dict[str, dict]:
    """kind (and "all") -> counts and rates."""
    groups: Dict[str, List[Scored]] = {}
    for s in scored:
        groups.setdefault(s.hole.kind, []).append(s)
    groups["all"] = list(scored)
    out = {}
    for kind, group in groups.items():
        n = len(group)
        out[kind] = {
            "holes": n,
            "exact": round(sum(s.server_exact for s in group) / n, 4),
            "greedy_exact": round(sum(s.greedy_exact for s in group) / n, 4),
            "edit_similarity": round(statistics.mean(cases.edit_similarity(s.server, s.hole.expected) for s in group), 4),
            "greedy_edit_similarity": round(statistics.mean(cases.edit_similarity(s.greedy, s.hole.expected) for s in group), 4),
            "lost": sum(s.greedy_exact and not s.server_exact for s in group),
            "won": sum(s.server_exact and not s.greedy_exact for s in group),
            "ms_p50": round(statistics.median(s.ms for s in group), 1),
        }
    return out


def table(summary: Dict[str, dict]) -> str:
    head = f"{'kind':<10} {'holes':>5} {'exact':>7} {'greedy':>7} {'edit sim':>8} {'greedy':>7} {'lost':>5} {'won':>4} {'p50 ms':>8}"
    rows = [head]
    for kind in list(cases.KINDS) + ["all"]:
        r = summary.get(kind)
        if r:
            rows.append(f"{kind:<10} {r['holes']:>5} {r['exact']:>7.1%} {r['greedy_exact']:>7.1%} "
                        f"{r['edit_similarity']:>8.3f} {r['greedy_edit_similarity']:>7.3f} {r['lost']:>5} {r['won']:>4} "
                        f"{r['ms_p50']:>8.0f}")
    return "\n".join(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dllm_lsp.settings import Settings  # noqa: PLC0415
    d = Settings()
    p.add_argument("--split", choices=sources.SPLITS, default="reporting",
                   help="tuning (choose settings on it) or reporting (quote numbers from it; default)")
    p.add_argument("--model", default="default", help="'default', a .gguf file or a model folder")
    p.add_argument("--limit", type=int, default=24, help="holes of each kind (default 24)")
    p.add_argument("--kinds", default=",".join(cases.KINDS), help=f"kinds, comma-separated (default {','.join(cases.KINDS)})")
    p.add_argument("--seed", type=int, default=0, help="seed of the hole sample (default 0)")
    add_device_arguments(p)
    p.add_argument("--prefix-tokens", type=int, default=None, help=f"prefixTokens (default {d.prefix_tokens})")
    p.add_argument("--suffix-tokens", type=int, default=None, help=f"suffixTokens (default {d.suffix_tokens})")
    p.add_argument("--repo-tokens", type=int, default=None,
                   help=f"repoTokens: the repository context's budget (default {d.repo_tokens}; 0 = the file alone)")
    p.add_argument("--show-lost", type=int, default=0, help="print the first N holes greedy gets right and the server not")
    p.add_argument("--show", type=int, default=0, help="print the first N holes with both answers")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    p.add_argument("--sources", type=Path, default=None, help="cache root holding realcode/ (default: the user cache)")


def run(args) -> int:
    from dataclasses import replace  # noqa: PLC0415
    from engine.errors import EngineError  # noqa: PLC0415
    from dllm_lsp.settings import Settings  # noqa: PLC0415
    settings = Settings()
    changes = {k: v for k, v in (("prefix_tokens", args.prefix_tokens), ("suffix_tokens", args.suffix_tokens),
                                 ("repo_tokens", args.repo_tokens)) if v is not None}
    settings = replace(settings, **changes)
    try:
        texts = module_texts(args.split, args.sources)
    except EngineError as exc:
        print(f"dllm-lsp eval realcode: {exc}", file=sys.stderr)
        return 1
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in cases.KINDS]
    if unknown:
        print(f"dllm-lsp eval realcode: unknown kinds {unknown} (known: {', '.join(cases.KINDS)})", file=sys.stderr)
        return 2
    holes = cases.holes(texts, args.limit, seed=args.seed, kinds=kinds)
    import torch  # noqa: PLC0415
    from engine.engine import Engine  # noqa: PLC0415
    torch.set_num_threads(replace(settings, threads=max(0, args.threads)).engine_threads())
    engine = Engine.load(args.model, device=args.device, dtype=args.dtype)
    if engine.cfg.attention == "causal":
        engine.load_drafter("auto")
    print(f"{len(holes)} holes from {', '.join(texts)} ({args.split} split, seed {args.seed}); model {engine.name}",
          file=sys.stderr)
    scored = score(engine, holes, settings,
                   progress=lambda i, n: print(f"\r{i}/{n}", end="", file=sys.stderr, flush=True),
                   files=module_files(args.split, args.sources) if settings.repo_tokens > 0 else None)
    print(file=sys.stderr)
    summary = summarize(scored)
    print(table(summary))
    lost = [s for s in scored if s.greedy_exact and not s.server_exact][:args.show_lost]
    for label, group in (("lost", lost), ("hole", scored[:args.show])):
        for s in group:
            print(f"\n{label} {s.hole.hole_id}\n  before   {s.hole.document[max(0, s.hole.offset - 60):s.hole.offset]!r}"
                  f"\n  after    {s.hole.document[s.hole.offset:s.hole.offset + 30]!r}\n  expected {s.hole.expected!r}"
                  f"\n  server   {s.server!r}\n  greedy   {s.greedy!r}")
    if args.json:
        print(json.dumps({"split": args.split, "seed": args.seed, "model": engine.name,
                          "packages": {p.name: p.version for p in sources.PACKAGES if p.split == args.split},
                          "repo_tokens": settings.repo_tokens,
                          "kinds": summary}))
    return 0
