"""Summarise a scripts/gpu_check.sh run ($OUT) as Markdown against issue 5's targets.

    python scripts/gpu_report.py OUT_DIR > OUT_DIR/gpu_report.md

Reads env.txt, gpu_tests.xml (pytest junit) or gpu_tests.json (the plain runner) and
bench_*.json (engine.bench.steps --out). Missing pieces are reported as missing, never invented.
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.bench.steps import TARGETS, format_table  # noqa: E402


def test_summary(out: Path) -> list:
    lines = ["## GPU tests"]
    xml, js = out / "gpu_tests.xml", out / "gpu_tests.json"
    if xml.is_file():
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        total, fail = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        lines.append(f"pytest -m gpu: {total - fail - skip} passed, {fail} failed, {skip} skipped")
        for case in suite.iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                lines.append(f"- FAIL `{case.get('name')}`: {(bad.get('message') or '').splitlines()[0][:300]}")
    elif js.is_file():
        data = json.loads(js.read_text())
        c = data["counts"]
        lines.append(f"runner: {c['PASS']} passed, {c['FAIL']} failed, {c['SKIP']} skipped, {c['NOT RUN']} not run")
        lines += [f"- {r['status']} `{r['name']}`: {str(r['detail']).splitlines()[0][:300]}"
                  for r in data["results"] if r["status"] in ("FAIL", "NOT RUN")]
    else:
        lines.append("no test results found")
    return lines


def load_bench(out: Path, name: str):
    path = out / f"bench_{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _model(b) -> str:
    s = b["setup"]
    return (f"{Path(str(s['source']).split()[-1]).stem} ({s['layers']}L, {s['dtype']}, {s['kernels']} kernels, "
            f"ctx {s['context']}+{s['block']})")


def targets(benches: dict) -> list:
    rows = []
    for name, b in benches.items():
        if not b or "step" not in b:
            continue
        st = b["step"]
        rows.append([f"step / weight-read floor, {_model(b)}", f"{st['floor_ratio']:.2f}",
                     f"<= {TARGETS['floor_ratio']}", st["floor_ratio"] <= TARGETS["floor_ratio"]])
        tps = st["tokens_per_s_at_fixed_tpf"]["6"]
        rows.append([f"tokens/s at 6 tokens/forward, {_model(b)}", f"{tps:.0f}",
                     f">= {TARGETS['tokens_per_s_at_6']:.0f}", tps >= TARGETS["tokens_per_s_at_6"]])
        dec = next((r for r in b.get("kernels", []) if r["kernel"] == "decision"), None)
        if dec and "speedup_vs_softmax_max_argmax" in dec:
            best = max(dec["speedup_vs_softmax_max_argmax"], dec.get("graphed_speedup_vs_softmax_max_argmax") or 0)
            rows.append([f"decision vs softmax+max+argmax, {dec['shape']}",
                         f"{dec['speedup_vs_softmax_max_argmax']:.2f}x eager, "
                         f"{dec.get('graphed_speedup_vs_softmax_max_argmax') or 0:.2f}x graphed",
                         f">= {TARGETS['decision_speedup']}x", best >= TARGETS["decision_speedup"]])
    return ["## Targets (issue 5)", format_table(["target", "measured", "goal", "met"], rows) if rows
            else "no benchmark results found"]


def step_table(benches: dict) -> list:
    rows = []
    for name, b in benches.items():
        if not b or "step" not in b:
            continue
        st = b["step"]
        rows.append([name, st["kernels"], st["step_ms_eager"], st["step_ms_graphed"], st["full_canvas_ms"],
                     st["floor_ms"], st["floor_ms_with_kv"], f"{st['copy_bandwidth_gbs']:.0f}",
                     f"{st['weight_bytes_read'] / 1e9:.2f}"])
    return ["## One step (query = one block against the cached context; forward + decision), ms",
            format_table(["run", "kernels", "eager", "CUDA graph", "full canvas", "floor", "floor+KV", "GB/s",
                          "weights GB"], rows)]


def policy_tables(benches: dict) -> list:
    lines = []
    for name, b in benches.items():
        if not b or "policies" not in b:
            continue
        rows = [[r["policy"], r["cache"], r["forwards"], r["tokens_per_forward"], r["ms_per_forward"],
                 r["tokens_per_s"], f"{100 * r['match_baseline']:.0f}%"] for r in b["policies"]]
        lines += [f"## Policies x caches: {_model(b)} (random weights: confidences are flat)",
                  format_table(["policy", "cache", "forwards", "tok/fwd", "ms/fwd", "tok/s", "= baseline"], rows), ""]
    return lines


def kernel_tables(benches: dict) -> list:
    lines = []
    for name, b in benches.items():
        if not b or "kernels" not in b:
            continue
        rows = [[r["kernel"], r["shape"], r["torch_us"], r.get("fused_us"), r.get("torch_graphed_us"),
                 r.get("fused_graphed_us")] for r in b["kernels"]]
        lines += [f"## Kernels, us per call: {_model(b)}",
                  format_table(["kernel", "shape", "torch", "fused", "torch graphed", "fused graphed"], rows), ""]
    return lines


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:] or ["gpu_out"])[0])
    benches = {name: load_bench(out, name) for name in ("dream", "llada", "dream_torch_kernels")}
    env = (out / "env.txt").read_text().strip() if (out / "env.txt").is_file() else "env.txt missing"
    lines = ["# dllm-lsp GPU check", "", "```", env, "```", ""]
    for part in (test_summary(out), targets(benches), step_table(benches), policy_tables(benches),
                 kernel_tables(benches)):
        lines += part + [""]
    missing = [n for n, b in benches.items() if b is None]
    if missing:
        lines.append(f"missing benchmark results: {', '.join(missing)} (see bench_*.txt)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
