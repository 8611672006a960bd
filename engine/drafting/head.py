"""A small draft head over the frozen model's last hidden state: the second drafter candidate of
issue 12, beside the mask slots (drafting/mask_slots.py).

Design (after Medusa, Cai et al. 2024, and EAGLE, Li et al. 2024): the verify pass already
computes h_t, the final (normed) hidden state of the last accepted row, and its argmax b, the
bonus token the pass commits. The head reads both and predicts the hidden state the model will
have one position later, so that the model's own (frozen, tied) vocabulary projection turns it
into a guess of the token after b; chained on its own predictions it drafts K tokens after b:

    z   = W_in [h_t ; rms(e_b)]                 h_t [H] (model.hidden's output), e_b = embed(b) [H]
    z   = z + SwiGLU(rms(z))                    one residual block, inner width I
    f   = rms_out(z)                            predicted h_{t+1} [H]
    p   = softmax(f E_V^T)                      E_V: the frozen embedding rows of the draft vocabulary V
    g_1 = V[argmax p];  then (f, g_1) -> g_2, ...   (stopping at the first guess below min_prob)

The head never runs inside the model: the verifier is untouched by construction (the decoder's
pass is the frozen model's pass; tests/engine/test_draft_head.py checks the logits anyway), and
a guess is only ever a draft that the next pass verifies. Unlike mask-slot guesses, which were
conditioned on the pass's drafts and die with a rejected one, the head is conditioned on the
exact state after the committed tokens, so it drafts after every pass.

The draft vocabulary V (the most frequent verifier tokens of the training data, a few
thousand) keeps a guess cheap: one step reads W_in, the block and |V| x H rows (~40 MB in fp32
at the 0.5B's sizes), not the 150k-row projection; a token outside V is simply never drafted.

Saved as safetensors (fp16) with the format, the base model's identity (mask_adapter's), the
vocabulary ids and the two guess thresholds (a file without them gets FIRST_MIN_PROB and
GUESS_MIN_PROB); refused for any other model.
"""
from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import CheckpointError
from engine.model.packed import dense_weight, fp16_gemm_available, pack_weight
from engine.drafting.mask_slots import base_identity, read_drafter_file

FORMAT = "dllm-draft-head-1"
# A guess is drafted while its probability is at least this (the first guess and the later ones).
# Measured on bench decode's 20 stdlib-line cases, warm, 2 threads (docs/models.md): 0/0.3 gave
# 1.38 tokens per pass and 589 ms p50 (a doubtful first guess displaced a short lookup match),
# 0.3/0.3 1.49 and 410 ms, 0.5/0.5 1.47 and 383 ms (lookup alone: 1.34, 403 ms).
FIRST_MIN_PROB = 0.5
GUESS_MIN_PROB = 0.5
# A tree of guesses (propose_tree, draft_tree=true): the likeliest children per node and nodes
# kept per level, and the least path probability worth a row. Chosen on the held-out
# greedy-middle examples of a head run (216 positions, the shipped head, 12 nodes): width 3 and
# 0.03 gave 1.644 tokens per pass over 8.0 rows, 0.05 1.583 over 5.9, width 2 1.574, width 4
# 1.653 over 8.8; its best chain alone 1.431 over 4 rows.
TREE_WIDTH = 3
TREE_MIN_SCORE = 0.03


def rms(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension, in the input's dtype."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


class HeadCore(nn.Module):
    """What both draft heads hold (this one and attention_head.AttentionHead): the draft
    vocabulary and guess thresholds, the input projection of [h ; rms(e)], one SwiGLU block,
    the out norm, the frozen rows of the model they draft for (bind) and fp16 packs of their
    weights for drafting (_packed)."""
    PACKED = ("w_in", "gate", "up", "down", "table")

    def __init__(self, cfg, vocab: Sequence[int], inner: int, slots: int, out_norm: Optional[torch.Tensor],
                 gen: torch.Generator):
        super().__init__()
        h = cfg.hidden_size
        self.identity = base_identity(cfg)
        self.slots, self.inner = slots, inner
        self.first_min_prob, self.min_prob = FIRST_MIN_PROB, GUESS_MIN_PROB    # see propose()
        self.register_buffer("vocab", torch.tensor(list(vocab), dtype=torch.long), persistent=False)   # [Nv]
        self._bound = None                               # weakref to the model bind() last took rows from
        w_in = torch.zeros(h, 2 * h)
        w_in[:, :h] = torch.eye(h)                       # start as "the next state is this one"
        w_in += torch.randn(h, 2 * h, generator=gen) * (0.02 / h ** 0.5)
        self.w_in = nn.Parameter(w_in)                                                   # [H, 2H]
        self.embed_norm = nn.Parameter(torch.ones(h))
        self.block_norm = nn.Parameter(torch.ones(h))
        self.gate = nn.Parameter(torch.randn(inner, h, generator=gen) / h ** 0.5)        # [I, H]
        self.up = nn.Parameter(torch.randn(inner, h, generator=gen) / h ** 0.5)          # [I, H]
        self.down = nn.Parameter(torch.zeros(h, inner))                                  # [H, I]
        self.out_norm = nn.Parameter(out_norm.detach().clone().float() if out_norm is not None else torch.ones(h))
        self._packs = None                               # (weights' versions, fbgemm fp16 packs)
        self.table: Optional[torch.Tensor] = None      # [Nv, H] frozen projection rows (bind())
        self.embed = None                              # the model's input embedding (bind()): ids -> [.., H]

    def bind(self, model):
        """Take the frozen embedding and the vocabulary rows of `model`'s output projection; the
        head follows the model's device and dtype. Binding the model it is already bound to does
        nothing: with packed fp16 weights the rows are unpacked from the whole output projection
        (~2 s), and benches switch drafters per case."""
        if self._bound is not None and self._bound() is model:
            return self
        self.to(device=model.device, dtype=model.dtype)
        self.vocab = self.vocab.to(model.device)
        out = model.embed_tokens.weight if model.lm_head is None else dense_weight(model.lm_head)
        self.table = out.detach()[self.vocab].contiguous()
        self.embed = model.embed_tokens.forward    # ids -> rows (it may hold codes: CodesEmbedding); not a submodule
        self._bound = weakref.ref(model)
        return self

    def _packed(self):
        """The weights PACKED as fp16 for fbgemm (an fp32 head on a CPU that has it; else None),
        for drafting: one step of the draft head reads ~46 MB in fp32, half that packed, 4.0 ->
        ~2 ms a step here. The head's file stores fp16 and the table rows are the model's bf16
        embedding, so packing keeps their values; only the sums' order changes. Packed again
        when a weight changed in place (a trainer's step) or the head was bound to another table."""
        if self.table is None or self.table.device.type != "cpu" or self.table.dtype != torch.float32 \
                or not fp16_gemm_available():
            return None
        key = (id(self.table), self.table._version) + tuple(p._version for p in self.parameters())
        if self._packs is None or self._packs[0] != key:
            self._packs = (key, {name: pack_weight(getattr(self, name)) for name in self.PACKED})
        return self._packs[1]


class DraftHead(HeadCore):
    def __init__(self, cfg, vocab: Sequence[int], inner: int = 1024, slots: int = 4,
                 out_norm: Optional[torch.Tensor] = None, seed: int = 0):
        super().__init__(cfg, vocab, inner, slots, out_norm, torch.Generator().manual_seed(seed))

    # ---- one step and a chain -------------------------------------------------------------------
    def step(self, hidden: torch.Tensor, tokens: torch.Tensor, packs: Optional[dict] = None):
        """hidden [N, H], tokens [N] -> (predicted next hidden [N, H], logits over V [N, Nv]);
        with `packs` (_packed()) every product goes through fbgemm's fp16 kernel (no autograd)."""
        if packs is None:
            def linear(x, name):
                return F.linear(x, getattr(self, name))
        else:
            def linear(x, name):
                return torch.ops.quantized.linear_dynamic_fp16(x, packs[name])
        e = rms(self.embed(tokens), self.embed_norm)                                     # [N, H]
        z = linear(torch.cat([hidden, e], dim=-1), "w_in")                               # [N, H]
        u = rms(z, self.block_norm)
        z = z + linear(F.silu(linear(u, "gate")) * linear(u, "up"), "down")
        f = rms(z, self.out_norm)                                                        # [N, H]
        return f, linear(f, "table")                                                     # [N, Nv]

    @torch.no_grad()
    def propose(self, hidden: torch.Tensor, token: int, k: int, banned: Sequence[int] = ()) -> List[int]:
        """hidden [H] of the last accepted row, token = the bonus token committed after it ->
        up to k guesses of the tokens after it, cut at the first one whose probability is below
        `first_min_prob` (the first guess) or `min_prob` (the later ones): on a CPU every
        drafted row costs pass time, so only likely guesses are worth a row. A banned token (a
        stop token) ends the chain after itself."""
        out: List[int] = []
        f = hidden.reshape(1, -1).to(self.table.dtype)
        tok = torch.tensor([token], device=self.table.device)
        packs = self._packed() if k else None
        for i in range(k):
            f, logits = self.step(f, tok, packs)
            p, j = torch.softmax(logits[0].float(), dim=-1).max(dim=-1)
            if float(p) < (self.min_prob if i else self.first_min_prob):
                break
            tok = self.vocab[j].reshape(1)
            out.append(int(tok))
            if out[-1] in banned:
                break
        return out

    @torch.no_grad()
    def propose_tree(self, hidden: torch.Tensor, token: int, k: int, nodes: int, width: int = TREE_WIDTH,
                     min_score: float = TREE_MIN_SCORE, banned: Sequence[int] = ()) -> List[List[int]]:
        """A tree of guesses instead of one chain (after EAGLE-2, Li et al. 2024): the chains of
        a trie of at most `nodes` guesses, at most k deep, the head's greedy chain first.

        Level by level, the `width` frontier nodes of highest score are stepped together
        (f [N, H], their tokens [N]) and each proposes its `width` likeliest next tokens; a
        node's score is the product of the head's probabilities along its path, an estimate of
        the chance that the verifier accepts it. The tree keeps the `nodes` best-scored nodes
        of score >= `min_score` (a parent scores at least as high as its child, so the kept
        nodes form a trie); a banned (stop) token is a leaf. Returns each kept leaf's path, the
        path of best children first (the chain that propose() would give without thresholds),
        then the others by score."""
        if k <= 0 or nodes <= 0:
            return []
        packs = self._packed()
        dev = self.table.device
        kept = []                                           # every node: (score, path)
        frontier_f = hidden.reshape(1, -1).to(self.table.dtype)                           # [N, H]
        frontier_tok = torch.tensor([token], device=dev)                                  # [N]
        frontier = [(1.0, [])]
        for _ in range(k):
            f, logits = self.step(frontier_f, frontier_tok, packs)                        # [N, H], [N, Nv]
            probs, idx = torch.softmax(logits.float(), dim=-1).topk(min(width, logits.shape[-1]), dim=-1)
            cand = []                                       # (score, path, parent row)
            for row, ((score, path), ps, toks) in enumerate(zip(frontier, probs.tolist(), self.vocab[idx].tolist())):
                for p, t in zip(ps, toks):
                    if score * p >= min_score:
                        cand.append((score * p, path + [t], row))
            cand.sort(key=lambda c: -c[0])
            kept.extend((sc, path) for sc, path, _ in cand)
            grow = [c for c in cand if c[1][-1] not in banned][:width]
            if not grow:
                break
            frontier = [(sc, path) for sc, path, _ in grow]
            rows = torch.tensor([r for _, _, r in grow], device=dev)
            frontier_f = f[rows]
            frontier_tok = torch.tensor([path[-1] for _, path in frontier], device=dev)
        kept.sort(key=lambda c: (-c[0], len(c[1])))         # parents before their children
        kept = [path for _, path in kept[:nodes]]
        parents = {tuple(p[:-1]) for p in kept}
        leaves = [p for p in kept if tuple(p) not in parents]
        best: List[int] = []                                # the likeliest kept child, level by level
        while True:
            nxt = next((p for p in kept if len(p) == len(best) + 1 and p[:-1] == best), None)
            if nxt is None:
                break
            best = nxt
        return [best] + [p for p in leaves if p != best] if best else []

    # ---- files ---------------------------------------------------------------------------------
    def save(self, path: Path, extra: Optional[dict] = None) -> None:
        save_head(self, path, FORMAT, {"inner": str(self.inner)}, extra)

    @classmethod
    def load(cls, path, cfg) -> "DraftHead":
        """Read a head file; CheckpointError when it is unreadable or made for another model."""
        return load_head(path, cfg, FORMAT, "draft head",
                         lambda meta, vocab: cls(cfg, vocab, inner=int(meta["inner"]), slots=int(meta.get("slots", 4))))


def save_head(head: nn.Module, path: Path, fmt: str, shape: dict, extra: Optional[dict]) -> None:
    """A head's parameters (fp16), vocabulary, format, base model identity, `shape` (the
    constructor's sizes, as strings), `extra` and guess thresholds in one safetensors file."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().cpu().to(torch.float16).contiguous() for n, p in head.named_parameters()}
    tensors["vocab"] = head.vocab.detach().cpu().to(torch.int32).contiguous()
    meta = {"format": fmt, "identity": json.dumps(head.identity, sort_keys=True), **shape,
            "slots": str(head.slots), "extra": json.dumps(extra or {}),
            "first_min_prob": str(head.first_min_prob), "min_prob": str(head.min_prob)}
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_head(path, cfg, fmt: str, what: str, build):
    """The head save_head wrote: `build(meta, vocab)` makes the empty head, the file's tensors
    fill it. CheckpointError when the file is unreadable, made for another model, or its
    vocabulary or tensors do not fit."""
    meta, tensors = read_drafter_file(path, cfg, fmt, what)
    vocab = tensors.pop("vocab", None)
    if vocab is None or vocab.dim() != 1 or not len(vocab) or int(vocab.min()) < 0 \
            or int(vocab.max()) >= cfg.vocab_size:
        raise CheckpointError(f"{path}: {what} vocabulary missing or out of range")
    try:
        head = build(meta, vocab.tolist())
        missing, unexpected = head.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    except (RuntimeError, ValueError, KeyError) as exc:   # a tensor of the wrong shape, a size missing
        raise CheckpointError(f"{path}: {what} tensors do not match ({exc})") from exc
    if missing or unexpected:
        raise CheckpointError(f"{path}: {what} tensors do not match (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    head.extra = json.loads(meta.get("extra", "{}"))
    head.first_min_prob = float(meta.get("first_min_prob", FIRST_MIN_PROB))
    head.min_prob = float(meta.get("min_prob", GUESS_MIN_PROB))
    return head


def drafter_format(path) -> Optional[str]:
    """The `format` a drafter file declares (None when unreadable)."""
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("format")
    except Exception:  # unreadable: the loader names the cause
        return None
