"""The trainer: masked block-diffusion loss over packed FIM examples, resumable, CPU or GPU.

One step = take examples from the stream, pack them into `rows` rows of `capacity` slots
(train/embedded/examples.py), one forward pass of the whole batch with per-row positions [R, C] and the
training attention mask [R, 1, C, C], the LM head applied only at the masked slots, mean
cross-entropy over them (optionally weighted by 1/t as in MDLM; off by default: it raises the
variance of a small-batch estimate and the decoder cares about every masking rate alike),
plus `ar_weight` x the mean next-token cross-entropy on a sampled `ar_fraction` of the
context slots (train/embedded/examples.py: dense supervision at no extra forward cost; off when 0), AdamW, grad clip 1.0, warmup then cosine to 10% of the peak over `total_steps`.

A checkpoint (torch.save of tensors, dicts and numbers only, read back with weights_only=True)
holds the model, the optimizer, the step, tokens seen, the stream state, the noising RNG and
the log, so a run split in two equals one run. `export_model` writes a model folder the engine
loads: config.json (with train_* facts), tokenizer.json, safetensors shards of <= 16 MB.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from engine.loading.config import ModelConfig
from engine.model.transformer import DecoderModel
from engine.loading.weights import save_state
from engine.train.embedded.data import ExampleStream, StreamState
from engine.train.embedded.examples import Batch, make_batch, pack_rows
from engine.train.embedded.tokenizer_train import SPECIAL_IDS

MAX_SHARD_BYTES = 16 * 1024 * 1024


@dataclass
class ModelShape:
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 704
    block_size: int = 8
    max_position: int = 2048


@dataclass
class TrainConfig:
    rows: int = 8                  # rows per batch
    capacity: int = 768            # slots per row (context + 2 x middle of packed examples)
    examples_per_fill: int = 24    # examples offered to the packer per batch
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    total_steps: int = 3000
    time_budget_s: Optional[float] = None   # if set, the schedule follows this session's training
                                            # seconds (warmup then cosine within the session)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    inverse_t_weight: bool = False
    ar_fraction: float = 0.25      # context slots given an auxiliary next-token target (0 = off)
    ar_weight: float = 0.5         # its weight in the loss
    seed: int = 0
    bf16: bool = False             # autocast (GPU)
    log_every: int = 10
    eval_every: int = 100
    checkpoint_every_s: float = 240.0


def model_config(shape: ModelShape, vocab_size: int) -> ModelConfig:
    vocab = (vocab_size + 63) // 64 * 64
    return ModelConfig(
        family="block", vocab_size=vocab, hidden_size=shape.hidden, num_layers=shape.layers,
        num_heads=shape.heads, num_kv_heads=shape.kv_heads, head_dim=shape.hidden // shape.heads,
        intermediate_size=shape.intermediate, rope_theta=10000.0, rms_norm_eps=1e-6, tie_embeddings=True,
        qkv_bias=False, mlp_bias=False, logit_shift=False, attention="block_causal",
        block_size=shape.block_size, mask_id=SPECIAL_IDS["mask"], eos_id=SPECIAL_IDS["eos"],
        pad_id=SPECIAL_IDS["pad"], bos_id=None, fim_prefix_id=SPECIAL_IDS["fim_prefix"],
        fim_suffix_id=SPECIAL_IDS["fim_suffix"], fim_middle_id=SPECIAL_IDS["fim_middle"],
        max_position=shape.max_position)


def init_weights(model: DecoderModel, seed: int) -> None:
    """GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 L), norms 1."""
    gen = torch.Generator().manual_seed(seed)
    n_layers = len(model.layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def batch_losses(model: DecoderModel, batch: Batch, inverse_t_weight: bool = False,
                 autocast_dtype: Optional[torch.dtype] = None):
    """(diffusion loss, next-token loss or None): mean cross-entropies over the batch's targets."""
    dev = model.device
    ids, pos, mask = batch.ids.to(dev), batch.positions.to(dev), batch.mask.to(dev)
    n_diff, n_ar = batch.targets.numel(), batch.ar_targets.numel()
    rows = torch.cat([batch.loss_rows, batch.ar_rows]).to(dev)                          # [N + M]
    cols = torch.cat([batch.loss_cols, batch.ar_cols]).to(dev)
    with torch.autocast(device_type=dev.type, dtype=autocast_dtype or torch.bfloat16,
                        enabled=autocast_dtype is not None):
        hidden, _ = model.hidden(ids, pos, None, mask)                                   # [R, C, H]
        logits = model.head(hidden[rows, cols]).float()                                   # [N + M, V]
    targets = torch.cat([batch.targets, batch.ar_targets]).to(dev)
    losses = F.cross_entropy(logits, targets, reduction="none")                          # [N + M]
    diff = losses[:n_diff]
    if inverse_t_weight:
        diff_loss = (diff / batch.rates.to(dev)).sum() / max(1, n_diff)
    else:
        diff_loss = diff.mean()
    return diff_loss, (losses[n_diff:].mean() if n_ar else None)


def batch_loss(model: DecoderModel, batch: Batch, inverse_t_weight: bool = False,
               autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The diffusion loss alone (what the held-out curve reports)."""
    return batch_losses(model, batch, inverse_t_weight, autocast_dtype)[0]


def lr_at(step: int, cfg: TrainConfig, wall_s: float = 0.0) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.time_budget_s:
        progress = min(1.0, wall_s / cfg.time_budget_s)
    else:
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: DecoderModel, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


@dataclass
class TrainState:
    step: int = 0
    tokens_seen: int = 0           # real slots processed (context + both middle copies)
    loss_tokens: int = 0           # masked tokens trained on
    wall_s: float = 0.0            # training seconds summed over all sessions
    log: List[dict] = field(default_factory=list)


class Trainer:
    def __init__(self, model: DecoderModel, mcfg: ModelConfig, cfg: TrainConfig, stream: ExampleStream,
                 heldout: Optional[List[Batch]] = None):
        self.model, self.mcfg, self.cfg, self.stream = model, mcfg, cfg, stream
        self.opt = make_optimizer(model, cfg)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.state = TrainState()
        self.heldout = heldout or []
        self.autocast = torch.bfloat16 if cfg.bf16 else None
        self.ar_recent: List[float] = []     # next-token losses since the last log entry
        self.session_start = (0, 0.0)        # (step, wall_s) when this session began
        self.last_lr = 0.0

    # ---- one step --------------------------------------------------------------------------
    def current_lr(self) -> float:
        """Step schedules count over all sessions (a split run equals one run); a time budget is
        this session's: a resumed `--minutes M` run warms up again and decays within its M minutes."""
        st = self.state
        if self.cfg.time_budget_s:
            self.last_lr = lr_at(st.step - self.session_start[0], self.cfg, st.wall_s - self.session_start[1])
        else:
            self.last_lr = lr_at(st.step, self.cfg)
        return self.last_lr

    def next_batch(self) -> Batch:
        cfg = self.cfg
        offered = self.stream.take(cfg.examples_per_fill)
        offered = [e for e in offered if e.length <= cfg.capacity]
        rows, left = pack_rows(offered, cfg.rows, cfg.capacity)
        self.stream.give_back(left)
        return make_batch(rows, self.mcfg.block_size, cfg.capacity, self.mcfg.mask_id, self.gen,
                          ar_fraction=cfg.ar_fraction)

    def step(self) -> float:
        t0 = time.perf_counter()
        batch = self.next_batch()
        self.model.train()
        for group in self.opt.param_groups:
            group["lr"] = self.current_lr()
        loss, ar_loss = batch_losses(self.model, batch, self.cfg.inverse_t_weight, self.autocast)
        total = loss if ar_loss is None else loss + self.cfg.ar_weight * ar_loss
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        st = self.state
        st.step += 1
        st.tokens_seen += batch.tokens
        st.loss_tokens += int(batch.targets.numel())
        st.wall_s += time.perf_counter() - t0
        if ar_loss is not None:
            self.ar_recent.append(float(ar_loss.detach()))
        return float(loss.detach())

    @torch.no_grad()
    def heldout_loss(self) -> Optional[float]:
        if not self.heldout:
            return None
        self.model.eval()
        losses = [float(batch_loss(self.model, b, False, self.autocast)) for b in self.heldout]
        return sum(losses) / len(losses)

    # ---- the loop --------------------------------------------------------------------------
    def run(self, max_steps: Optional[int] = None, deadline_s: Optional[float] = None,
            checkpoint: Optional[Path] = None, on_log: Optional[Callable[[dict], None]] = None) -> TrainState:
        """Train until max_steps (absolute) or deadline_s (seconds from now); checkpoint periodically."""
        start = time.perf_counter()
        last_ckpt = start
        recent: List[float] = []
        max_steps = self.cfg.total_steps if max_steps is None else max_steps
        while self.state.step < max_steps:
            if deadline_s is not None and time.perf_counter() - start >= deadline_s:
                break
            recent.append(self.step())
            st = self.state
            if st.step % self.cfg.log_every == 0 or st.step == max_steps:
                entry = {"step": st.step, "tokens": st.tokens_seen, "loss_tokens": st.loss_tokens,
                         "loss": round(sum(recent) / len(recent), 4), "lr": self.last_lr,
                         "wall_s": round(st.wall_s, 1)}
                if self.ar_recent:
                    entry["ar_loss"] = round(sum(self.ar_recent) / len(self.ar_recent), 4)
                    self.ar_recent = []
                if self.cfg.eval_every and st.step % self.cfg.eval_every == 0:
                    entry["heldout_loss"] = self.heldout_loss()
                st.log.append(entry)
                recent = []
                if on_log:
                    on_log(entry)
            if checkpoint and time.perf_counter() - last_ckpt >= self.cfg.checkpoint_every_s:
                self.save(checkpoint)
                last_ckpt = time.perf_counter()
        if checkpoint:
            self.save(checkpoint)
        return self.state

    # ---- checkpoints -----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.opt.state_dict(), "train_state": asdict(self.state),
                "stream": self.stream.state.to_dict(), "rng": self.gen.get_state(),
                "model_config": self.mcfg.to_json(), "train_config": asdict(self.cfg)}
        tmp = path.with_suffix(".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)

    def load(self, path: Path, weights_only: bool = False) -> None:
        """Restore a checkpoint; weights_only=True takes just the model (fine-tuning from it)."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(blob["model"])
        if weights_only:
            return
        self.opt.load_state_dict(blob["optimizer"])
        self.state = TrainState(**blob["train_state"])
        self.stream.state = StreamState.from_dict(blob["stream"])
        self.gen.set_state(blob["rng"])
        self.session_start = (self.state.step, self.state.wall_s)


def export_model(model: DecoderModel, mcfg: ModelConfig, tokenizer_path: Path, folder: Path,
                 train_facts: Optional[dict] = None, dtype: torch.dtype = torch.float32) -> Path:
    """A model folder the engine loads: config.json, tokenizer.json, model*.safetensors (<= 16 MB each)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in list(folder.glob("model*.safetensors")) + list(folder.glob("model.safetensors.index.json")):
        old.unlink()
    facts = {f"train_{k}": v for k, v in (train_facts or {}).items()}
    cfg = mcfg.with_(extra={**mcfg.extra, **facts}, torch_dtype=str(dtype).replace("torch.", ""))
    (folder / "config.json").write_text(json.dumps(cfg.to_json(), indent=1))
    if Path(tokenizer_path).resolve() != (folder / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer_path, folder / "tokenizer.json")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for path in save_state(cfg, state, folder, dtype=dtype, max_shard_bytes=MAX_SHARD_BYTES):
        path.chmod(0o644)                        # safetensors writes 0600; the model ships in a wheel
    return folder
