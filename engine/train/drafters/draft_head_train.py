"""Training the draft head (drafting/head.py) of a frozen causal FIM model: features once, then a
small network trained on them, on CPU (or GPU).

Phase 1, features (the only cost that scales with the model): the frozen model reads FIM
examples the server would build (drafter.fim_sequence: prefix-suffix-middle, middles of every
kind, then the stop token), one pass each without gradients, and the run keeps per row r:
  tokens[r]  the input token x_r                    int32 [N]
  hidden[r]  the final normed hidden state h_r      fp16  [N, H]
  greedy[r]  the verifier's argmax after x_<=r      int32 [N]
in shards (features/NNNNN.safetensors, with the sequence starts), so collection resumes and
accumulates across sessions. Every row is a training row: the head learns one more step of the
model's own next-token map, wherever in a file it is.

Phase 2, the head: a row r and a chain of `depth` steps; step i reads (f_i, x_{r+1+i}) with
f_0 = h_r and f_i the head's own previous prediction (the decoder chains on its own
predictions too), and is trained with
  cross-entropy of its vocabulary logits towards greedy[r+1+i]  (out-of-vocabulary: ignored)
  + feature_weight * smooth-L1(f_{i+1}, h_{r+1+i})
(after EAGLE). The draft vocabulary is fixed once, from the first features: the `vocab_size`
most frequent verifier tokens, stop tokens always in.

Held-out: examples of held-out files whose middle is the frozen model's own greedy text
(drafter.greedy_middle: the exact states the decoder meets), computed once and kept
(heldout.safetensors). Metrics at every middle row t (bonus token x_{t+1}): slot accuracy and
chain acceptance of the head's K guesses against x_{t+2..}, and expected tokens per pass
1 + sum of the chain acceptances, as drafter.evaluate reports for the mask slots.

Run folder: features/, heldout.safetensors, head.safetensors (what ships), optimizer.safetensors,
state.json, log.jsonl.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from engine.drafting.head import DraftHead
from engine.model.transformer import DecoderModel
from engine.train.adam_files import load_adam, save_adam
from engine.train.drafters.examples import DrafterConfig, example_stream
from engine.train.drafters.features import FeatureStore, evaluate_head, frozen_features


@dataclass
class HeadConfig:
    inner: int = 1024
    heads: int = 14                   # attention head only (train/drafters/attention_head_train.py)
    kv_heads: int = 2
    init_from: str = ""               # start from this DraftHead file (its weights, vocabulary, thresholds)
    slots: int = 4
    vocab_size: int = 8192
    depth: int = 3                    # chain steps unrolled per training row
    feature_weight: float = 1.0
    lr: float = 1e-3
    warmup_steps: int = 50
    batch_rows: int = 256
    prefix_tokens: int = 384          # the server's budgets
    suffix_tokens: int = 128
    middle_tokens: int = 64
    collect_share: float = 0.5        # share of each session's time spent on new features
    shard_rows: int = 8192
    seed: int = 0
    eval_examples: int = 12
    eval_middle_tokens: int = 32
    eval_every: int = 200
    save_every: int = 100


@dataclass
class HeadState:
    kind: str = "head"
    step: int = 0
    examples: int = 0                 # feature examples collected
    rows: int = 0
    seconds_features: float = 0.0
    seconds_training: float = 0.0
    config: dict = field(default_factory=dict)


def sequence_config(hcfg: HeadConfig) -> DrafterConfig:
    return DrafterConfig(prefix_tokens=hcfg.prefix_tokens, suffix_tokens=hcfg.suffix_tokens,
                         middle_tokens=hcfg.middle_tokens, seed=hcfg.seed)


# ---- features ---------------------------------------------------------------------------------
@torch.no_grad()
def chain_rows(lengths: torch.Tensor, depth: int) -> torch.Tensor:
    """Global rows r whose chain of `depth` steps stays inside its sequence (r + depth <= its last
    row), for sequences of the given lengths laid end to end."""
    out = []
    start = 0
    for n in lengths.tolist():
        if n - depth > 0:
            out.append(torch.arange(start, start + n - depth))
        start += n
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def pick_vocab(greedy: torch.Tensor, size: int, always: Sequence[int]) -> List[int]:
    """The `size` most frequent verifier tokens (ties by id), plus `always` (stop tokens)."""
    counts = Counter(greedy.tolist())
    keep = [t for t in always]
    for tok, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(keep) >= size:
            break
        if tok not in keep:
            keep.append(tok)
    return keep


def chain_loss(head: DraftHead, feats: Dict[str, torch.Tensor], rows: torch.Tensor, depth: int,
               vocab_index: torch.Tensor, feature_weight: float):
    """(loss, hits [B, depth] bool, valid [B, depth] bool) for chains starting at `rows`."""
    dtype = head.table.dtype
    f = feats["hidden"][rows].to(dtype)                                                  # [B, H]
    losses, hits, valid = [], [], []
    for i in range(depth):
        nxt = rows + 1 + i
        tokens = feats["tokens"][nxt].long().to(head.table.device)                       # x_{r+1+i}
        f, logits = head.step(f.to(head.table.device), tokens)                            # [B, H], [B, Nv]
        target = vocab_index[feats["greedy"][nxt].long()].to(logits.device)               # [B] (-100: not in V)
        ok = target >= 0
        weight = 1.0 - 0.2 * i
        if bool(ok.any()):
            losses.append(weight * F.cross_entropy(logits.float()[ok], target[ok]))
        want = feats["hidden"][nxt].to(f.device, f.dtype)
        losses.append(weight * feature_weight * F.smooth_l1_loss(f.float(), want.float()))
        hits.append((logits.argmax(-1) == target) & ok)
        valid.append(ok)
    return sum(losses), torch.stack(hits, 1), torch.stack(valid, 1)


class HeadTrainer:
    """Owns the run folder; `train(seconds=..., steps=...)` collects features, trains, logs,
    saves, and resumes where the folder left off."""
    kind = "head"

    def __init__(self, model: DecoderModel, run_dir: Path, files_train, files_heldout, encode,
                 hcfg: Optional[HeadConfig] = None, say: Callable[[str], None] = print):
        self.model, self.run_dir, self.say, self.encode = model, Path(run_dir), say, encode
        self.cfg = model.cfg
        for p in model.parameters():
            p.requires_grad_(False)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.run_dir / "state.json"
        if state_path.is_file():
            self.state = HeadState(**json.loads(state_path.read_text()))
            self.hcfg = HeadConfig(**self.state.config)
            if self.state.kind != self.kind:
                raise ValueError(f"{self.run_dir} is a {self.state.kind} run, not a {self.kind} run")
        else:
            self.hcfg = hcfg or HeadConfig()
            self.state = HeadState(kind=self.kind, config=asdict(self.hcfg))
        self.store = FeatureStore(self.run_dir / "features")
        self.files_train, self.files_heldout = list(files_train), list(files_heldout)
        seq = sequence_config(self.hcfg)
        self.stream = example_stream(self.files_train, encode, self.cfg, seq,
                                     seed=self.hcfg.seed * 1_000_003 + self.state.examples)
        self.head = None
        self.opt = None
        if self.weights_file.is_file():
            self._make_head(self.load_head(self.weights_file))
        self.feats: Optional[Dict[str, torch.Tensor]] = None
        self.held, self.held_mids = self._heldout()

    @property
    def weights_file(self) -> Path:
        return self.run_dir / f"{self.kind}.safetensors"

    def summary(self) -> str:
        minutes = (self.state.seconds_features + self.state.seconds_training) / 60
        return f"step {self.state.step}, {self.state.rows} feature rows, {minutes:.1f} min trained"

    # ---- what a head of another design overrides (train/drafters/attention_head_train.py) ----------------
    def new_head(self, vocab: List[int]):
        if self.hcfg.init_from:                       # keep training a head (more data, another session)
            return DraftHead.load(self.hcfg.init_from, self.cfg)
        return DraftHead(self.cfg, vocab, inner=self.hcfg.inner, slots=self.hcfg.slots,
                         out_norm=self.model.norm.weight, seed=self.hcfg.seed)

    def load_head(self, path: Path):
        return DraftHead.load(path, self.cfg)

    def batch_loss(self, feats: Dict[str, torch.Tensor], gen: torch.Generator):
        """(loss, hits [depth], counted [depth]) of one batch of chains drawn with `gen`."""
        pick = torch.randint(len(self.chain_index), (self.hcfg.batch_rows,), generator=gen)
        loss, hits, valid = chain_loss(self.head, feats, self.chain_index[pick], self.hcfg.depth, self.vocab_index,
                                       self.hcfg.feature_weight)
        return loss, hits.float().sum(0), valid.float().sum(0)

    def evaluate_on(self, held: Dict[str, torch.Tensor], mids: Sequence[int]) -> dict:
        return evaluate_head(self.head, held, mids)

    # ---- pieces ---------------------------------------------------------------------------
    def collect(self, seconds: Optional[float] = None, examples: Optional[int] = None,
                progress: Optional[Callable[[dict], None]] = None) -> int:
        """Frozen passes over new examples until `seconds` or `examples`; returns rows added."""
        deadline = time.time() + seconds if seconds is not None else None
        added = done = 0
        while (deadline is None or time.time() < deadline) and (examples is None or done < examples):
            t0 = time.perf_counter()
            x, _ = next(self.stream)
            hidden, greedy = frozen_features(self.model, x)
            self.store.add(x, hidden, greedy)
            self.state.examples += 1
            self.state.rows += len(x)
            self.state.seconds_features += time.perf_counter() - t0
            added += len(x)
            done += 1
            if self.store.pending_rows() >= self.hcfg.shard_rows:
                self.store.flush()
                self._save_state()
            if progress:
                progress({"phase": "features", "rows": self.state.rows, "examples": self.state.examples})
        self.store.flush()
        self._save_state()
        self.feats = None
        return added

    def _make_head(self, head: DraftHead) -> None:
        self.head = head.bind(self.model)
        index = torch.full((self.cfg.vocab_size,), -100, dtype=torch.long)
        index[head.vocab.cpu()] = torch.arange(len(head.vocab))
        self.vocab_index = index
        self.opt = torch.optim.AdamW(self.head.parameters(), lr=self.hcfg.lr, weight_decay=0.0)
        self._load_optimizer()

    def _features(self) -> Dict[str, torch.Tensor]:
        if self.feats is None:
            self.feats = self.store.load()
            if self.feats is None:
                raise ValueError("no features collected yet")
            self.chain_index = chain_rows(self.feats["lengths"], self.hcfg.depth)
        return self.feats

    def _heldout(self):
        path = self.run_dir / "heldout.safetensors"
        if path.is_file():
            from safetensors.torch import load_file
            held = load_file(str(path))
            return held, held.pop("mids").tolist()
        if not self.files_heldout or not self.hcfg.eval_examples:
            return None, []
        from engine.train.drafters.examples import greedy_middle
        seq = sequence_config(self.hcfg)
        seq.middle_tokens = self.hcfg.eval_middle_tokens
        held_stream = example_stream(self.files_heldout, self.encode, self.cfg, seq, seed=99)
        parts, mids = [], []
        for _ in range(self.hcfg.eval_examples):
            x, mid = next(held_stream)
            x = greedy_middle(self.model, None, x, mid)
            hidden, greedy = frozen_features(self.model, x)
            parts.append((torch.tensor(x, dtype=torch.int32), hidden, greedy))
            mids.append(mid)
        held = {"tokens": torch.cat([t for t, _, _ in parts]), "hidden": torch.cat([h for _, h, _ in parts]),
                "greedy": torch.cat([g for _, _, g in parts]),
                "lengths": torch.tensor([len(t) for t, _, _ in parts], dtype=torch.int64)}
        from safetensors.torch import save_file
        save_file(dict(held, mids=torch.tensor(mids)), str(path))
        return held, mids

    def lr_at(self, step: int) -> float:
        return self.hcfg.lr * min(1.0, (step + 1) / max(1, self.hcfg.warmup_steps))

    def train_step(self) -> dict:
        feats = self._features()
        if self.head is None:
            always = sorted(self.cfg.stop_ids)
            self._make_head(self.new_head(pick_vocab(feats["greedy"], self.hcfg.vocab_size, always)))
            vocab = self.head.vocab.cpu().to(torch.int32)
            covered = torch.isin(feats["greedy"], vocab).float().mean().item()
            self.say(f"draft vocabulary: {len(vocab)} tokens cover {covered:.1%} of the verifier's tokens")
        t0 = time.perf_counter()
        self.head.train()
        gen = torch.Generator().manual_seed(self.hcfg.seed * 7919 + self.state.step)
        loss, hits, counted = self.batch_loss(feats, gen)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.state.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.head.parameters(), 1.0)
        self.opt.step()
        self.state.step += 1
        dt = time.perf_counter() - t0
        self.state.seconds_training += dt
        acc = (hits.float() / counted.float().clamp(min=1)).tolist()
        return {"step": self.state.step, "loss": round(loss.item(), 4), "seconds": round(dt, 3),
                "slot_accuracy": [round(a, 3) for a in acc]}

    def evaluate(self) -> dict:
        if self.head is None or self.held is None:
            return {}
        self.head.eval()
        out = self.evaluate_on(self.held, self.held_mids)
        out.update(step=self.state.step, seconds_trained=round(self.state.seconds_features + self.state.seconds_training, 1),
                   rows=self.state.rows, kind="eval")
        return out

    def train(self, seconds: Optional[float] = None, steps: Optional[int] = None, collect_examples: Optional[int] = None,
              progress: Optional[Callable[[dict], None]] = None) -> HeadState:
        """Collect new features (collect_share of `seconds`, or `collect_examples`), then train
        for the rest of the time (or `steps`)."""
        start = time.time()
        if collect_examples is not None or seconds is not None or self.state.rows == 0:
            self.collect(seconds=seconds * self.hcfg.collect_share if seconds else None,
                         examples=collect_examples if collect_examples is not None else (None if seconds else 4),
                         progress=progress)
        deadline = start + seconds if seconds else None
        done = 0
        while (deadline is None or time.time() < deadline) and (steps is None or done < steps):
            entry = self.train_step()
            done += 1
            self._log(entry)
            if progress:
                progress(dict(entry, phase="training"))
            if self.state.step % self.hcfg.save_every == 0:
                self.save()
            if self.held is not None and self.state.step % self.hcfg.eval_every == 0:
                self._log(self.evaluate())
        self.save()
        if self.held is not None and self.head is not None:
            self._log(self.evaluate())
        return self.state

    # ---- files ----------------------------------------------------------------------------
    def save(self) -> None:
        if self.head is not None:
            self.head.save(self.weights_file,
                           extra={"step": self.state.step, "rows": self.state.rows,
                                  "seconds": round(self.state.seconds_features + self.state.seconds_training, 1)})
            self._save_optimizer()
        self._save_state()

    def _save_state(self) -> None:
        tmp = self.run_dir / "state.json.part"
        tmp.write_text(json.dumps(asdict(self.state), indent=1))
        tmp.replace(self.run_dir / "state.json")

    def _save_optimizer(self) -> None:
        save_adam(self.opt, self.head, self.run_dir / "optimizer.safetensors")

    def _load_optimizer(self) -> None:
        load_adam(self.opt, self.head, self.run_dir / "optimizer.safetensors")

    def _log(self, entry: dict) -> None:
        if not entry:
            return
        entry = dict(entry, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
