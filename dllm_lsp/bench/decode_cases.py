"""`bench decode`'s cases (pure): a hole cut in a real line at a token boundary (the rest of the line is
the reference), a block emptied after its opener, HumanEval's single-line holes; each case's
request as the server would build it, and the reference's tokens up to its newline.

Two sets of real files: `stdlib-*` (standard-library modules, engine/eval_data.py BENCH_MODULES)
is the tuning split, on which the drafters' thresholds and lookup's lengths were chosen;
`realcode-*` (the reporting split of `dllm-lsp pull realcode`: third-party packages no drafter,
test or tuning has seen, bench/realcode_sources.py) is where numbers are quoted from."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from engine.eval_data import bench_files
from typing import List, Optional, Sequence

KINDS = ("stdlib-line", "stdlib-block", "realcode-line", "realcode-block", "humaneval-line")


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    document: str
    offset: int          # cursor, code points into document
    reference: str       # what was removed
    line: bool           # stop at the first newline


def _line_starts(lines: Sequence[str]) -> List[int]:
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    return starts


def token_cuts(line: str, tokenizer) -> List[int]:
    """Offsets in `line` where its token encoding has a boundary, after the indentation and
    before the last non-blank character (so the removed rest is never blank)."""
    indent, end = len(line) - len(line.lstrip()), len(line.rstrip())
    ids = tokenizer.encode(line)
    cuts = set()
    for k in range(1, len(ids)):
        head = tokenizer.decode(ids[:k])
        if line.startswith(head) and indent < len(head) < end:
            cuts.add(len(head))
    return sorted(cuts)


def cut_line_cases(name: str, text: str, n: int, rng: random.Random, tokenizer, kind: str = "stdlib-line") -> List[Case]:
    lines = text.split("\n")
    starts = _line_starts(lines)
    candidates = [i for i, l in enumerate(lines)
                  if len(l.strip()) >= 8 and not l.strip().startswith(("#", '"""', "'''"))]
    out = []
    for i in sorted(rng.sample(candidates, min(n, len(candidates)))):
        cuts = token_cuts(lines[i], tokenizer)
        if not cuts:
            continue
        cut = rng.choice(cuts)
        offset = starts[i] + cut
        doc = text[:offset] + text[starts[i] + len(lines[i]):]
        out.append(Case(kind, f"{name}:{i + 1}", doc, offset, lines[i][cut:], True))
    return out


def cut_block_cases(name: str, text: str, n: int, rng: random.Random, kind: str = "stdlib-block") -> List[Case]:
    from dllm_lsp.bench.lsp import sample_block_positions
    out = []
    for s in sample_block_positions(name, text, n, rng):
        offset = _line_starts(s.text.split("\n"))[s.line] + s.character
        out.append(Case(kind, f"{name}:{s.line + 1}", s.text, offset, s.reference, False))
    return out


def realcode_files() -> List[Path]:
    """The `.py` files of the realcode reporting split (SourcesMissing: not pulled)."""
    from dllm_lsp.bench.realcode_sources import source_files
    return [p for paths in source_files("reporting").values() for p in paths]


def stdlib_cases(kind: str, limit: int, tokenizer, seed: int = 0, files: Optional[Sequence[Path]] = None) -> List[Case]:
    """`limit` cases of `kind` spread over the files (a few from each, then a seeded sample);
    the files: the standard-library bench modules for stdlib-*, the realcode reporting split
    for realcode-*."""
    rng = random.Random(f"{seed}/{kind}")
    if files is None:
        files = realcode_files() if kind.startswith("realcode") else bench_files()
    per_file = -(-limit // max(1, len(files))) + 1
    cases: List[Case] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        name = path.name if path.parent.name.startswith("python") else f"{path.parent.name}/{path.name}"
        cases += (cut_line_cases(name, text, per_file, rng, tokenizer, kind) if kind.endswith("-line")
                  else cut_block_cases(name, text, per_file, rng, kind))
    return rng.sample(cases, min(limit, len(cases)))


def humaneval_cases(limit: int, seed: int = 0) -> List[Case]:
    from engine.eval_data import load_humaneval_problems
    from dllm_lsp.commands.eval import humaneval_tasks
    tasks = humaneval_tasks(load_humaneval_problems(), "single-line")
    picked = random.Random(f"{seed}/humaneval-line").sample(tasks, min(limit, len(tasks)))
    return [Case("humaneval-line", t.task_id, t.document, t.offset, t.expected, True) for t in picked]


def request_for(case: Case, tokenizer, settings, max_draft: int):
    import dllm_lsp.core.context as context
    prefix, suffix = context.windows(case.document, case.offset, settings.prefix_tokens, settings.suffix_tokens,
                                     context.token_counter(tokenizer))
    return settings.infill_request(prefix, suffix, max_new_tokens=settings.max_new_tokens("line" if case.line else "block"),
                                   max_draft_tokens=max_draft, ends_at_newline=case.line)


def until_newline(ids: Sequence[int], tokenizer) -> tuple:
    """The token ids up to and including the first one whose text holds a newline."""
    for k, t in enumerate(ids):
        if "\n" in tokenizer.decode([t]):
            return tuple(ids[:k + 1])
    return tuple(ids)
