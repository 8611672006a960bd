"""`dllm-lsp bench typing [FILE...]`: suggestions while a person types, over a real stdio connection.

    dllm-lsp bench typing [FILE...] [--lines 16] [--gap 100] [--client-debounce 0]
                          [--sync incremental|full] [--cursor-rest] [--workspace] [--settings JSON]
                          [--backend URL --api llamacpp|openai] [--json] [--plot FILE.png]

What a user lives with is the time from the last keystroke to a suggestion, not a decode with
everything cached. For each of `--lines` target lines (code lines, sampled with `--seed` from
FILE..., by default the standard-library modules `bench decode` uses; bench/typing_cases.py), the
document is opened with the end of the line before the target cut off and the target line
removed; then the typist, `--gap` ms between keys:
  1. types the end of the line before, one key each, then Enter with the target's indentation
     (one key, as an editor's auto-indent sends it), and pauses: phase "enter", the reference
     is the target line;
  2. types the first half of the target line, one key each, and pauses: phase "mid", the
     reference is the rest of the line;
  3. accepts that suggestion when there is one, `--read` ms (400) after it came (a person reads
     it first): one edit inserting it, as Tab does, and the request the editor then sends:
     phase "accept", no reference; "ready" is the share of these answered from suggestions
     prepared in the background (setting prepareNext).
With `--cursor-rest` the cursor first comes to rest where typing starts, as our VS Code and
Neovim plugins report it (`dllm/cursor`: a click or the arrow keys, then reading), and the typing
starts once the server's warm-up there has run; without it (any LSP client) the first key is the
first the server hears of the place. With `--workspace` each file is opened under its own path
in a workspace folder (`workspace_roots`), as in an editor with a folder open, so the
repository context is on when `--settings` sets repoTokens; without it the documents have made-up URIs outside any folder.
Every key is a didChange (a range, or the whole document with `--sync full`) followed by an
automatic textDocument/inlineCompletion that cancels the previous one ($/cancelRequest), as VS
Code sends them; `--client-debounce MS` makes the client wait that long after a key and ask
only if no newer key came (clients that debounce). At a pause the last request's answer is
awaited; shown = a non-empty answer, exact = its first line equals the reference (stripped).

Measured per phase: share of pauses with a suggestion, share exact, p50/p90 from the last key
to the answer, to the first streamed text of that request (dllm/inlineCompletionUpdate of
its version) and to its first whole line (a streamed stable text holding a newline, or the
answer), and where the last request's time went (dllm/metrics `last`): waiting on the
engine thread for stale work (queue ms), context tokens it computed, its decoding passes; and
context tokens the engine computed per key over the whole phase (requests and warm-ups). The
floor, after the replay (`floors`): each pause's document and cursor asked twice, the type-along
cache emptied in between, so the second answer is our warm decode of that suggestion.

`--backend URL --api A` replays the same keys in the same run with the server's `backend`
setting pointing at a FIM server (llama.cpp's `llama-server`, the anchor: what llama.vscode
users run), through the same pipeline (windows, post-processing, streaming), and prints the
ratios of the p50s. A table, then one JSON object on the last line.

Which files are which: the default standard-library files are the tuning split (bench decode
and the drafters' thresholds were chosen on them); report on files that nothing was tuned on
(FILE..., e.g. a third-party package's sources unpacked from its archive), and say which.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dllm_lsp.bench.typing_cases import Key, TypingCase, apply_key, cursor_after, first_line, typing_cases
from dllm_lsp.bench.typing_report import Pause, headline, plot, summarize, table


# ---- the typist (a client over stdio) -----------------------------------------------------------

class Typist:
    def __init__(self, bench_client, gap_ms: float, client_debounce_ms: float, full_sync: bool, read_ms: float = 400,
                 cursor_rest: bool = False):
        self.bc, self.gap, self.debounce, self.full = bench_client, gap_ms / 1000, client_debounce_ms / 1000, full_sync
        self.read = read_ms / 1000
        self.cursor_rest = cursor_rest
        self.workspace = False               # documents under their own paths, in workspace folders (--workspace)
        self.rested_tokens: List[int] = []   # context tokens each cursor-rest warm-up computed
        self.n = 0

    def _request(self, uri: str, line: int, character: int) -> Tuple[str, "asyncio.Future"]:
        from lsprotocol import types
        self.n += 1
        msg_id = f"typing-{self.n}"
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
        return msg_id, asyncio.wrap_future(self.bc.client.protocol.send_request(
            "textDocument/inlineCompletion", params, msg_id=msg_id))

    def _cancel(self, msg_id: str) -> None:
        from lsprotocol import types
        self.bc.client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))

    async def idle(self, timeout: float = 300.0) -> None:
        """Wait until the engine has no job running or waiting (e.g. didOpen's warm-up done)."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            m = await self.bc.client.protocol.send_request_async("dllm/metrics", {})
            if not m.engineBusy and not m.queueDepth:
                return
            await asyncio.sleep(0.02)

    async def phase(self, uri: str, text: str, version: int, phase: str, keys: Sequence[Key],
                    reference: str) -> Tuple[Pause, str, int]:
        """Type `keys`, pause, and measure; returns (the pause, the text after, the last version)."""
        from lsprotocol import types
        metrics0 = await self.bc.client.protocol.send_request_async("dllm/metrics", {})
        latest: Optional[Tuple[str, asyncio.Future]] = None
        debounced: Optional[asyncio.TimerHandle] = None
        pending: List[asyncio.Future] = []
        t_key = time.perf_counter()
        loop = asyncio.get_running_loop()

        def ask(line: int, character: int) -> None:
            nonlocal latest
            if latest is not None and not latest[1].done():
                self._cancel(latest[0])
            latest = self._request(uri, line, character)
            pending.append(latest[1])

        start = time.perf_counter()
        for i, key in enumerate(keys):
            await asyncio.sleep(max(0.0, start + i * self.gap - time.perf_counter()))
            version += 1
            text = apply_key(text, key)
            if self.full:
                change = types.TextDocumentContentChangeWholeDocument(text=text)
            else:
                pos = types.Position(line=key.line, character=key.character)
                change = types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=key.text)
            self.bc.updates.clear()
            t_key = time.perf_counter()
            self.bc.client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version), content_changes=[change]))
            line, character = cursor_after(key)
            if debounced is not None:
                debounced.cancel()
            if self.debounce:
                debounced = loop.call_later(self.debounce, ask, line, character)
            else:
                ask(line, character)
        if self.debounce:                 # the pause: the debounced request goes out
            await asyncio.sleep(self.debounce + 0.001)
        result = await asyncio.wait_for(latest[1], timeout=120)
        t_answer = time.perf_counter()
        for f in pending[:-1]:
            try:
                await asyncio.wait_for(f, timeout=120)
            except Exception:             # cancelled requests answer with an error: expected
                pass
        items = result.items if hasattr(result, "items") else (result or [])
        answer = items[0].insert_text if items else ""
        answer = answer if isinstance(answer, str) else answer.value
        firsts = [t for t, p in self.bc.updates if p.version == version and (p.stable or p.draft) and not p.done]
        lines = [t for t, p in self.bc.updates if p.version == version and "\n" in (p.stable or "").lstrip("\n")]
        t_line = min(lines + [t_answer])
        m = await self.bc.client.protocol.send_request_async("dllm/metrics", {})
        last = m.last if getattr(m.last, "version", None) == version else None
        pause = Pause(phase=phase, shown=bool(answer.strip()), exact=bool(answer) and first_line(answer) == reference.strip(),
                      ms=(t_answer - t_key) * 1000, first_text_ms=(min(firsts) - t_key) * 1000 if firsts else None,
                      first_line_ms=(t_line - t_key) * 1000,
                      queue_ms=getattr(last, "queueMs", None), context_tokens=getattr(last, "contextTokens", None),
                      forwards=getattr(last, "forwards", None), keys=len(keys), answer=answer,
                      reason=getattr(last, "reason", None), document=text, cursor=cursor_after(keys[-1]), uri=uri,
                      tokens_per_key=(getattr(m, "contextTokens", 0) - getattr(metrics0, "contextTokens", 0)) / max(1, len(keys)))
        return pause, text, version

    async def ask(self, uri: str, line: int, character: int) -> float:
        t0 = time.perf_counter()
        _, fut = self._request(uri, line, character)
        await asyncio.wait_for(fut, timeout=120)
        return (time.perf_counter() - t0) * 1000


async def floors(bc, typist: Typist, pauses: Sequence[Pause], settings: Dict) -> None:
    """Each pause's floor, after the replay: its document opened afresh, asked once (the prompt's
    context is then cached), the type-along cache emptied (a one-step change of warmUpDelayMs,
    which reloads nothing), and asked again: that second answer's time is our warm decode of the
    suggestion. prepareNext and warmUp are off meanwhile, so nothing else touches the cache."""
    base = {**settings, "prepareNext": False, "warmUp": False}
    delay = base.get("warmUpDelayMs", 300)
    bc.configure(base)
    from lsprotocol import types
    for i, pause in enumerate(p for p in pauses if p.phase in ("enter", "mid")):
        uri = pause.uri if typist.workspace else f"file:///typing/floor-{i}.py"
        bc.open(uri, pause.document, 1)
        for prime in (True, False):
            delay += 1                      # any change of the settings empties the type-along cache
            bc.configure({**base, "warmUpDelayMs": delay})
            await typist.idle()
            ms = await typist.ask(uri, *pause.cursor)
        pause.floor_ms = ms
        bc.client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
    bc.configure(settings)


async def replay(bc, cases: Sequence[TypingCase], typist: Typist, accept: bool = True) -> List[Pause]:
    pauses: List[Pause] = []
    for i, case in enumerate(cases):
        uri = (Path(case.path).resolve().as_uri() if typist.workspace
               else f"file:///typing/{i}-{case.name.replace('/', '_').replace(':', '_')}.py")
        bc.open(uri, case.start, 1)
        await typist.idle()                 # the file was open before the typing started
        if typist.cursor_rest:              # ... and the cursor came to rest where typing starts
            first = case.phases[0][1][0]
            rested = await bc.warm_at(uri, first.line, first.character)
            if rested is None:
                raise SystemExit("--cursor-rest: the server's warm-up at the cursor never ran (warmUp off?)")
            typist.rested_tokens.append(rested)
        text, version = case.start, 1
        for phase, keys, reference in case.phases:
            pause, text, version = await typist.phase(uri, text, version, phase, keys, reference)
            pauses.append(pause)
        if accept and pauses[-1].shown:        # Tab: the suggestion inserted as one edit, and the next asked
            shown = pauses[-1]
            await asyncio.sleep(typist.read)  # the time a person takes to read it before pressing Tab
            line, character = cursor_after(case.phases[-1][1][-1])
            pause, text, version = await typist.phase(uri, text, version, "accept",
                                                      [Key(shown.answer, line, character)], "")
            pause.exact = False                # what follows an accepted guess has no reference
            pauses.append(pause)
        from lsprotocol import types
        bc.client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
    return pauses


# ---- command line --------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", type=Path, help="files to type in (default: the standard-library modules of bench decode)")
    p.add_argument("--model", default="default", help="model for the server ('default', a .gguf, a folder, ...)")
    p.add_argument("--lines", type=int, default=16, help="target lines (each gives an 'enter' and a 'mid' pause)")
    p.add_argument("--seed", type=int, default=0, help="seed of the target-line sample")
    p.add_argument("--gap", type=float, default=100.0, help="ms between keys (default 100)")
    p.add_argument("--client-debounce", type=float, default=0.0,
                   help="ms the client waits after a key before asking (0: every key asks)")
    p.add_argument("--read", type=float, default=400.0,
                   help="ms between a suggestion and its acceptance (a person reads it first)")
    p.add_argument("--sync", choices=("incremental", "full"), default="incremental",
                   help="didChange with ranges or with the whole document")
    p.add_argument("--cursor-rest", action="store_true",
                   help="the cursor rests where typing starts first (dllm/cursor, as our plugins send it)")
    p.add_argument("--workspace", action="store_true",
                   help="open each file under its own path, in a workspace folder (the folder above its top-level "
                        "package), as an editor does: the repository context works when repoTokens is set")
    p.add_argument("--settings", default="{}", help="server settings as JSON (camelCase)")
    p.add_argument("--no-floor", action="store_true", help="skip asking again with everything cached")
    p.add_argument("--backend", default=None, help="also replay through the `backend` setting at this FIM server URL")
    p.add_argument("--api", default="llamacpp", choices=("llamacpp", "openai", "inception"), help="the backend's API")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument("--plot", type=Path, default=None, help="write box plots of the latencies (PNG)")


async def bench_typing(args) -> Tuple[Dict, Dict[str, List[Pause]]]:
    from dllm_lsp.bench.lsp import BenchClient
    from engine.eval_data import bench_files
    files = list(args.files) or bench_files()
    cases = typing_cases(files, args.lines, args.seed)
    if not cases:
        raise SystemExit("no usable target lines in the given files")
    extra = json.loads(args.settings)
    runs = [("dllm-lsp", extra, not args.no_floor, args.cursor_rest)]
    if args.backend:                  # a FIM server hears of no cursor: its run never rests one
        runs.append((f"backend {args.api}", {**extra, "backend": {"url": args.backend, "api": args.api}}, False, False))
    bc = BenchClient()
    roots = workspace_roots(files) if args.workspace else []
    await bc.start(args.model, extra, roots)
    raw: Dict[str, List[Pause]] = {}
    try:
        typist = Typist(bc, args.gap, args.client_debounce, args.sync == "full", args.read)
        typist.workspace = bool(roots)
        for name, settings, floor, cursor_rest in runs:
            typist.cursor_rest = cursor_rest
            bc.configure({**settings, "model": args.model})
            await typist.idle()
            raw[name] = await replay(bc, cases, typist)
            if floor:
                await floors(bc, typist, raw[name], {**settings, "model": args.model})
    finally:
        await bc.stop()
    rows = {name: summarize(ps) for name, ps in raw.items()}
    result = {"model": args.model, "files": [str(f) for f in files], "cases": [c.name for c in cases],
              "gap_ms": args.gap, "client_debounce_ms": args.client_debounce, "sync": args.sync,
              "cursor_rest": args.cursor_rest, "rested_tokens": typist.rested_tokens,
              "workspace": [str(r) for r in roots],
              "settings": extra, "rows": rows,
              **headline(rows, "dllm-lsp", f"backend {args.api}" if args.backend else None)}
    return result, raw


def workspace_roots(files: Sequence[Path]) -> List[Path]:
    """Each file's workspace folder: the folder above its top-level package (the first folder up
    without an __init__.py), as a checkout of the package would be opened."""
    roots: List[Path] = []
    for f in files:
        folder = f.resolve().parent
        while (folder / "__init__.py").is_file() and folder.parent != folder:
            folder = folder.parent
        if folder not in roots:
            roots.append(folder)
    return roots


def run(args) -> int:
    result, raw = asyncio.run(bench_typing(args))
    print(f"model {result['model']}: {len(result['cases'])} target lines from {len(result['files'])} files, "
          f"keys {result['gap_ms']:.0f} ms apart, {result['sync']} sync"
          f"{', the cursor rested first' if result['cursor_rest'] else ''}, over stdio")
    print(table(result["rows"]))
    ratios = {k: v for k, v in result.items() if k.endswith("_ratio")}
    if ratios:
        print("  ".join(f"{k} {v}" for k, v in ratios.items()))
    if args.plot is not None:
        why = plot(raw, args.plot)
        result["plot"] = str(args.plot) if why is None else None
        print(f"plot: {args.plot}" if why is None else f"no plot: {why}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    return 0
