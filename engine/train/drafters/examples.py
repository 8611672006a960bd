"""What every drafter trainer reads (mask slots and both draft heads): the corpus without the
evaluation files, and training examples as the server builds its prompts (prefix-suffix-middle
with the model's own tokens, middles of every kind an editor asks for), with the frozen model's
own greedy middle where a trainer wants the states the decoder meets."""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch

from engine.drafting.mask_slots import MaskAdapter
from engine.model.transformer import DecoderModel, causal_visibility
import engine.eval_data as eval_data
import engine.train.corpus as corpus
import engine.train.fim as fim

# Middle kinds as the server meets them, longer middles a little more often than the server's
# own mix: a long middle gives many anchors for one frozen pass.
DRAFTER_CUT_WEIGHTS = {"rest_of_line": 0.25, "line": 0.2, "lines": 0.2, "block": 0.15, "empty": 0.02,
                       "continuation": 0.18}


@dataclass
class DrafterConfig:
    rank: int = 8
    alpha: float = 16.0
    mask_slots: int = 4
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    prefix_tokens: int = 256          # context budgets of a training example (the server: 384/128)
    suffix_tokens: int = 64
    middle_tokens: int = 48
    anchors: int = 48                 # mask groups per example (middle first, then prefix)
    prefix_anchors: int = 8
    greedy_middles: bool = False      # middles are the frozen model's own greedy text (see below)
    seed: int = 0
    eval_examples: int = 12
    eval_every: int = 50
    save_every: int = 10


def fim_sequence(cut: fim.Cut, encode: Callable[[str], List[int]], cfg, dcfg: DrafterConfig
                 ) -> Tuple[List[int], int]:
    """(X, index of <|fim_middle|>) for one cut, budgets applied (an empty middle gives no
    anchors later, so example_loss skips it)."""
    prefix = encode(cut.prefix)[-dcfg.prefix_tokens:] if dcfg.prefix_tokens else []
    suffix = encode(cut.suffix)[:dcfg.suffix_tokens] if dcfg.suffix_tokens else []
    middle = encode(cut.middle)[:dcfg.middle_tokens]
    ctx = [cfg.fim_prefix_id] + prefix + [cfg.fim_suffix_id] + suffix + [cfg.fim_middle_id]
    stop = cfg.eos_id if cfg.eos_id is not None else next(iter(sorted(cfg.stop_ids)))
    return ctx + middle + [stop], len(ctx) - 1


def example_stream(files: Sequence[corpus.SourceFile], encode, cfg, dcfg: DrafterConfig, seed: int
                   ) -> Iterator[Tuple[List[int], int]]:
    """Endless (X, middle index) examples from random files and cuts; deterministic in `seed`."""
    rng = random.Random(seed)
    files = list(files)
    if not files:
        raise ValueError("no training files")
    while True:
        rec = files[rng.randrange(len(files))]
        text = corpus.load_text(rec)
        if not text:
            continue
        cut = fim.sample_cut(text, rng, DRAFTER_CUT_WEIGHTS)
        if cut is None:
            continue
        yield fim_sequence(cut, encode, cfg, dcfg)


def greedy_middle(model: DecoderModel, adapter: Optional[MaskAdapter], x: List[int], mid: int) -> List[int]:
    """X with its middle replaced by the frozen model's greedy continuation of X[:mid + 1]
    (as many tokens as the middle had, ending early at a stop token); an attached adapter is
    switched off for it."""
    cfg, dev = model.cfg, model.device
    budget = len(x) - mid - 1
    ctx = x[:mid + 1]
    out: List[int] = []
    with adapter.rows_from(None) if adapter is not None else contextlib.nullcontext():
        ids = torch.tensor([ctx], device=dev)
        raw, past = model(ids, torch.arange(len(ctx), device=dev), None, causal_visibility(len(ctx), 0, dev), len(ctx) - 1)
        for _ in range(budget):
            logits = raw[0, -1].float()
            logits[cfg.mask_id] = float("-inf")
            tok = int(logits.argmax())
            out.append(tok)
            if tok in cfg.stop_ids:
                break
            n = len(ctx) + len(out) - 1
            raw, kvs = model(torch.tensor([[tok]], device=dev), torch.tensor([n], device=dev), past, None)
            past = [(torch.cat([a, k], 2), torch.cat([b, v], 2)) for (a, b), (k, v) in zip(past, kvs)]
    return ctx + out


@torch.no_grad()
def drafter_corpus(run_dir: Path, roots: Sequence[str], say: Callable[[str], None] = print):
    """(train, held-out) files: the corpus scan of `roots` (default: the standard library and
    site-packages), kept in run_dir/manifest.json, without the benches' evaluation files."""
    run_dir = Path(run_dir)
    manifest = run_dir / "manifest.json"
    if manifest.is_file():
        files = corpus.read_manifest(manifest)
    else:
        roots = list(roots) or corpus.default_roots()
        say(f"scanning {', '.join(roots)}")
        files = corpus.scan(roots)
        corpus.write_manifest(files, manifest, roots)
    skip = {str(p.resolve()) for p in eval_data.bench_files()}
    files = [f for f in files if str(Path(f.path).resolve()) not in skip]
    train = [f for f in files if f.split == "train"]
    heldout = [f for f in files if f.split == "heldout"]
    if not heldout and len(train) >= 2:          # a small corpus (your own code): hold one file out
        train.sort(key=lambda f: f.sha1)
        heldout = [train.pop(0)]
    say(f"corpus: {len(train)} training files, {len(heldout)} held out")
    return train, heldout
