"""`bench decode`'s report (pure): the headline ratios (drafted against one token per pass, ours
against llama.cpp), the table, and the box plots."""
from __future__ import annotations

from pathlib import Path

from typing import Dict, Optional, Sequence
from dllm_lsp.bench.decode_cases import KINDS

ANCHORS = ("llama.cpp", "llama-server")      # llama-cpp-python's worker, llama.cpp's own C++ server


def _ratio(ours: Optional[Dict], key: str, ref: Optional[Dict]) -> Optional[float]:
    if ours and ref and ours.get(key) and ref.get("warm_p50_ms"):
        return round(ours[key] / ref["warm_p50_ms"], 3)
    return None


def headline(rows: Sequence[Dict]) -> Dict:
    """The ratios are ours (warm p50) over the faster llama.cpp anchor's warm p50 on the same
    cases: `llamacpp_ratio*` with our warm state (the prompt's last state cached, as the
    server's warm-up leaves it), `*_equal` with llama.cpp's (the last prompt token recomputed)."""
    by = {(r["kind"], r["decoder"]): r for r in rows}
    drafted = [r for r in rows if r["decoder"] not in ("one-per-pass",) + ANCHORS]
    n = sum(r["compared"] for r in drafted)
    same = sum(r["same_count"] for r in drafted)
    ratios, served_ratios, equal_ratios, anchors = {}, {}, {}, {}
    for kind in KINDS:
        refs = [by[(kind, a)] for a in ANCHORS if (kind, a) in by and by[(kind, a)]["warm_p50_ms"]]
        ref = min(refs, key=lambda r: r["warm_p50_ms"]) if refs else None
        served = next((r for r in rows if r["kind"] == kind and r["decoder"].startswith("lookup+")), None)
        for out, ours, key in ((ratios, by.get((kind, "lookup")), "warm_p50_ms"),
                               (served_ratios, served, "warm_p50_ms"), (equal_ratios, served, "warm_eq_p50_ms")):
            value = _ratio(ours, key, ref)
            if value is not None:
                out[kind] = value
                anchors[kind] = ref["decoder"]
    line = by.get(("stdlib-line", "lookup"))
    gains, gains_warm = {}, {}
    for r in rows:
        if r["kind"] == "stdlib-line" and r["decoder"].startswith("lookup+") and line:
            for key, out in (("tokens_per_forward", gains), ("tokens_per_forward_warm", gains_warm)):
                if line[key] and r[key]:
                    out[r["decoder"]] = round(r[key] / line[key], 3)
    first = next(iter(gains), None)
    return {"identical": round(same / n, 4) if n else None,
            "tokens_per_forward": line["tokens_per_forward"] if line else None,
            "tokens_per_forward_warm": line["tokens_per_forward_warm"] if line else None,
            "tokens_per_forward_with_mask": by[("stdlib-line", first)]["tokens_per_forward"] if first else None,
            "tokens_per_forward_with_mask_warm": by[("stdlib-line", first)]["tokens_per_forward_warm"] if first else None,
            "mask_gain": gains.get(first), "mask_gain_warm": gains_warm.get(first), "drafter_gains": gains,
            "llamacpp_ratio": ratios.get("stdlib-line"), "llamacpp_ratios": ratios,
            "llamacpp_ratio_served": served_ratios.get("stdlib-line"), "llamacpp_ratios_served": served_ratios,
            "llamacpp_ratio_served_equal": equal_ratios.get("stdlib-line"), "llamacpp_ratios_served_equal": equal_ratios,
            "llamacpp_ratio_served_reporting": served_ratios.get("realcode-line"),
            "llamacpp_ratio_served_equal_reporting": equal_ratios.get("realcode-line"), "anchors": anchors}


COLUMNS = (("n", "suggestions"), ("tok/sugg", "tokens_per_suggestion"), ("tok/fwd", "tokens_per_forward"),
           ("tok/fwd w", "tokens_per_forward_warm"), ("fwd/sugg", "forwards_per_suggestion"),
           ("cold p50", "cold_p50_ms"), ("cold p95", "cold_p95_ms"), ("warm p50", "warm_p50_ms"),
           ("warm p95", "warm_p95_ms"), ("warm= p50", "warm_eq_p50_ms"), ("same", "same"), ("accept", "acceptance"))


def table(rows: Sequence[Dict]) -> str:
    out = [f"{'cases':16}{'decoder':14}" + "".join(f"{h:>10}" for h, _ in COLUMNS)]
    for r in rows:
        out.append(f"{r['kind']:16}{r['decoder']:14}"
                   + "".join(f"{'-' if r[k] is None else r[k]:>10}" for _, k in COLUMNS))
    return "\n".join(out)


def plot(raw: Dict, path: Path) -> Optional[str]:
    """Box plots of the latencies per case kind; the reason if it could not be drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    kinds = [k for k in KINDS if any(key.startswith(k + "|") for key in raw)]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5.5 * max(1, len(kinds)), 4.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        data, labels = [], []
        for key, v in raw.items():
            if key.startswith(kind + "|"):
                for phase in ("cold", "warm"):
                    data.append(v[phase])
                    labels.append(f"{key.split('|')[1]}\n{phase}")
        ax.boxplot(data)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(kind)
        ax.set_ylabel("ms per suggestion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
