"""Training the mask-slot drafter (drafting/mask_slots.py) of a frozen causal FIM model, on CPU or GPU.

One training example is a FIM prompt the server would build (prefix-suffix-middle with the
model's own tokens; middles of every kind from fim.sample_cut) followed by its middle and the
stop token:  X = <|fim_prefix|> P <|fim_suffix|> S <|fim_middle|> M <|endoftext|>   [L]

A step, per example:
  1. the frozen model reads X once without gradients (adapter off): per-layer keys/values
     [1, Hkv, L, D] and, at the rows the masks need, the frozen argmax: row r's argmax is the
     verifier's next token after X[:r + 1]. Those argmaxes are the targets (self-distillation:
     a draft is accepted when it equals the verifier's argmax, not when it equals the file);
  2. anchors t (the last real token of a decoder state) are drawn in the middle region (and a
     few in the prefix); after each anchor K mask slots at positions t+1..t+K, each seeing
     X[:t + 1] and the earlier masks of its own group (the attention mask below), so G anchors
     make one pass of G*K mask rows over the frozen keys/values (adapter on, start = 0);
  3. mask slot i of anchor t is trained with cross-entropy towards the frozen argmax at row
     t + i (the token at t + i + 1, one past the bonus token the verifier itself commits);
     slots past the end of X are ignored. Only adapter parameters receive gradients.

With greedy_middles the middle of X is replaced by the frozen model's own greedy continuation of
the prompt (one pass per token): the very states the decoder meets, at the price of a pass per
middle token. Without it (the default on CPU) the middle is the file's text and the targets are
still the verifier's argmax on it, which is close where the model's greedy text follows the file.

Held-out examples (files of the corpus' held-out split) measure per-slot accuracy and the
chain acceptance: a K-slot draft is accepted up to its first wrong slot, so the expected tokens
a pass commits from mask drafts alone is 1 + sum_i P(slots 1..i all right).

State lives in a run folder: adapter.safetensors (the weights that ship), optimizer.safetensors
(AdamW moments, so runs resume and accumulate across sessions), state.json (step, examples,
seconds trained), log.jsonl (one line per logged step and per evaluation).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from engine.drafting.mask_slots import MaskAdapter
from engine.model.transformer import DecoderModel, causal_visibility
from engine.train.adam_files import load_adam, save_adam
from engine.train.drafters.examples import DrafterConfig, example_stream, greedy_middle

@dataclass
class DrafterState:
    step: int = 0
    examples: int = 0
    seconds: float = 0.0
    targets: int = 0
    config: dict = field(default_factory=dict)


# ---- examples ----------------------------------------------------------------------------
def pick_anchors(n: int, mid: int, dcfg: DrafterConfig, rng: random.Random) -> List[int]:
    """Anchor positions t (the last real token before K masks) for a sequence of n tokens whose
    <|fim_middle|> is at `mid`: every middle position first (up to `anchors`), then a few in
    the prefix. Only t <= n - 3 can have a target (row t + 1 must predict a token of X)."""
    middle = list(range(mid, n - 2))
    if len(middle) > dcfg.anchors:
        middle = sorted(rng.sample(middle, dcfg.anchors))
    early = list(range(1, max(1, mid - 1)))
    k = min(len(early), dcfg.prefix_anchors, max(0, dcfg.anchors - len(middle)) + 2)
    return sorted(rng.sample(early, k)) + middle if k else middle


def mask_attention(anchors: Sequence[int], k: int, n_past: int, device=None) -> torch.Tensor:
    """bool [G*K, n_past + G*K]: mask slot i of anchor t sees past keys 0..t and slots 0..i of
    its own group."""
    g = len(anchors)
    t = torch.tensor(anchors, device=device)
    past_ok = torch.arange(n_past, device=device)[None, :] <= t[:, None]                     # [G, P]
    past_ok = past_ok.repeat_interleave(k, dim=0)                                           # [G*K, P]
    group = torch.arange(g * k, device=device) // k
    slot = torch.arange(g * k, device=device) % k
    own = (group[:, None] == group[None, :]) & (slot[None, :] <= slot[:, None])            # [G*K, G*K]
    return torch.cat([past_ok, own], dim=1)


@torch.no_grad()
def frozen_pass(model: DecoderModel, adapter: MaskAdapter, x: List[int], rows: Sequence[int]):
    """Keys/values of X [per layer (k, v) [1, Hkv, L, D]] and the frozen argmax at `rows`."""
    dev = model.device
    ids = torch.tensor([x], device=dev)
    pos = torch.arange(len(x), device=dev)
    with adapter.rows_from(None):
        hidden, kvs = model.hidden(ids, pos, None, causal_visibility(len(x), 0, dev))
        idx = torch.tensor(sorted(set(rows)), device=dev)
        logits = model.head(hidden[0, idx])                                                  # [R, V]
        logits[:, model.cfg.mask_id] = float("-inf")
        best = dict(zip(idx.tolist(), logits.argmax(-1).tolist()))
    return kvs, best


def mask_logits(model: DecoderModel, adapter: MaskAdapter, kvs, anchors: Sequence[int], k: int) -> torch.Tensor:
    """Logits [G*K, V] of K mask slots after each anchor, over the frozen keys/values `kvs`."""
    dev = model.device
    n_past = kvs[0][0].shape[2]
    pos = torch.tensor([t + i for t in anchors for i in range(1, k + 1)], device=dev)      # [G*K]
    ids = torch.full((1, len(pos)), model.cfg.mask_id, device=dev)
    attn = mask_attention(anchors, k, n_past, dev)
    with adapter.rows_from(0):
        hidden, _ = model.hidden(ids, pos, kvs, attn)
    return model.head(hidden[0])


def targets_for(anchors: Sequence[int], k: int, n: int, best: dict) -> List[int]:
    """Slot i of anchor t -> frozen argmax at row t + i (-100 where t + i > n - 2)."""
    return [best.get(t + i, -100) if t + i <= n - 2 else -100 for t in anchors for i in range(1, k + 1)]


def rows_needed(anchors: Sequence[int], k: int, n: int) -> List[int]:
    return [t + i for t in anchors for i in range(1, k + 1) if t + i <= n - 2]


def example_loss(model, adapter, x: List[int], mid: int, dcfg: DrafterConfig, rng: random.Random):
    """(mean cross-entropy over the valid mask slots, number of valid slots, per-slot hits [K])."""
    k = adapter.mask_slots
    if dcfg.greedy_middles:
        x = greedy_middle(model, adapter, x, mid)
    anchors = pick_anchors(len(x), mid, dcfg, rng)
    if not anchors:
        return None, 0, None
    kvs, best = frozen_pass(model, adapter, x, rows_needed(anchors, k, len(x)))
    kvs = [(a.detach(), b.detach()) for a, b in kvs]
    logits = mask_logits(model, adapter, kvs, anchors, k)                                    # [G*K, V]
    target = torch.tensor(targets_for(anchors, k, len(x), best), device=logits.device)
    valid = target >= 0
    if not bool(valid.any()):
        return None, 0, None
    loss = F.cross_entropy(logits.float()[valid], target[valid])
    hits = (logits.argmax(-1) == target).view(-1, k)                                         # [G, K]
    return loss, int(valid.sum()), (hits, valid.view(-1, k))


# ---- evaluation --------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, adapter, examples: Sequence[Tuple[List[int], int]], dcfg: DrafterConfig) -> dict:
    """Per-slot accuracy and chain acceptance of the mask guesses on held-out examples, at
    every middle anchor; expected_tokens_per_pass = 1 + sum of the chain acceptances."""
    k = adapter.mask_slots
    right = torch.zeros(k)
    chain = torch.zeros(k)
    counted = torch.zeros(k)
    groups = 0
    for x, mid in examples:
        if dcfg.greedy_middles:
            x = greedy_middle(model, adapter, x, mid)
        anchors = [t for t in range(mid, len(x) - 2)]
        if not anchors:
            continue
        kvs, best = frozen_pass(model, adapter, x, rows_needed(anchors, k, len(x)))
        logits = mask_logits(model, adapter, kvs, anchors, k)
        target = torch.tensor(targets_for(anchors, k, len(x), best)).view(-1, k)
        hit = (logits.argmax(-1).cpu().view(-1, k) == target) & (target >= 0)
        valid = target >= 0
        right += hit.float().sum(0)
        counted += valid.float().sum(0)
        # a slot counts for the chain only where every earlier slot was right (and itself valid)
        run = torch.cumprod(hit.float(), dim=1)
        chain += run.sum(0)
        groups += hit.shape[0]
    acc = (right / counted.clamp(min=1)).tolist()
    chain_rate = (chain / max(groups, 1)).tolist()
    return {"slot_accuracy": [round(a, 4) for a in acc], "chain_acceptance": [round(c, 4) for c in chain_rate],
            "expected_tokens_per_pass": round(1.0 + sum(chain_rate), 4), "groups": groups}


# ---- the run ------------------------------------------------------------------------------
class DrafterTrainer:
    """Owns the run folder; `train(seconds=..., steps=...)` runs, logs, saves, and can resume."""
    kind = "mask"

    def __init__(self, model: DecoderModel, run_dir: Path, files_train, files_heldout, encode,
                 dcfg: Optional[DrafterConfig] = None, say: Callable[[str], None] = print):
        self.model, self.run_dir, self.say = model, Path(run_dir), say
        self.cfg = model.cfg
        for p in model.parameters():
            p.requires_grad_(False)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.run_dir / "state.json"
        if state_path.is_file():
            self.state = DrafterState(**json.loads(state_path.read_text()))
            self.dcfg = DrafterConfig(**self.state.config) if dcfg is None else dcfg
        else:
            self.dcfg = dcfg or DrafterConfig()
            self.state = DrafterState(config=asdict(self.dcfg))
        adapter_path = self.run_dir / "adapter.safetensors"
        if adapter_path.is_file():
            self.adapter = MaskAdapter.load(adapter_path, self.cfg)
        else:
            # the mask row of a pretrained model was never trained: start from the mean embedding
            init = model.embed_tokens.weight.detach().float().mean(0)
            self.adapter = MaskAdapter(self.cfg, rank=self.dcfg.rank, alpha=self.dcfg.alpha,
                                       mask_slots=self.dcfg.mask_slots, init_embedding=init, seed=self.dcfg.seed)
        self.adapter.attach(model)
        self.opt = torch.optim.AdamW(self.adapter.parameters(), lr=self.dcfg.lr, weight_decay=self.dcfg.weight_decay)
        self._load_optimizer()
        self.encode = encode
        self.stream = example_stream(files_train, encode, self.cfg, self.dcfg, seed=self.dcfg.seed * 1_000_003 + self.state.examples)
        held = example_stream(files_heldout, encode, self.cfg, self.dcfg, seed=99) if files_heldout else None
        self.heldout = [next(held) for _ in range(self.dcfg.eval_examples)] if held else []
        self.rng = random.Random(self.dcfg.seed + self.state.step)

    @property
    def weights_file(self) -> Path:
        return self.run_dir / "adapter.safetensors"

    def summary(self) -> str:
        return f"step {self.state.step}, {self.state.targets} mask targets, {self.state.seconds / 60:.1f} min trained"

    def lr_at(self, step: int) -> float:
        return self.dcfg.lr * min(1.0, (step + 1) / max(1, self.dcfg.warmup_steps))

    def train_step(self) -> dict:
        self.adapter.train()
        t0 = time.perf_counter()
        x, mid = next(self.stream)
        loss, n, hits = example_loss(self.model, self.adapter, x, mid, self.dcfg, self.rng)
        self.state.examples += 1
        if loss is None:
            return {"skipped": True}
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.state.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.adapter.parameters(), 1.0)
        self.opt.step()
        self.state.step += 1
        self.state.targets += n
        dt = time.perf_counter() - t0
        self.state.seconds += dt
        h, v = hits
        acc = ((h & v).float().sum(0) / v.float().sum(0).clamp(min=1)).tolist()
        return {"step": self.state.step, "loss": round(loss.item(), 4), "targets": n, "seconds": round(dt, 2),
                "slot_accuracy": [round(a, 3) for a in acc], "tokens_in": len(x)}

    def evaluate(self) -> dict:
        self.adapter.eval()
        out = evaluate(self.model, self.adapter, self.heldout, self.dcfg)
        out.update(step=self.state.step, seconds_trained=round(self.state.seconds, 1), kind="eval")
        return out

    def train(self, seconds: Optional[float] = None, steps: Optional[int] = None,
              progress: Optional[Callable[[dict], None]] = None) -> DrafterState:
        deadline = time.time() + seconds if seconds else None
        done = 0
        if self.state.step == 0 and self.heldout:
            self._log(self.evaluate())
        while (deadline is None or time.time() < deadline) and (steps is None or done < steps):
            entry = self.train_step()
            if entry.get("skipped"):
                continue
            done += 1
            self._log(entry)
            if progress:
                progress(entry)
            if self.state.step % self.dcfg.save_every == 0:
                self.save()
            if self.heldout and self.state.step % self.dcfg.eval_every == 0:
                self._log(self.evaluate())
        self.save()
        return self.state

    # ---- files -----------------------------------------------------------------------------
    def save(self) -> None:
        self.adapter.save(self.run_dir / "adapter.safetensors",
                          extra={"step": self.state.step, "seconds": round(self.state.seconds, 1)})
        save_adam(self.opt, self.adapter, self.run_dir / "optimizer.safetensors")
        tmp = self.run_dir / "state.json.part"
        tmp.write_text(json.dumps(asdict(self.state), indent=1))
        tmp.replace(self.run_dir / "state.json")

    def _load_optimizer(self) -> None:
        load_adam(self.opt, self.adapter, self.run_dir / "optimizer.safetensors")

    def _log(self, entry: dict) -> None:
        entry = dict(entry, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        if entry.get("kind") == "eval":
            self.say(f"eval step {entry['step']}: slot accuracy {entry['slot_accuracy']}, "
                     f"chain {entry['chain_acceptance']}, tokens/pass from masks {entry['expected_tokens_per_pass']}")
