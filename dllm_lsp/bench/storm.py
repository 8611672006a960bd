"""`dllm-lsp bench storm --keys N` / `--minutes M`: an editor typing into a real stdio server.

Design. One raw JSON-RPC client (bench/fuzz.py RawClient) types a Python source into a document
one character per tick (default every 10 ms): each tick is an incremental didChange and an
inline-completion request at the new cursor, sent without waiting for earlier answers, as an
editor does. Every `sample_every` keys a dllm/metrics request reads the engine queue
(`queueDepth`, `queuePeak`: waiting jobs, see runtime/worker.py) and /proc gives the server's RSS.

Before the storm one suggestion is timed at a fresh position (the median of three: "one
suggestion's time"); after it, every request must have been answered and a fresh request at
a new position is timed again. RSS is judged after warm-up (the first `warmup` fraction of
the keys): every later sample within ±`rss_tolerance` of the RSS at the end of warm-up.

`--minutes M` turns it into a soak: typing goes on for M minutes while the document rotates
(every `rotate_keys` keys the document is closed and a new one opened) and the settings rotate
through a few sets that do not reload the model (line length, drafting, warm-up, debounce).

The verdict (exit code 1 if a bar is missed): queue peak ≤ 1, every request answered, fresh
request under `fresh_bar_ms` (2000), RSS within the tolerance.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional

from dllm_lsp.bench.fuzz import RawClient, _key, exit_code, kill_if_running, rss_kb
from dllm_lsp.bench.fuzz_messages import dumps

TYPED = '''import os


def read_lines(path):
    """Every line of the file at path, without line ends."""
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\\n") for line in handle]


class Counter:
    def __init__(self):
        self.counts = {}

    def add(self, word):
        self.counts[word] = self.counts.get(word, 0) + 1
        return self.counts[word]

    def most_common(self, n=3):
        return sorted(self.counts.items(), key=lambda kv: -kv[1])[:n]


def main():
    counter = Counter()
    for line in read_lines(os.environ.get("INPUT", "input.txt")):
        for word in line.split():
            counter.add(word.lower())
    print(counter.most_common())


'''
SETTINGS_ROTATION = [{}, {"maxNewTokensLine": 8}, {"drafting": False}, {"warmUp": False}, {"debounceMs": 20},
                     {"maxNewTokensLine": 16, "streaming": False}]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=int, default=10000, help="keystrokes to type (default: 10000)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="soak instead: type for this many minutes, rotating documents and settings")
    parser.add_argument("--interval-ms", type=float, default=10.0, help="time between keystrokes (default: 10)")
    parser.add_argument("--model", default="embedded",
                        help="model for the server (default: embedded, the small built-in one)")
    parser.add_argument("--settings", default="{}", help="extra server settings as JSON (camelCase)")
    parser.add_argument("--sample-every", type=int, default=100, help="keys between two metrics samples (default: 100)")
    parser.add_argument("--warmup", type=float, default=0.2,
                        help="fraction of the run before RSS is judged (default: 0.2)")
    parser.add_argument("--rss-tolerance", type=float, default=0.05, help="allowed RSS change after warm-up (default: 0.05)")
    parser.add_argument("--rotate-keys", type=int, default=500, help="soak: keys per document (default: 500)")
    parser.add_argument("--fresh-bar-ms", type=float, default=2000.0,
                        help="a fresh request after the storm must be answered within this (default: 2000)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


class Typist:
    """Where the cursor is while TYPED is typed again and again (utf-16 positions, ASCII text)."""

    def __init__(self):
        self.i = 0
        self.line = 0
        self.col = 0

    def next_char(self) -> str:
        ch = TYPED[self.i % len(TYPED)]
        self.i += 1
        return ch

    def advance(self, ch: str) -> None:
        if ch == "\n":
            self.line, self.col = self.line + 1, 0
        else:
            self.col += 1


class Storm:
    def __init__(self, client: RawClient):
        self.client = client
        self.ids: List[str] = []
        self.n = 0

    async def request(self, method: str, params) -> str:
        self.n += 1
        rid = f"s{self.n}"
        self.ids.append(_key(rid))
        await self.client.send(dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        return rid

    async def notify(self, method: str, params) -> None:
        await self.client.send(dumps({"jsonrpc": "2.0", "method": method, "params": params}))

    async def call(self, method: str, params, timeout: float = 60.0) -> Optional[dict]:
        self.n += 1
        res = await self.client.call(method, params, f"c{self.n}", timeout)
        return None if res is None else res.get("result")

    async def open(self, uri: str, text: str) -> None:
        await self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                                     "version": 1, "text": text}})

    async def timed_completion(self, uri: str, line: int, character: int) -> float:
        t0 = time.perf_counter()
        await self.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri},
                                                          "position": {"line": line, "character": character},
                                                          "context": {"triggerKind": 1}}, timeout=120)
        return (time.perf_counter() - t0) * 1000


async def one_suggestion_ms(storm: Storm, tag: str) -> float:
    """Median time of 3 suggestions at fresh positions (a new document each, so no type-along cache hit)."""
    times = []
    for k in range(3):
        uri = f"file:///storm/fresh-{tag}-{k}.py"
        text = f"def total_{tag}_{k}(values):\n    result = 0\n    for v in values:\n        result = \n"
        await storm.open(uri, text)
        times.append(await storm.timed_completion(uri, 3, 17))
        await storm.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    return statistics.median(times)


async def storm_run(keys: int = 10000, minutes: Optional[float] = None, interval_ms: float = 10.0,
                    model: str = "embedded", settings: Optional[Dict] = None, sample_every: int = 100,
                    warmup: float = 0.2, rss_tolerance: float = 0.05, rotate_keys: int = 500,
                    fresh_bar_ms: float = 2000.0, env: Optional[dict] = None,
                    server: Optional[List[str]] = None) -> Dict:
    env = env or os.environ.copy()
    proc = await asyncio.create_subprocess_exec(*(server or [sys.executable, "-m", "dllm_lsp.cli", "--stdio"]),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env, limit=1 << 24)
    client = RawClient(proc)
    storm = Storm(client)
    base = {"model": model, **(settings or {})}
    summary: Dict = {"model": model, "interval_ms": interval_ms, "mode": "soak" if minutes else "storm"}
    stderr_task = asyncio.ensure_future(proc.stderr.read())
    try:
        init = await storm.call("initialize", {"processId": None, "rootUri": None, "capabilities": {},
                                               "initializationOptions": base}, timeout=300)
        if init is None:
            raise RuntimeError("initialize was not answered")
        await storm.notify("initialized", {})
        for _ in range(3000):
            m = await storm.call("dllm/metrics", {})
            if m and m.get("state") in ("ready", "error"):
                break
            await asyncio.sleep(0.1)
        if not m or m.get("state") != "ready":
            raise RuntimeError(f"the model did not load: {m}")
        summary["one_suggestion_ms"] = round(await one_suggestion_ms(storm, "before"), 1)

        typist, version, doc_no, rotation = Typist(), 1, 0, 0
        uri = f"file:///storm/typed-{doc_no}.py"
        await storm.open(uri, "")
        samples: List[Dict] = []
        deadline = time.monotonic() + minutes * 60 if minutes else None
        t_start = time.perf_counter()
        sent = 0
        late = 0
        while (sent < keys) if deadline is None else (time.monotonic() < deadline):
            if deadline is not None and sent and sent % rotate_keys == 0:      # soak: a new document, new settings
                await storm.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
                doc_no += 1
                uri, typist, version = f"file:///storm/typed-{doc_no}.py", Typist(), 1
                await storm.open(uri, "")
                rotation += 1
                await storm.notify("workspace/didChangeConfiguration",
                                   {"settings": {"dllm": {**base, **SETTINGS_ROTATION[rotation % len(SETTINGS_ROTATION)]}}})
            ch = typist.next_char()
            pos = {"line": typist.line, "character": typist.col}
            version += 1
            await storm.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": pos, "end": pos}, "text": ch}]})
            typist.advance(ch)
            await storm.request("textDocument/inlineCompletion", {
                "textDocument": {"uri": uri}, "position": {"line": typist.line, "character": typist.col},
                "context": {"triggerKind": 2}})
            sent += 1
            if sent % sample_every == 0:
                m = await storm.call("dllm/metrics", {})
                samples.append({"key": sent, "t": round(time.perf_counter() - t_start, 2),
                                "queueDepth": m.get("queueDepth"), "queuePeak": m.get("queuePeak"),
                                "rssKb": rss_kb(proc.pid), "answered": sum(k in client.responses for k in storm.ids)})
            wait = t_start + sent * interval_ms / 1000 - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late += 1
        storm_s = time.perf_counter() - t_start
        t_drain = time.perf_counter()
        while any(k not in client.responses for k in storm.ids) and time.perf_counter() - t_drain < 60:
            await asyncio.sleep(0.02)
        drain_ms = (time.perf_counter() - t_drain) * 1000
        fresh_ms = await one_suggestion_ms(storm, "after")
        final = await storm.call("dllm/metrics", {})
        samples.append({"key": sent, "t": round(time.perf_counter() - t_start, 2), "queueDepth": final.get("queueDepth"),
                        "queuePeak": final.get("queuePeak"), "rssKb": rss_kb(proc.pid),
                        "answered": sum(k in client.responses for k in storm.ids)})
        await storm.call("shutdown", None, timeout=30)
        await storm.notify("exit", None)
        code = await exit_code(proc)
    finally:
        await kill_if_running(proc)
        client.reader.cancel()
    stderr = (await stderr_task).decode("utf-8", "replace")
    after = [s for s in samples if s["key"] >= warmup * sent and s["rssKb"]]
    ref = after[0]["rssKb"] if after else None
    spread = [round(s["rssKb"] / ref - 1, 4) for s in after] if ref else []
    unanswered = [k for k in storm.ids if k not in client.responses]
    results = [client.responses[k] for k in storm.ids if k in client.responses]
    nonempty = sum(1 for r in results if (r.get("result") or {}).get("items"))
    summary.update({
        "keys": sent, "seconds": round(storm_s, 1), "keys_per_s": round(sent / storm_s, 1) if storm_s else None,
        "late_ticks": late, "requests": len(storm.ids), "unanswered": len(unanswered),
        "errors": sum(1 for r in results if "error" in r), "nonempty_answers": nonempty,
        "queue_peak": max([s["queuePeak"] or 0 for s in samples] + [final.get("queuePeak") or 0]),
        "queue_depth_max_sampled": max(s["queueDepth"] or 0 for s in samples),
        "drain_ms": round(drain_ms, 1), "fresh_request_ms": round(fresh_ms, 1),
        "rss_after_warmup_kb": ref, "rss_end_kb": after[-1]["rssKb"] if after else None,
        "rss_min_change": min(spread) if spread else None, "rss_max_change": max(spread) if spread else None,
        "engine_jobs": {k: final.get(k) for k in ("jobsSubmitted", "jobsSuperseded", "jobsRun")},
        "exit_code": code, "stderr_lines": len([l for l in stderr.splitlines() if l.strip()]),
        "stderr_tail": stderr.splitlines()[-3:], "samples": samples,
        "soak_documents": doc_no + 1, "soak_setting_changes": rotation,
    })
    summary["pass"] = {
        "queue_peak_le_1": summary["queue_peak"] <= 1,
        "all_answered": not unanswered and code == 0,
        "fresh_under_bar": fresh_ms < fresh_bar_ms,
        "rss_within_tolerance": bool(spread) and max(abs(x) for x in spread) <= rss_tolerance,
    }
    return summary


def run(args) -> int:
    summary = asyncio.run(storm_run(args.keys, args.minutes, args.interval_ms, args.model, json.loads(args.settings),
                                    args.sample_every, args.warmup, args.rss_tolerance, args.rotate_keys,
                                    args.fresh_bar_ms))
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for key in ("mode", "keys", "seconds", "keys_per_s", "late_ticks", "requests", "unanswered", "errors",
                    "nonempty_answers", "queue_peak", "queue_depth_max_sampled", "one_suggestion_ms",
                    "fresh_request_ms", "drain_ms", "rss_after_warmup_kb", "rss_end_kb", "rss_min_change",
                    "rss_max_change", "engine_jobs", "soak_documents", "soak_setting_changes", "stderr_lines", "pass"):
            print(f"{key:>24}: {summary.get(key)}")
    return 0 if all(summary["pass"].values()) else 1
