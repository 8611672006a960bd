"""`bench typing`'s results (pure): one Pause per pause, summaries per phase, the table, the
ratios to the anchor and to the floor, and the box plots."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

PHASES = ("enter", "mid", "accept")


@dataclass
class Pause:
    phase: str
    shown: bool
    exact: bool
    ms: Optional[float]              # last key -> answer
    first_text_ms: Optional[float]   # last key -> first streamed text of the last request
    first_line_ms: Optional[float]   # last key -> its first whole line (streamed, or the answer)
    queue_ms: Optional[float]
    context_tokens: Optional[int]
    forwards: Optional[int]
    keys: int
    tokens_per_key: float            # context tokens the engine computed in the phase / keys
    floor_ms: Optional[float] = None # the same position asked again with everything cached
    answer: str = ""
    reason: Optional[str] = None     # the server's reason for the last answer (ok, cached, ...)
    document: str = ""               # the text at the pause, and the cursor (line, character)
    cursor: Tuple[int, int] = (0, 0)
    uri: str = ""                    # the document typed in


# ---- summaries ---------------------------------------------------------------------------------

def _q(values: Sequence[float], p: int) -> Optional[float]:
    values = [v for v in values if v is not None]
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 1)


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 1) if values else None


def summarize(pauses: Sequence[Pause]) -> Dict[str, Dict]:
    out = {}
    for phase in PHASES:
        ps = [p for p in pauses if p.phase == phase]
        if not ps:
            continue
        out[phase] = {"pauses": len(ps), "shown": round(sum(p.shown for p in ps) / len(ps), 3),
                      "exact": None if phase == "accept" else round(sum(p.exact for p in ps) / len(ps), 3),
                      "p50_ms": _q([p.ms for p in ps], 50), "p90_ms": _q([p.ms for p in ps], 90),
                      "first_text_p50_ms": _q([p.first_text_ms for p in ps], 50),
                      "first_line_p50_ms": _q([p.first_line_ms for p in ps], 50),
                      "queue_ms_mean": _mean([p.queue_ms for p in ps]),
                      "context_tokens_mean": _mean([p.context_tokens for p in ps]),
                      "forwards_mean": _mean([p.forwards for p in ps]),
                      "tokens_per_key": _mean([p.tokens_per_key for p in ps]),
                      "floor_p50_ms": _q([p.floor_ms for p in ps], 50),
                      "ready": round(sum(p.reason == "cached" for p in ps) / len(ps), 3)}
    return out


COLUMNS = (("pauses", "pauses"), ("shown", "shown"), ("exact", "exact"), ("p50 ms", "p50_ms"),
           ("p90 ms", "p90_ms"), ("1st text", "first_text_p50_ms"), ("1st line", "first_line_p50_ms"),
           ("queue ms", "queue_ms_mean"),
           ("ctx tok", "context_tokens_mean"), ("passes", "forwards_mean"), ("tok/key", "tokens_per_key"),
           ("floor p50", "floor_p50_ms"), ("ready", "ready"))


def table(rows: Dict[str, Dict[str, Dict]]) -> str:
    out = [f"{'row':22}{'phase':7}" + "".join(f"{h:>10}" for h, _ in COLUMNS)]
    for name, phases in rows.items():
        for phase, r in phases.items():
            out.append(f"{name:22}{phase:7}" + "".join(f"{'-' if r.get(k) is None else r[k]:>10}" for _, k in COLUMNS))
    return "\n".join(out)


def headline(rows: Dict[str, Dict[str, Dict]], ours: str, anchor: Optional[str]) -> Dict:
    """Ratios per phase: our p50 / the anchor's p50, and our p50 / our floor p50."""
    out: Dict = {}
    for phase in PHASES:
        r = rows.get(ours, {}).get(phase)
        if not r:
            continue
        if r.get("floor_p50_ms"):
            out[f"{phase}_floor_ratio"] = round(r["p50_ms"] / r["floor_p50_ms"], 2)
        a = rows.get(anchor, {}).get(phase) if anchor else None
        if a and a.get("p50_ms"):
            out[f"{phase}_anchor_ratio"] = round(r["p50_ms"] / a["p50_ms"], 3)
    return out


def plot(raw: Dict[str, List[Pause]], path: Path) -> Optional[str]:
    """Box plots of last key -> answer per row and phase; the reason if it could not be drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    fig, axes = plt.subplots(1, len(PHASES), figsize=(5.5 * len(PHASES), 4.8), squeeze=False)
    for ax, phase in zip(axes[0], PHASES):
        data = [[p.ms for p in ps if p.phase == phase and p.ms is not None] for ps in raw.values()]
        ax.boxplot(data)
        ax.set_xticks(range(1, len(raw) + 1), list(raw), fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"after the last key: {phase}")
        ax.set_ylabel("ms to the suggestion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
