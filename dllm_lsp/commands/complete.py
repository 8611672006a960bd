"""`dllm-lsp complete FILE:LINE:COL`: one suggestion through the server's pipeline, without an editor.

LINE and COL are 1-based; COL counts characters (code points). The same plan_completion ->
Engine.stream -> finish_completion path as the server runs; on a terminal the suggestion
grows in place (rich Live, one frame per forward pass: committed text bold, the rest of the
current guess dim, forward passes and elapsed ms below), otherwise only the final text is
printed on stdout. Either way one line on stderr gives forward passes, tokens and latency (or
says that the model suggests nothing). --json prints only {text, mode, forwards, newTokens, ms,
loadMs, firstTextMs, finishReason, tokensPerForward}; firstTextMs is null when nothing was
suggested.

Files as users have them (`read_source`): the encoding is found the way Python finds a source
file's (a UTF-8 BOM, else a PEP 263 coding line in the first two lines, else UTF-8); a file
that is not valid in it but holds no NUL byte is read as Latin-1, with one line on stderr
saying so; a file that looks binary (a NUL byte or mostly control characters) is refused with
one line. The BOM is not part of the text (columns count from the first real character);
CRLF and lone CR line ends become LF for the model, and the suggestion is printed with the
file's own line end.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dllm_lsp.commands.serve import add_device_arguments, add_logging_arguments
    from dllm_lsp.settings import POLICIES, Settings
    d = Settings()
    parser.add_argument("location", metavar="FILE:LINE:COL", help="where to complete (1-based line and column)")
    parser.add_argument("--model", default=d.model,
                        help=f"'default' (the server's default model), a model folder, or an HF repo id in the "
                             f"local cache (default: {d.model})")
    parser.add_argument("--drafter", default=d.drafter,
                        help=f"trained drafter (draft head or mask slots): auto (the one shipped for the model), none, or a file "
                             f"(default: {d.drafter}; the text is the same either way)")
    parser.add_argument("--language", default=None, help="language id (default: from the file extension)")
    add_device_arguments(parser)
    parser.add_argument("--policy", default=None, choices=POLICIES,
                        help=f"which masked tokens to commit after each forward pass (default: {d.policy})")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"confidence threshold of the threshold policy (default: {d.threshold})")
    parser.add_argument("--mode", choices=["line", "block"], default=None,
                        help="force a single-line or a block completion (default: decided from the syntax)")
    parser.add_argument("--json", action="store_true",
                        help="print text, forwards and timings as one JSON object (firstTextMs is null when "
                             "nothing is suggested)")
    add_logging_arguments(parser)


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


@dataclass(frozen=True)
class Source:
    text: str                 # decoded, BOM removed, line ends normalized to "\n"
    encoding: str
    newline: str              # the file's line end ("\n", "\r\n" or "\r"), used when printing
    note: Optional[str] = None   # one line for stderr (e.g. "read as Latin-1")


def _binary_reason(data: bytes) -> Optional[str]:
    nul = data.find(b"\x00")
    if nul >= 0:
        return f"a NUL byte at offset {nul}"
    head = data[:8192]
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    if head and control / len(head) > 0.1:
        return f"{control} control bytes in its first {len(head)}"
    return None


def read_source(path: Path) -> Source:
    """`path` decoded as a person's source file (see the module docstring); SystemExit with one line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc.strerror or exc}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SystemExit(f"{path}: is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8")
    why = _binary_reason(data)
    if why:
        raise SystemExit(f"{path}: looks like a binary file ({why}); nothing to complete")
    import codecs
    import io
    import tokenize
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:                   # a coding line naming no codec, or a BOM that contradicts it
        raise SystemExit(f"{path}: {exc.msg if hasattr(exc, 'msg') else exc}")
    note = None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        declared = encoding not in ("utf-8", "utf-8-sig")
        if declared:
            raise SystemExit(f"{path}: is not valid {encoding} as its coding line says "
                             f"(byte 0x{data[exc.start]:02x} at offset {exc.start})")
        text = data.decode("latin-1")
        encoding = "latin-1"
        note = (f"{path}: is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                "read as Latin-1")
    if text.startswith("\ufeff"):
        text = text[1:]
    newline = "\r\n" if "\r\n" in text else "\r" if "\r" in text else "\n"
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return Source(text=text, encoding=codecs.lookup(encoding).name, newline=newline, note=note)


def run(args) -> int:
    from dllm_lsp.commands.serve import setup_logging
    setup_logging(args.log_file, args.verbose)
    path, line, col = parse_location(args.location)
    source = read_source(path)
    if source.note:
        print(f"dllm-lsp complete: {source.note}", file=sys.stderr)
    text = source.text
    offset = offset_of(text, line, col)
    from dataclasses import replace

    from dllm_lsp.core.plan import plan_completion
    from dllm_lsp.runtime.host import decode_plan
    from dllm_lsp.core.syntax import language_for_path
    from dllm_lsp.settings import Settings
    settings = Settings(model=args.model, device=args.device, dtype=args.dtype, threads=max(0, args.threads),
                        drafter=args.drafter)
    if args.policy:
        settings = replace(settings, policy=args.policy)
    if args.threshold is not None:
        settings = replace(settings, threshold=args.threshold)
    language = args.language or language_for_path(path.name)

    from engine import Engine

    from dllm_lsp.runtime.host import set_engine_threads
    set_engine_threads(settings)
    t0 = time.perf_counter()
    engine = Engine.load(args.model, device=args.device, dtype=args.dtype)
    engine.load_drafter(args.drafter)
    load_ms = (time.perf_counter() - t0) * 1000
    plan = plan_completion(text, offset, language, settings, engine.tokenizer)
    if plan is not None and args.mode and args.mode != plan.mode:
        from dllm_lsp.core.plan import shape_at
        plan = replace(plan, mode=args.mode, shape=shape_at(text, offset, args.mode, language),
                       request=replace(plan.request, max_new_tokens=settings.max_new_tokens(args.mode)))
    if plan is None:
        if args.json:
            print(json.dumps({"text": "", "mode": None, "forwards": 0, "firstTextMs": None,
                              "reason": "no completion at this position"}))
        else:
            print("(no completion at this position)", file=sys.stderr)
        return 0

    live = sys.stdout.isatty() and not args.json
    decoded = _decode_live(engine, plan) if live else decode_plan(engine, plan)
    if source.newline != "\n":                  # the suggestion in the file's own line ends
        decoded = replace(decoded, text=decoded.text.replace("\n", source.newline))
    if args.json:
        print(json.dumps(summary(decoded, plan.mode, load_ms)))
        return 0
    if not live:
        print(decoded.text)
    print(stats_line(decoded, load_ms), file=sys.stderr)
    return 0


def summary(decoded, mode: str, load_ms: float) -> dict:
    """The --json object; firstTextMs is null when nothing was suggested (no text ever reached the user)."""
    first = decoded.first_text_ms if decoded.text and decoded.first_text_ms is not None else None
    return {"text": decoded.text, "mode": mode, "forwards": decoded.forwards, "newTokens": decoded.new_tokens,
            "ms": round(decoded.ms, 2), "loadMs": round(load_ms, 1),
            "firstTextMs": None if first is None else round(first, 2), "finishReason": decoded.finish_reason,
            "tokensPerForward": round(decoded.new_tokens / decoded.forwards, 3) if decoded.forwards else 0.0}


def _passes(n: int) -> str:
    return f"{n} forward pass{'es' if n != 1 else ''}"


def stats_line(decoded, load_ms: float) -> str:
    """One line for stderr: forward passes and latency, or why nothing was suggested."""
    if not decoded.text:
        return f"(the model suggests nothing here: {decoded.finish_reason} after {_passes(decoded.forwards)})"
    first = f", first text {decoded.first_text_ms:.0f} ms" if decoded.first_text_ms is not None else ""
    return (f"[{_passes(decoded.forwards)}, {decoded.new_tokens} tokens, {decoded.ms:.0f} ms{first}; "
            f"model loaded in {load_ms:.0f} ms]")


def render(context: str, stable: str, draft: str, forwards: int, ms: float, done: bool = False):
    """One frame of the live view: the line before the cursor (dim), the committed text (bold),
    the rest of the model's current guess (dim italic), then forwards and elapsed ms.
    The final frame (done) is the suggestion alone: the stats line follows on stderr."""
    from rich.text import Text
    out = Text()
    out.append(context, style="dim")
    out.append(stable, style="bold")
    if not done:
        if draft.startswith(stable):
            out.append(draft[len(stable):], style="dim italic")
        out.append(f"\n[{_passes(forwards)} · {ms:.0f} ms]", style="cyan")
    return out


def _decode_live(engine, plan):
    """Decode with a rich Live view on the terminal, one frame per forward pass."""
    from rich.console import Console
    from rich.live import Live

    from dllm_lsp.runtime.host import decode_plan
    console = Console()
    context = plan.shape.line_prefix
    t0 = time.perf_counter()
    with Live(render(context, "", "", 0, 0.0), console=console, auto_refresh=False, transient=False) as live:
        def update(stable: str, draft: str, forwards: int) -> None:
            live.update(render(context, stable, draft, forwards, (time.perf_counter() - t0) * 1000), refresh=True)
        decoded = decode_plan(engine, plan, on_update=update)
        live.update(render(context, decoded.text, decoded.text, decoded.forwards, decoded.ms, done=True), refresh=True)
    return decoded
