"""Local usage counts (`dllm-lsp stats`): suggestions shown and accepted, acceptance rate, latency.

The server records `dllm/didShowCompletion`, `dllm/didAcceptCompletion` and the latency of
every answered completion in one JSON file, `stats.json`, under
platformdirs.user_state_dir("dllm-lsp") or $DLLM_LSP_STATE_DIR. Writes are atomic (temp file +
rename). Nothing is ever sent anywhere. Latencies keep the most recent MAX_LATENCIES samples.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Dict, List, Optional

MAX_LATENCIES = 2000
FILE_NAME = "stats.json"


def state_dir() -> Path:
    override = os.environ.get("DLLM_LSP_STATE_DIR")
    if override:
        return Path(override)
    import platformdirs
    return Path(platformdirs.user_state_dir("dllm-lsp"))


def percentile(values: List[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))      # ceil(q/100 * n)
    return ordered[min(rank, len(ordered)) - 1]


class StatsStore:
    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path else state_dir() / FILE_NAME
        self._lock = threading.Lock()
        self.data = self._read()

    def _read(self) -> Dict:
        base = {"shown": 0, "accepted": 0, "acceptedChars": 0, "shownChars": 0, "completions": 0,
                "cacheHits": 0, "latenciesMs": []}
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                base.update({k: v for k, v in loaded.items() if k in base and type(v) is type(base[k])})
        except (OSError, ValueError):
            pass
        return base

    def record_shown(self, text: str) -> None:
        with self._lock:
            self.data["shown"] += 1
            self.data["shownChars"] += len(text)

    def record_accepted(self, accepted_length: int) -> None:
        with self._lock:
            self.data["accepted"] += 1
            self.data["acceptedChars"] += max(0, int(accepted_length))

    def record_latency(self, ms: float, cached: bool = False) -> None:
        with self._lock:
            self.data["completions"] += 1
            self.data["cacheHits"] += int(cached)
            lat = self.data["latenciesMs"]
            lat.append(round(float(ms), 2))
            del lat[: max(0, len(lat) - MAX_LATENCIES)]

    def save(self) -> None:
        with self._lock:
            body = json.dumps(self.data)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(body)
            os.replace(tmp, self.path)
        except OSError:
            pass                       # counts are a convenience; never break the server over them

    def summary(self) -> Dict:
        with self._lock:
            d = dict(self.data)
            lat = list(d.pop("latenciesMs"))
        d["acceptanceRate"] = round(d["accepted"] / d["shown"], 4) if d["shown"] else None
        d["latencyMs"] = {"count": len(lat), "p50": percentile(lat, 50), "p90": percentile(lat, 90),
                          "p95": percentile(lat, 95), "p99": percentile(lat, 99)}
        d["file"] = str(self.path)
        return d


# ---- `dllm-lsp stats` -------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument("--reset", action="store_true", help="delete the counts file")


def run(args) -> int:
    store = StatsStore()
    if args.reset:
        try:
            store.path.unlink()
        except FileNotFoundError:
            pass
        print(f"removed {store.path}")
        return 0
    s = store.summary()
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    rate = "n/a" if s["acceptanceRate"] is None else f"{100 * s['acceptanceRate']:.1f}%"
    lat = s["latencyMs"]
    fmt = lambda v: "n/a" if v is None else f"{v:.0f} ms"
    print(f"suggestions shown    {s['shown']}")
    print(f"accepted             {s['accepted']}  ({rate})")
    print(f"accepted characters  {s['acceptedChars']}")
    print(f"completions answered {s['completions']}  (type-along cache hits: {s['cacheHits']})")
    print(f"latency              p50 {fmt(lat['p50'])}  p95 {fmt(lat['p95'])}  p99 {fmt(lat['p99'])}  "
          f"({lat['count']} samples)")
    print(f"stored in            {s['file']}  (local only; nothing is sent anywhere)")
    return 0
