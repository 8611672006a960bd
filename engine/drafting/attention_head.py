"""A draft head that attends over the verifier's own feature sequence (after EAGLE, Li et al.
2024): the third drafter candidate of issue 12, beside the mask slots (drafting/mask_slots.py) and the
feed-forward draft head (drafting/head.py), which sees only the last hidden state.

Every position j of the context (and of the committed middle) gives the head one input row made
of the verifier's final normed hidden state h_j and the token after it, x_{j+1}:

    z_j = W_in [h_j ; rms(e(x_{j+1}))]                                  [H]
    z_j = z_j + O · attn(q(rms z_j), k, v)     one causal attention layer, RoPE at position j+1
    z_j = z_j + SwiGLU(rms z_j)                 inner width I
    f_j = rms_out(z_j)                          predicted h_{j+1}
    p_j = softmax(f_j E_V^T)                    guess of x_{j+2}, over the draft vocabulary V

Keys and values of true rows are kept for the whole context (`HeadCache`: 2 x kv_heads x 64
floats a position, ~1 KB); the head drafts after a pass from the last accepted row t and the
bonus token b = x_{t+1}: step 1 is the true row t itself (its key joins the cache), step i > 1
reads (f of the step before, its guess) at position t + i and attends over the true keys <= t
plus the keys of the steps before it in the chain. Training reproduces exactly that view
(`chain_visibility`, EAGLE-3's "training-time test"): level d queries at row j see the
true keys of rows <= j - d and the level-k keys of row j - d + k for k = 1..d.

The head never runs inside the model: the verifier is untouched by construction, and a guess
is only ever a draft that the next pass verifies.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from engine.drafting.head import HeadCore, load_head, rms, save_head

FORMAT = "dllm-attention-head-1"


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE (half rotation, as Qwen's): x [.., T, D], cos/sin [T, D]."""
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + turned * sin


def chain_visibility(m: int, level: int, device=None) -> torch.Tensor:
    """Which keys a level-`level` query row j may read, over the keys of levels 0..level laid
    end to end ([m, (level + 1) m] bool): true rows j' <= j - level, and for k = 1..level the
    level-k row j - level + k (the chain steps before it and itself)."""
    j = torch.arange(m, device=device)
    blocks = [j[None, :] <= (j[:, None] - level)]
    for k in range(1, level + 1):
        blocks.append(j[None, :] == (j[:, None] - level + k))
    return torch.cat(blocks, dim=1)


class HeadCache:
    """Keys and values of the head's true rows for one context: k, v [kv_heads, N, D]; row j
    holds (h_j, x_{j+1}). `truncate(n)` keeps rows < n (a context cut back by a keystroke)."""

    def __init__(self, k: Optional[torch.Tensor] = None, v: Optional[torch.Tensor] = None):
        self.k, self.v = k, v

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[1]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=1)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=1)

    def truncate(self, n: int) -> None:
        if self.k is not None and n < self.k.shape[1]:
            self.k, self.v = self.k[:, :n], self.v[:, :n]

    def copy(self) -> "HeadCache":
        return HeadCache(self.k, self.v)


class HeadRows:
    """What the attention head keeps of one token sequence: `hidden` [P, H], the verifier's
    final states of positions 0..P-1, and `cache`, the head's keys and values of its true rows
    j < len(cache) <= P - 1 (row j needs x_{j+1}). The context cache keeps one beside the KV
    (`owner` = the head that made it: another head's rows are not these), and a decode extends
    its own copy pass by pass."""

    def __init__(self, owner, hidden: Optional[torch.Tensor] = None, cache: Optional[HeadCache] = None):
        self.owner = owner
        self.hidden = hidden
        self.cache = cache if cache is not None else HeadCache()

    def __len__(self) -> int:
        return 0 if self.hidden is None else self.hidden.shape[0]

    def add_hidden(self, hidden: torch.Tensor) -> None:
        """hidden [T, H] of the next T positions."""
        hidden = hidden.detach()
        self.hidden = hidden.clone() if self.hidden is None else torch.cat([self.hidden, hidden])

    def sync(self, head: "AttentionHead", tokens: Sequence[int], upto: int) -> None:
        """Make the cache hold rows < upto (<= len(self), each row's next token in `tokens`)."""
        start = len(self.cache)
        if upto > start:
            nxt = torch.tensor(list(tokens[start + 1:upto + 1]), device=self.hidden.device)
            head.extend(self.cache, self.hidden[start:upto], nxt, start)

    def prefix(self, n: int) -> "HeadRows":
        """The rows of the first n positions (views)."""
        cache = self.cache.copy()
        cache.truncate(max(0, n - 1))
        return HeadRows(self.owner, None if self.hidden is None else self.hidden[:n], cache)


class AttentionHead(HeadCore):
    PACKED = HeadCore.PACKED + ("q_proj", "k_proj", "v_proj", "o_proj")

    def __init__(self, cfg, vocab: Sequence[int], inner: int = 1024, heads: int = 14, kv_heads: int = 2,
                 slots: int = 4, out_norm: Optional[torch.Tensor] = None, seed: int = 0):
        h = cfg.hidden_size
        if h % heads or heads % kv_heads:
            raise ValueError(f"hidden {h}, heads {heads}, kv heads {kv_heads} do not divide")
        gen = torch.Generator().manual_seed(seed)
        super().__init__(cfg, vocab, inner, slots, out_norm, gen)
        self.heads, self.kv_heads = heads, kv_heads
        self.head_dim = d = h // heads
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.attn_norm = nn.Parameter(torch.ones(h))
        self.q_proj = nn.Parameter(torch.randn(heads * d, h, generator=gen) / h ** 0.5)      # [nh*D, H]
        self.k_proj = nn.Parameter(torch.randn(kv_heads * d, h, generator=gen) / h ** 0.5)   # [nkv*D, H]
        self.v_proj = nn.Parameter(torch.randn(kv_heads * d, h, generator=gen) / h ** 0.5)
        self.o_proj = nn.Parameter(torch.zeros(h, heads * d))                                # [H, nh*D]: silent at first

    @classmethod
    def from_draft_head(cls, ff, cfg, heads: int = 14, kv_heads: int = 2, seed: int = 0) -> "AttentionHead":
        """A head that drafts exactly as the feed-forward DraftHead `ff` does (same vocabulary,
        input projection, block and norms; the attention's output projection zero), so training
        starts from what `ff` learned and the attention only adds what the context tells."""
        head = cls(cfg, ff.vocab.tolist(), inner=ff.inner, heads=heads, kv_heads=kv_heads, slots=ff.slots, seed=seed)
        with torch.no_grad():
            for name in ("w_in", "embed_norm", "block_norm", "gate", "up", "down", "out_norm"):
                getattr(head, name).copy_(getattr(ff, name).float())
        head.first_min_prob, head.min_prob = ff.first_min_prob, ff.min_prob
        return head

    # ---- pieces of one row ----------------------------------------------------------------------
    def linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x [.., in] -> [.., out] through weight `name`: fbgemm's fp16 kernel when drafting on a
        CPU that has it (no autograd; the file stores fp16 and the table rows are the model's
        bf16 values, so packing keeps the weights; only the sums' order changes), else F.linear."""
        packs = None if torch.is_grad_enabled() else self._packed()
        if packs is None:
            return F.linear(x, getattr(self, name))
        out = torch.ops.quantized.linear_dynamic_fp16(x.reshape(-1, x.shape[-1]).float().contiguous(), packs[name])
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def rope(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[..., None] * self.inv_freq                              # [T, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)                                           # [T, D]
        return emb.cos().to(self.w_in.dtype), emb.sin().to(self.w_in.dtype)

    def inputs(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """hidden [.., T, H], tokens [.., T] (the token after each hidden row) -> z [.., T, H]."""
        e = rms(self.embed(tokens), self.embed_norm)
        return self.linear(torch.cat([hidden.to(e.dtype), e], dim=-1), "w_in")

    def qkv(self, z: torch.Tensor, positions: torch.Tensor):
        """z [B, T, H] -> q [B, nh, T, D], k/v [B, nkv, T, D] (RoPE at `positions` [T])."""
        b, t, _ = z.shape
        u = rms(z, self.attn_norm)
        q = self.linear(u, "q_proj").view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.linear(u, "k_proj").view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.linear(u, "v_proj").view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.rope(positions)
        return rotate(q, cos, sin), rotate(k, cos, sin), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """q [B, nh, T, D], k/v [B, nkv, S, D], mask [T, S] bool (None: all) -> [B, T, nh*D]."""
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)                  # [B, nh, T, D]
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)

    def finish(self, z: torch.Tensor, attended: torch.Tensor):
        """Residual attention output, the SwiGLU block, the out norm -> (f [.., H], logits [.., Nv])."""
        z = z + self.linear(attended, "o_proj")
        u = rms(z, self.block_norm)
        z = z + self.linear(F.silu(self.linear(u, "gate")) * self.linear(u, "up"), "down")
        f = rms(z, self.out_norm)
        return f, self.linear(f, "table")

    # ---- drafting ----------------------------------------------------------------------------
    @torch.no_grad()
    def extend(self, cache: HeadCache, hidden: torch.Tensor, next_tokens: torch.Tensor, start: int) -> None:
        """Append the true rows start.. (hidden [T, H], next_tokens [T]: x_{j+1}) to `cache`."""
        positions = torch.arange(start + 1, start + 1 + hidden.shape[0], device=hidden.device)
        z = self.inputs(hidden[None], next_tokens[None])
        _, k, v = self.qkv(z, positions)
        cache.append(k[0], v[0])

    @torch.no_grad()
    def chain(self, cache: HeadCache, hidden: torch.Tensor, token: int) -> "Chain":
        """Start a chain after the last accepted row t = len(cache): hidden [H] = h_t, token =
        x_{t+1}; row t joins the cache (it is a true row)."""
        return Chain(self, cache, hidden, token)

    @torch.no_grad()
    def propose(self, cache: HeadCache, hidden: torch.Tensor, token: int, k: int,
                banned: Sequence[int] = ()) -> List[int]:
        """Up to k guesses of x_{t+2}.. (see chain()), cut at the first below the thresholds
        (first_min_prob, then min_prob); a banned (stop) token ends the chain after itself."""
        out: List[int] = []
        step = self.chain(cache, hidden, token)
        for i in range(k):
            f, logits = step.outputs()
            p, j = torch.softmax(logits.float(), dim=-1).max(dim=-1)
            if float(p) < (self.min_prob if i else self.first_min_prob):
                break
            out.append(int(self.vocab[j]))
            if out[-1] in banned or i + 1 == k:
                break
            step.advance(f, out[-1])
        return out

    # ---- files ---------------------------------------------------------------------------------
    def save(self, path: Path, extra: Optional[dict] = None) -> None:
        save_head(self, path, FORMAT, {"inner": str(self.inner), "heads": str(self.heads),
                                       "kv_heads": str(self.kv_heads)}, extra)

    @classmethod
    def load(cls, path, cfg) -> "AttentionHead":
        """Read a head file; CheckpointError when it is unreadable or made for another model."""
        return load_head(path, cfg, FORMAT, "attention draft head",
                         lambda meta, vocab: cls(cfg, vocab, inner=int(meta["inner"]), heads=int(meta["heads"]),
                                                 kv_heads=int(meta["kv_heads"]), slots=int(meta.get("slots", 4))))


class Chain:
    """One drafting chain: step i reads the true keys of rows < t + 1 and the keys of the chain's
    own steps before it (the training view of chain_visibility, level i)."""

    def __init__(self, head: AttentionHead, cache: HeadCache, hidden: torch.Tensor, token: int):
        self.head, self.dev = head, head.table.device
        self.position = len(cache) + 1                                   # of x_{t+1}
        self.z = head.inputs(hidden.reshape(1, 1, -1).to(head.table.dtype), torch.tensor([[token]], device=self.dev))
        self.q, k, v = head.qkv(self.z, torch.tensor([self.position], device=self.dev))
        cache.append(k[0], v[0])
        self.keys, self.values = cache.k[None], cache.v[None]             # [1, nkv, S, D]

    @torch.no_grad()
    def outputs(self):
        """(f [1, 1, H] the predicted next state, logits [Nv]) of the current step."""
        f, logits = self.head.finish(self.z, self.head.attend(self.q, self.keys, self.values, None))
        return f, logits[0, 0]

    @torch.no_grad()
    def advance(self, f: torch.Tensor, token: int) -> None:
        """The next step reads (f, token): the current step's prediction and its guess."""
        self.position += 1
        self.z = self.head.inputs(f, torch.tensor([[token]], device=self.dev))
        self.q, k, v = self.head.qkv(self.z, torch.tensor([self.position], device=self.dev))
        self.keys, self.values = torch.cat([self.keys, k], dim=2), torch.cat([self.values, v], dim=2)


def chain_levels(head: AttentionHead, hidden: torch.Tensor, tokens: torch.Tensor, depth: int):
    """Training-time chains over padded sequences: hidden [B, L, H], tokens [B, L] (rows of the
    frozen pass). Row j's input is (h_j, x_{j+1}) at level 0 and (the level d-1 prediction at
    row j-1, x_{j+1}) at level d, seeing the keys chain_visibility allows. Returns per level
    (f [B, L-1, H] predicted h_{j+1}, logits [B, L-1, Nv] guessing x_{j+2}); rows j < d of
    level d have no chain behind them (their outputs are not trained)."""
    m = hidden.shape[1] - 1
    positions = torch.arange(1, m + 1, device=hidden.device)
    next_tok = tokens[:, 1:].long()                                                      # [B, m]
    feats = hidden[:, :-1].float()
    keys, values, out = [], [], []
    for level in range(depth):
        z = head.inputs(feats, next_tok)                                                 # [B, m, H]
        q, k, v = head.qkv(z, positions)
        keys.append(k)
        values.append(v)
        mask = chain_visibility(m, level, hidden.device)
        f, logits = head.finish(z, head.attend(q, torch.cat(keys, 2), torch.cat(values, 2), mask))
        out.append((f, logits))
        feats = torch.cat([torch.zeros_like(f[:, :1]), f[:, :-1]], dim=1)               # row j reads row j-1's
    return out


def chain_loss(head: AttentionHead, hidden: torch.Tensor, tokens: torch.Tensor, greedy: torch.Tensor,
               lengths: torch.Tensor, vocab_index: torch.Tensor, depth: int, feature_weight: float = 1.0):
    """chain_levels' outputs against the frozen pass: every level predicts h_{j+1} (smooth L1)
    and greedy[j+1] (cross-entropy over V; out-of-vocabulary ignored), level d weighted 1 - 0.2 d;
    greedy [B, L], lengths [B] (padding after). Returns (loss, hits [depth], counted [depth])."""
    m = hidden.shape[1] - 1
    rows = torch.arange(m, device=hidden.device)
    want_f = hidden[:, 1:].float()                                                       # [B, m, H]
    target = vocab_index[greedy[:, 1:].long()]                                           # [B, m]
    inside = rows[None, :] < (lengths[:, None] - 1)                                      # [B, m]
    losses, hits, counted = [], [], []
    for level, (f, logits) in enumerate(chain_levels(head, hidden, tokens, depth)):
        keep = inside & (rows[None, :] >= level)
        ok = keep & (target >= 0)
        weight = 1.0 - 0.2 * level
        if bool(ok.any()):
            losses.append(weight * F.cross_entropy(logits[ok].float(), target[ok]))
        losses.append(weight * feature_weight * F.smooth_l1_loss(f[keep].float(), want_f[keep]))
        hits.append(((logits.argmax(-1) == target) & ok).sum())
        counted.append(ok.sum())
    return sum(losses), torch.stack(hits), torch.stack(counted)
