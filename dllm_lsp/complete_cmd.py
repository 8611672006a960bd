"""`dllm-lsp complete FILE:LINE:COL`: one suggestion through the server's pipeline, without an editor.

LINE and COL are 1-based; COL counts characters (code points). The same plan_completion ->
Engine.stream -> finish_completion path as the server runs; on a terminal the suggestion
grows in place (rich Live: committed text bold, the rest of the current guess dim), otherwise
only the final text is printed. --json prints {text, mode, forwards, newTokens, ms, loadMs,
firstTextMs, finishReason, tokensPerForward}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("location", metavar="FILE:LINE:COL", help="where to complete (1-based line and column)")
    parser.add_argument("--model", default="default", help="'default' (embedded), a model folder, or an HF repo id in the local cache")
    parser.add_argument("--language", default=None, help="language id (default: from the file extension)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: half the cores, at least 1)")
    parser.add_argument("--policy", default=None, choices=["threshold", "quota", "entropy"])
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--mode", choices=["line", "block"], default=None, help="force single-line or block")
    parser.add_argument("--json", action="store_true", help="print text, forwards and timings as JSON")
    parser.add_argument("--log-file", default=None)
    parser.add_argument("-v", "--verbose", action="count", default=0)


def parse_location(location: str):
    """'path/to/file.py:12:5' -> (Path, line, col), 1-based; SystemExit with a message otherwise."""
    parts = location.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise SystemExit(f"expected FILE:LINE:COL (1-based), got {location!r}")
    return Path(parts[0]), int(parts[1]), int(parts[2])


def offset_of(text: str, line: int, col: int) -> int:
    """1-based line and column (code points; col may be one past the line end) -> offset."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise SystemExit(f"line {line} is outside the file (1..{len(lines)})")
    row = lines[line - 1].rstrip("\r")
    if not 1 <= col <= len(row) + 1:
        raise SystemExit(f"column {col} is outside line {line} (1..{len(row) + 1})")
    return sum(len(l) + 1 for l in lines[: line - 1]) + col - 1


def run(args) -> int:
    from .serve_cmd import setup_logging
    setup_logging(args.log_file, args.verbose)
    path, line, col = parse_location(args.location)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc}")
    offset = offset_of(text, line, col)
    from dataclasses import replace

    from .completion import plan_completion
    from .engine_host import decode_plan
    from .server import language_from_uri
    from .settings import Settings
    settings = Settings(model=args.model, device=args.device, dtype=args.dtype, threads=max(0, args.threads))
    if args.policy:
        settings = replace(settings, policy=args.policy)
    if args.threshold is not None:
        settings = replace(settings, threshold=args.threshold)
    language = args.language or language_from_uri(path.name)

    from engine import Engine

    from .engine_host import set_engine_threads
    set_engine_threads(settings)
    t0 = time.perf_counter()
    engine = Engine.load(args.model, device=args.device, dtype=args.dtype)
    load_ms = (time.perf_counter() - t0) * 1000
    plan = plan_completion(text, offset, language, settings, engine.tokenizer)
    if plan is not None and args.mode and args.mode != plan.mode:
        from .completion import shape_at
        plan = replace(plan, mode=args.mode, shape=shape_at(text, offset, args.mode, language),
                       request=replace(plan.request, max_new_tokens=settings.max_new_tokens(args.mode)))
    if plan is None:
        if args.json:
            print(json.dumps({"text": "", "mode": None, "reason": "no completion at this position"}))
        else:
            print("(no completion at this position)", file=sys.stderr)
        return 0

    live = sys.stdout.isatty() and not args.json
    decoded = _decode_live(engine, plan) if live else decode_plan(engine, plan)
    if args.json:
        print(json.dumps({"text": decoded.text, "mode": plan.mode, "forwards": decoded.forwards,
                          "newTokens": decoded.new_tokens, "ms": round(decoded.ms, 2), "loadMs": round(load_ms, 1),
                          "firstTextMs": None if decoded.first_text_ms is None else round(decoded.first_text_ms, 2),
                          "finishReason": decoded.finish_reason,
                          "tokensPerForward": round(decoded.new_tokens / decoded.forwards, 3) if decoded.forwards else 0.0}))
    elif not live:
        print(decoded.text)
    if not args.json and not decoded.text:
        print(f"(the model suggests nothing here: {decoded.finish_reason} after {decoded.forwards} forward "
              f"pass{'es' if decoded.forwards != 1 else ''})", file=sys.stderr)
    return 0


def _decode_live(engine, plan):
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from .engine_host import decode_plan
    console = Console()
    context = plan.shape.line_prefix

    def render(stable: str, draft: str, forwards: int, done: bool = False) -> Text:
        out = Text()
        out.append(context, style="dim")
        out.append(stable, style="bold")
        if draft.startswith(stable) and not done:
            out.append(draft[len(stable):], style="dim italic")
        out.append(f"\n[{forwards} forward passes{' · done' if done else ''}]", style="cyan")
        return out

    with Live(render("", "", 0), console=console, refresh_per_second=30, transient=False) as live:
        decoded = decode_plan(engine, plan, on_update=lambda s, d, f: live.update(render(s, d, f)))
        live.update(render(decoded.text, decoded.text, decoded.forwards, done=True))
    return decoded
