"""Run tests/gpu/checks.py's cases without pytest (for GPU boxes that do not have it).

    python scripts/gpu_check_runner.py [--only SUBSTRING] [--quick] [--json FILE] [--deadline SECONDS]

Prints one line per case (PASS / FAIL / SKIP with the check's message), writes the results
as JSON, and exits 1 if any case failed. Cases after the deadline are reported as not run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only cases whose name contains this")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="only the first case of each check")
    parser.add_argument("--deadline", type=float, default=0, help="stop starting new cases after this many seconds")
    args = parser.parse_args(argv)

    from tests.gpu import checks

    t0 = time.perf_counter()
    results, seen = [], set()
    for name, fn, kwargs in checks.CASES:
        if (args.only and args.only not in name) or (args.quick and fn in seen):
            continue
        seen.add(fn)
        if args.deadline and time.perf_counter() - t0 > args.deadline:
            results.append({"name": name, "status": "NOT RUN", "detail": "deadline", "s": 0.0})
            continue
        start = time.perf_counter()
        try:
            detail, status = fn(**kwargs), "PASS"
        except checks.Skip as exc:
            detail, status = str(exc), "SKIP"
        except AssertionError as exc:
            detail, status = str(exc) or traceback.format_exc(limit=3), "FAIL"
        except Exception as exc:  # noqa: BLE001 (a crash is a failure with its traceback)
            detail, status = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}", "FAIL"
        results.append({"name": name, "status": status, "detail": detail, "s": time.perf_counter() - start})
        print(f"{status:5} {name} ({results[-1]['s']:.2f}s) {detail}", flush=True)
    counts = {s: sum(r["status"] == s for r in results) for s in ("PASS", "FAIL", "SKIP", "NOT RUN")}
    print(" ".join(f"{k.lower()}: {v}" for k, v in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "results": results}, indent=1))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
