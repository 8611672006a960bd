"""One entry for both drafter trainers: a run folder knows its kind, the caller need not.

    trainer = open_run("head", model, run_dir, train_files, heldout_files, encode)
    trainer.train(seconds=600, progress=...)
    shutil.copyfile(trainer.weights_file, out)

kind "head" = HeadTrainer (train/drafters/draft_head_train.py), "attn" = AttentionHeadTrainer
(train/drafters/attention_head_train.py), "mask" = DrafterTrainer (train/drafters/mask_slots_train.py). A run
folder that already holds a state.json keeps the kind it was started with (runs from before
the draft head existed are mask runs), whatever `kind` says.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

KINDS = ("head", "attn", "mask")


def run_kind(run_dir: Path, requested: str) -> str:
    state = Path(run_dir) / "state.json"
    if state.is_file():
        return json.loads(state.read_text()).get("kind", "mask")
    if requested not in KINDS:
        raise ValueError(f"drafter kind must be one of {', '.join(KINDS)}, not {requested!r}")
    return requested


def open_run(kind: str, model, run_dir: Path, train, heldout, encode, config=None,
             say: Callable[[str], None] = print):
    """The trainer for run_dir (config: a HeadConfig / DrafterConfig for a new run, else None)."""
    kind = run_kind(run_dir, kind)
    if kind == "head":
        from engine.train.drafters.draft_head_train import HeadTrainer as Trainer
    elif kind == "attn":
        from engine.train.drafters.attention_head_train import AttentionHeadTrainer as Trainer
    else:
        from engine.train.drafters.mask_slots_train import DrafterTrainer as Trainer
    return Trainer(model, run_dir, train, heldout, encode, config, say=say)


def describe_step(entry: dict) -> Optional[str]:
    """One progress line for a trainer's progress entry (None for entries without one)."""
    if entry.get("phase") == "features":
        return f"features: {entry['rows']} rows from {entry['examples']} examples"
    if "loss" in entry:
        return f"step {entry['step']} loss {entry['loss']:.3f} slots {entry['slot_accuracy']}"
    return None
