"""`dllm-lsp bench lsp FILE...`: completions replayed through a real stdio connection; and
BenchClient, the LSP client every bench that talks to `dllm-lsp --stdio` uses.

bench lsp replays completion requests through a real stdio connection to `dllm-lsp --stdio`.
For each sampled line of each FILE, the document is the file with that line cut at a token
boundary (the removed rest of the line is the reference); block positions are the first body
line after a block opener, emptied to its indentation. The client asks for an inline
completion there, then types the first characters of the suggestion and asks again (the
type-along cache should answer). Measured on the client: latency to the response, time to
the first `dllm/inlineCompletionUpdate` carrying text; from `dllm/metrics`: forward passes
and cache hits. The same requests then run again with the one-token-per-step baseline
(policy quota, tokensPerStep 1), set through workspace/didChangeConfiguration in the same
server, so both rows come from one run on one machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional


# ---- command line -----------------------------------------------------------------------------

def add_arguments(lsp: argparse.ArgumentParser) -> None:
    lsp.add_argument("files", nargs="+", type=Path, help="source files to replay positions from")
    lsp.add_argument("--model", default="default", help="model for the server ('default', a folder, ...)")
    lsp.add_argument("--per-file", type=int, default=20, help="line positions sampled per file")
    lsp.add_argument("--blocks-per-file", type=int, default=5, help="block positions (after an opener) per file")
    lsp.add_argument("--seed", type=int, default=0, help="seed of the position sample (default: 0)")
    lsp.add_argument("--type-chars", type=int, default=2, help="characters typed along after each suggestion")
    lsp.add_argument("--no-baseline", action="store_true", help="skip the one-token-per-step baseline pass")
    lsp.add_argument("--warm", action="store_true",
                     help="also replay each position after a background warm-up there (dllm/cursor, then wait)")
    lsp.add_argument("--settings", default="{}", help="extra server settings as JSON (camelCase)")
    lsp.add_argument("--json", action="store_true", help="print the results as JSON")


# ---- sampling positions -----------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    name: str
    text: str          # the document with the rest of one line removed
    line: int
    character: int     # code points == utf-32 units (the client negotiates utf-32)
    reference: str     # what was removed


def _boundaries(content: str) -> List[int]:
    """Cut points inside a line's content that are not in the middle of a word."""
    word = lambda c: c.isalnum() or c == "_"
    return [i for i in range(1, len(content)) if not (word(content[i - 1]) and word(content[i]))]


def sample_positions(name: str, text: str, n: int, rng: random.Random) -> List[Sample]:
    lines = text.split("\n")
    candidates = [i for i, l in enumerate(lines)
                  if len(l.strip()) >= 8 and not l.strip().startswith(("#", "//", '"""', "'''"))]
    out = []
    for i in sorted(rng.sample(candidates, min(n, len(candidates)))):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        cuts = _boundaries(line[indent:])
        if not cuts:
            continue
        cut = indent + rng.choice(cuts)
        doc = "\n".join(lines[:i] + [line[:cut]] + lines[i + 1:])
        out.append(Sample(name, doc, i, cut, line[cut:]))
    return out


def sample_block_positions(name: str, text: str, n: int, rng: random.Random) -> List[Sample]:
    """Empty first body lines after block openers: `def f(x):` + cursor on an indented blank line.

    The reference is the removed first line of the body (block completions are scored on it).
    """
    lines = text.split("\n")
    candidates = []
    for i in range(len(lines) - 1):
        head, body = lines[i], lines[i + 1]
        indent = len(body) - len(body.lstrip())
        if (head.rstrip().endswith(":") and not head.lstrip().startswith("#") and body.strip()
                and indent > len(head) - len(head.lstrip())):
            candidates.append(i + 1)
    out = []
    for i in sorted(rng.sample(candidates, min(n, len(candidates)))):
        body = lines[i]
        indent = len(body) - len(body.lstrip())
        doc = "\n".join(lines[:i] + [body[:indent]] + lines[i + 1:])
        out.append(Sample(name, doc, i, indent, body[indent:]))
    return out


# ---- the replay -------------------------------------------------------------------------------

@dataclass
class Row:
    latencies: List[float] = field(default_factory=list)       # first request at each position
    first_text: List[float] = field(default_factory=list)
    forwards: List[int] = field(default_factory=list)           # per suggestion that ran the engine
    nonempty: int = 0
    exact: int = 0
    typed_requests: int = 0
    typed_hits: int = 0
    typed_latencies: List[float] = field(default_factory=list)

    def summary(self) -> Dict:
        n = len(self.latencies)
        q = lambda v, p: round(statistics.quantiles(v, n=100, method="inclusive")[p - 1], 1) if len(v) > 1 else (round(v[0], 1) if v else None)
        return {"requests": n, "p50_ms": q(self.latencies, 50), "p95_ms": q(self.latencies, 95),
                "first_text_p50_ms": q(self.first_text, 50), "first_text_p95_ms": q(self.first_text, 95),
                "forwards_per_suggestion": round(statistics.mean(self.forwards), 2) if self.forwards else None,
                "nonempty_rate": round(self.nonempty / n, 3) if n else None,
                "exact_line_rate": round(self.exact / n, 3) if n else None,
                "typed_requests": self.typed_requests,
                "cache_hit_rate": round(self.typed_hits / self.typed_requests, 3) if self.typed_requests else None,
                "typed_p50_ms": q(self.typed_latencies, 50)}


class BenchClient:
    """A pygls client with the notifications the benchmark needs."""

    def __init__(self):
        from pygls.lsp.client import LanguageClient
        self.client = LanguageClient("dllm-bench", "0")
        self.updates: List[tuple] = []          # (time, params)
        self.status: List[dict] = []
        self.ready = asyncio.Event()

        @self.client.feature("dllm/inlineCompletionUpdate")
        def on_update(params):
            self.updates.append((time.perf_counter(), params))

        @self.client.feature("dllm/status")
        def on_status(params):
            self.status.append(params)
            if getattr(params, "state", None) in ("ready", "error"):
                self.ready.set()

        @self.client.feature("window/showMessage")
        def on_message(params):
            print(f"server: {params.message}", file=sys.stderr)

    async def start(self, model: str, settings: Dict, roots=()) -> None:
        """Start the server; `roots`: workspace folders (paths) for initialize."""
        from lsprotocol import types
        await self.client.start_io(sys.executable, "-m", "dllm_lsp.cli", "--stdio")
        caps = types.ClientCapabilities(general=types.GeneralClientCapabilities(
            position_encodings=[types.PositionEncodingKind.Utf32]))
        folders = [types.WorkspaceFolder(uri=Path(r).as_uri(), name=Path(r).name) for r in roots] or None
        await self.client.initialize_async(types.InitializeParams(
            capabilities=caps, initialization_options={"model": model, **settings}, workspace_folders=folders))
        self.client.initialized(types.InitializedParams())
        await asyncio.wait_for(self.ready.wait(), timeout=600)
        if self.status[-1].state != "ready":
            raise SystemExit(f"model did not load: {self.status[-1].message}")

    async def metrics(self) -> Dict:
        m = await self.client.protocol.send_request_async("dllm/metrics", {})
        return {"forwards": m.forwards, "cacheHits": m.cacheHits, "warmups": getattr(m, "warmups", 0)}

    async def warm_at(self, uri: str, line: int, character: int, timeout: float = 60.0) -> Optional[int]:
        """Send dllm/cursor with a fresh token and wait until the server's background prefill for
        that token has run (metrics.lastWarm echoes it; earlier warm-ups, e.g. on didOpen, don't count).
        Returns the context tokens that warm-up computed, or None if it did not run in time."""
        token = f"bench-{time.perf_counter_ns()}"
        self.client.protocol.notify("dllm/cursor", {"uri": uri, "position": {"line": line, "character": character},
                                                    "token": token})
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            await asyncio.sleep(0.02)
            m = await self.client.protocol.send_request_async("dllm/metrics", {})
            last = getattr(m, "lastWarm", None)
            if last is not None and getattr(last, "token", None) == token:
                return int(getattr(last, "tokens", 0) or 0)
        return None

    async def complete(self, uri: str, line: int, character: int):
        from lsprotocol import types
        self.updates.clear()
        t0 = time.perf_counter()
        res = await self.client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
        t1 = time.perf_counter()
        items = res.items if hasattr(res, "items") else (res or [])
        text = items[0].insert_text if items else ""
        text = text if isinstance(text, str) else text.value
        firsts = [t for t, p in self.updates if (p.stable or p.draft) and not p.done]
        first = (min(firsts) - t0) * 1000 if firsts else None
        return text, (t1 - t0) * 1000, first

    def open(self, uri: str, text: str, version: int) -> None:
        from lsprotocol import types
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)))

    def replace(self, uri: str, text: str, version: int) -> None:
        from lsprotocol import types
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))

    def insert(self, uri: str, line: int, character: int, text: str, version: int) -> None:
        from lsprotocol import types
        pos = types.Position(line=line, character=character)
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=text)]))

    def configure(self, settings: Dict) -> None:
        from lsprotocol import types
        self.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"dllm": settings}))

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), 10)
            self.client.exit(None)
        finally:
            await self.client.stop()


async def replay(bc: BenchClient, samples: List[Sample], type_chars: int, warm: bool = False) -> Row:
    """Each sample: open (or replace) the document, [warm: dllm/cursor at the position and wait
    for the background prefill], request, then type `type_chars` of the answer and request again."""
    row = Row()
    versions: Dict[str, int] = {}
    for s in samples:
        uri = f"file:///bench/{s.name}"
        versions[uri] = versions.get(uri, 0) + 1
        if versions[uri] == 1:
            bc.open(uri, s.text, 1)
        else:
            bc.replace(uri, s.text, versions[uri])
        if warm:
            await bc.warm_at(uri, s.line, s.character)
        before = await bc.metrics()
        text, ms, first = await bc.complete(uri, s.line, s.character)
        after = await bc.metrics()
        row.latencies.append(ms)
        if first is not None:
            row.first_text.append(first)
        if after["cacheHits"] == before["cacheHits"]:
            row.forwards.append(after["forwards"] - before["forwards"])
        row.nonempty += bool(text)
        row.exact += bool(text) and text.split("\n")[0].strip() == s.reference.strip()
        k = min(type_chars, len(text) - 1)
        if k >= 1 and "\n" not in text[:k]:
            versions[uri] += 1
            bc.insert(uri, s.line, s.character, text[:k], versions[uri])
            before = await bc.metrics()
            typed_text, typed_ms, _ = await bc.complete(uri, s.line, s.character + k)
            after = await bc.metrics()
            row.typed_requests += 1
            row.typed_hits += after["cacheHits"] > before["cacheHits"] and typed_text == text[k:]
            row.typed_latencies.append(typed_ms)
    return row


async def bench_lsp(args) -> Dict:
    rng = random.Random(args.seed)
    line_samples: List[Sample] = []
    block_samples: List[Sample] = []
    for path in args.files:
        text = path.read_text(encoding="utf-8")
        line_samples += sample_positions(path.name, text, args.per_file, rng)
        block_samples += sample_block_positions(path.name, text, args.blocks_per_file, rng)
    if not line_samples:
        raise SystemExit("no usable lines in the given files")
    extra = json.loads(args.settings)
    bc = BenchClient()
    await bc.start(args.model, extra)
    results = {"model": args.model, "files": [str(p) for p in args.files],
               "positions": {"line": len(line_samples), "block": len(block_samples)}}
    # cold: the context is prefilled inside the request (background warm-up off); warm: the
    # cursor rested first (dllm/cursor) and the background prefill finished before the request
    passes = [("server cold", {**extra, "warmUp": False}, False)]
    if args.warm:
        passes.append(("server warm", {**extra, "warmUp": True}, True))
    if not args.no_baseline:
        passes.append(("baseline_one_token_per_step", {**extra, "warmUp": False, "policy": "quota",
                                                       "tokensPerStep": 1, "drafting": False}, False))
    try:
        for name, settings, warm in passes:
            bc.configure({**settings, "model": args.model})
            await replay(bc, line_samples[:2], 0)          # first-call overheads, not counted
            results[f"{name} line"] = (await replay(bc, line_samples, args.type_chars, warm)).summary()
            if block_samples:
                results[f"{name} block"] = (await replay(bc, block_samples, args.type_chars, warm)).summary()
    finally:
        await bc.stop()
    return results


def run(args) -> int:
    results = asyncio.run(bench_lsp(args))
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    n = results["positions"]
    print(f"model {results['model']}: {n['line']} line and {n['block']} block positions from "
          f"{len(results['files'])} files, replayed over stdio")
    cols = ["requests", "p50_ms", "p95_ms", "first_text_p50_ms", "forwards_per_suggestion",
            "cache_hit_rate", "typed_p50_ms", "nonempty_rate", "exact_line_rate"]
    print(f"{'':34}" + "".join(f"{c:>12}" for c in ["reqs", "p50 ms", "p95 ms", "1st text", "fwd/sugg",
                                                      "cache hit", "typed p50", "non-empty", "exact 1st"]))
    for name, r in results.items():
        if isinstance(r, dict) and "p50_ms" in r:
            print(f"{name:34}" + "".join(f"{'-' if r[c] is None else r[c]:>12}" for c in cols))
    return 0
