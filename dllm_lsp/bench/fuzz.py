"""`dllm-lsp bench fuzz --messages N`: seeded valid and broken LSP traffic against a real stdio server.

Design. A seeded generator (`Fuzzer`) writes framed messages straight onto the server's stdin,
mixing valid traffic (didOpen / didChange / didClose on a small pool of documents whose text
the generator tracks, inline and completion requests at valid positions, dllm/cursor,
dllm/metrics, cancels of its own requests) with broken traffic: wrong shapes and types, out
of range and reversed ranges, lone surrogates, huge and deeply nested params, unopened
documents, unknown methods, cancels of unknown ids, responses nobody asked for, JSON that is
not JSON-RPC, non-JSON and non-UTF-8 bodies. `exit`, `shutdown` and `initialize` are never
fuzzed (they end or reset a session by design), nor are settings (a bad setting is a message
to the user by design, one per setting).

Every generated message carries an expectation: `ok` (valid: no log line), `reject` (exactly
one log line tagged with its ordinal, see lsp/logs.py; a request with a usable id also gets an
error answer) or `maybe` (at most one line: e.g. a reversed range the document model
tolerates). Every `batch` messages a probe (dllm/metrics, and now and then an inline
completion in an open document) is sent and must be answered with a result within
`probe_timeout` seconds; every request with a usable id must be answered at the end.

The summary: messages sent, crashes (the server died or exited non-zero), unanswered probes
and requests, log lines at the default level, traceback lines, messages with the wrong number
of lines, the server's RSS at start and end, and throughput.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from dllm_lsp.bench.fuzz_messages import Fuzzer, dumps, frame

TAG = re.compile(r"\[msg (\d+)\]")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=10000, help="messages to send (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator (default: 0)")
    parser.add_argument("--model", default="embedded",
                        help="model for the server (default: embedded, the small built-in one)")
    parser.add_argument("--batch", type=int, default=100, help="messages between two probes (default: 100)")
    parser.add_argument("--probe-timeout", type=float, default=30.0, help="seconds a probe may take (default: 30)")
    parser.add_argument("--server-log", type=Path, default=None,
                        help="keep the server's stderr in this file (default: a temporary file)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="start the server with -v (tracebacks in its log; line counts are then not checked)")


# ---- the client side ------------------------------------------------------------------------

class RawClient:
    """Frames in and out of a `dllm-lsp --stdio` subprocess; responses kept by id."""

    def __init__(self, proc):
        self.proc = proc
        self.responses: Dict[object, dict] = {}
        self.waiters: Dict[object, asyncio.Future] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = await out.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                elif line in (b"\r\n", b"\n") and length is not None:
                    break
            msg = json.loads(await out.readexactly(length))
            if isinstance(msg.get("error"), dict):       # keep errors small (one may echo a 1 MB method name)
                msg["error"] = {"code": msg["error"].get("code"), "message": str(msg["error"].get("message"))[:300]}
            if "id" in msg and "method" not in msg:
                key = _key(msg["id"])
                self.responses[key] = msg
                fut = self.waiters.pop(key, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)

    async def send(self, body: bytes) -> None:
        self.proc.stdin.write(frame(body))
        await self.proc.stdin.drain()

    async def call(self, method: str, params, rid: str, timeout: float) -> Optional[dict]:
        fut = asyncio.get_running_loop().create_future()
        self.waiters[_key(rid)] = fut
        await self.send(dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return None


def _key(msg_id):
    return json.dumps(msg_id, sort_keys=True)


async def exit_code(proc, timeout: float = 30) -> int:
    """The server's exit code once it has exited after `exit` (killed after `timeout` s)."""
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        return await proc.wait()


async def kill_if_running(proc) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def rss_kb(pid: int) -> Optional[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def count_lines(log_text: str, expectations: Dict[int, str]) -> Dict[str, object]:
    """Log lines per message ordinal against each message's expectation."""
    per: Dict[int, int] = {}
    untagged, tracebacks = [], 0
    lines = [l for l in log_text.splitlines() if l.strip()]
    for line in lines:
        if line.startswith("Traceback") or line.startswith("  File ") or "Traceback (most recent call last)" in line:
            tracebacks += 1
        m = TAG.search(line)
        if m:
            no = int(m.group(1))
            per[no] = per.get(no, 0) + 1
        else:
            untagged.append(line)
    wrong = []
    for no, (expect, _what) in expectations.items():
        n = per.get(no, 0)
        if (expect == "ok" and n) or (expect == "reject" and n != 1) or (expect == "maybe" and n > 1):
            wrong.append((no, expect, n, _what))
    return {"log_lines": len(lines), "traceback_lines": tracebacks, "untagged_lines": untagged[:20],
            "untagged_count": len(untagged), "wrong_line_counts": wrong[:20], "wrong_line_count": len(wrong),
            "rejected_lines": sum(per.values())}


async def fuzz(messages: int, seed: int = 0, model: str = "embedded", batch: int = 100,
               probe_timeout: float = 30.0, server_log: Optional[Path] = None, verbose: int = 0,
               env: Optional[dict] = None, settings: Optional[dict] = None) -> Dict[str, object]:
    """Run the fuzz session; returns the summary (see the module docstring)."""
    log_path = server_log or Path(tempfile.mkstemp(prefix="dllm-fuzz-", suffix=".log")[1])
    log_file = open(log_path, "wb")
    cmd = [sys.executable, "-m", "dllm_lsp.cli", "--stdio"] + (["-v"] * verbose)
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=log_file, env=env or os.environ.copy(), limit=1 << 24)
    client = RawClient(proc)
    fz = Fuzzer(seed)
    expectations: Dict[int, Tuple[str, str]] = {}       # ordinal -> (expectation, what was sent)
    kinds: Dict[str, int] = {}
    must_answer: Dict[str, bool] = {}       # request id -> probe?
    what: Dict[str, str] = {}
    number = 0                              # ordinal of framed messages, as the server counts them
    unanswered_probes: List[str] = []
    t0 = time.perf_counter()
    summary: Dict[str, object] = {"messages": messages, "seed": seed, "model": model}
    try:
        number += 1
        init = await client.call("initialize", {"processId": None, "rootUri": None, "capabilities": {},
                                                "initializationOptions": {"model": model, "warmUpDelayMs": 50,
                                                                          **(settings or {})}}, "init", 120)
        if init is None or "result" not in init:
            raise RuntimeError(f"initialize was not answered: {init}")
        expectations[number] = ("ok", "session")
        number += 1
        await client.send(dumps({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        expectations[number] = ("ok", "session")
        for _ in range(600):                 # until the model is loaded (metrics.state)
            number += 1
            m = await client.call("dllm/metrics", {}, f"ready-{number}", 30)
            expectations[number] = ("ok", "session")
            if m and m.get("result", {}).get("state") in ("ready", "error"):
                summary["model_state"] = m["result"]["state"]
                break
            await asyncio.sleep(0.1)
        rss_start = rss_kb(proc.pid)
        summary["load_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        sent = 0
        while sent < messages:
            for _ in range(min(batch, messages - sent)):
                out = fz.next()
                number += 1
                sent += 1
                expectations[number] = (out.expect, f"{out.kind}: {out.body[:100]!r}")
                kinds[out.kind] = kinds.get(out.kind, 0) + 1
                if out.answer_id is not None:
                    must_answer[_key(out.answer_id)] = out.probe
                    what[_key(out.answer_id)] = f"{out.kind}: {out.body[:100]!r}"
                await client.send(out.body)
            number += 1
            pid = f"probe-{number}"
            expectations[number] = ("ok", "session")
            tp = time.perf_counter()
            res = await client.call("dllm/metrics", {}, pid, probe_timeout)
            if os.environ.get("FUZZ_DEBUG"): print(number, round(time.perf_counter() - tp, 3), file=sys.stderr)
            if res is None or "result" not in res:
                unanswered_probes.append(pid)
                if proc.returncode is not None:
                    break
        deadline = time.monotonic() + probe_timeout
        while time.monotonic() < deadline and any(k not in client.responses for k in must_answer):
            await asyncio.sleep(0.05)
        rss_end = rss_kb(proc.pid)
        elapsed = time.perf_counter() - t0
        number += 1
        await client.call("shutdown", None, "bye", 30)
        await client.send(dumps({"jsonrpc": "2.0", "method": "exit", "params": None}))
        code = await exit_code(proc)
    finally:
        await kill_if_running(proc)
        client.reader.cancel()
        log_file.close()
    unanswered = [k for k in must_answer if k not in client.responses]
    summary["unanswered_examples"] = [what.get(k) for k in unanswered[:5]]
    cancelled = {_key(r) for r in fz.cancelled}
    probe_errors = [k for k, probe in must_answer.items() if probe and k in client.responses and k not in cancelled
                    and "result" not in client.responses[k]]
    summary.update({
        "sent": sent, "crashes": int(code != 0), "exit_code": code, "seconds": round(elapsed, 1),
        "messages_per_s": round(sent / elapsed, 1) if elapsed else None,
        "broken": sum(v for k, v in kinds.items() if k != "valid"), "kinds": kinds,
        "probes": len([1 for v in must_answer.values() if v]) + sent // max(batch, 1),
        "unanswered_probes": len(unanswered_probes) + len([k for k in unanswered if must_answer[k]]),
        "probe_errors": len(probe_errors), "probe_error_examples": [client.responses[k] for k in probe_errors[:3]],
        "unanswered_requests": len(unanswered), "load_s": summary.get("load_s"), "rss_start_kb": rss_start, "rss_end_kb": rss_end,
        "server_log": str(log_path),
    })
    log_text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    summary.update(count_lines(log_text, expectations if verbose == 0 else {}))
    return summary


def run(args) -> int:
    summary = asyncio.run(fuzz(args.messages, args.seed, args.model, args.batch, args.probe_timeout,
                               args.server_log, args.verbose))
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for key in ("sent", "broken", "crashes", "probes", "unanswered_probes", "probe_errors", "unanswered_requests",
                    "log_lines", "traceback_lines", "wrong_line_count", "untagged_count", "rss_start_kb",
                    "rss_end_kb", "seconds", "messages_per_s", "server_log"):
            print(f"{key:>20}: {summary.get(key)}")
        print(f"{'kinds':>20}: {summary['kinds']}")
    bad = (summary["crashes"] or summary["unanswered_probes"] or summary["unanswered_requests"]
           or summary["probe_errors"] or (args.verbose == 0 and (summary["traceback_lines"]
                                                                 or summary["wrong_line_count"])))
    return 1 if bad else 0
