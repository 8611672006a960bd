"""Training the attention draft head (drafting/attention_head.py) on the same features as the draft head.

The run is draft_head_train.HeadTrainer's (features once from the frozen model, resumable,
accumulating across sessions; its held-out greedy-middle examples and measures), with three
pieces of its own:
  - a batch is whole feature sequences (random ones, about `batch_rows` rows together, padded),
    since a row's query reads every earlier row of its sequence;
  - the loss is attention_head.chain_loss: `depth` levels of chains over every row at once,
    each level seeing what drafting will show it (chain_visibility);
  - the held-out measure drafts the way the decoder does (evaluate below);
and it may start from a trained DraftHead (`init_from`: its weights, vocabulary and thresholds,
the attention's output projection zero: at step 0 it drafts exactly as that head does).
Run folder: as HeadTrainer's, the weights in attn.safetensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

import engine.drafting.attention_head as A
from engine.drafting.head import DraftHead
from engine.train.drafters.draft_head_train import HeadConfig, HeadTrainer
from engine.train.drafters.features import ChainScore


class AttentionHeadTrainer(HeadTrainer):
    kind = "attn"

    def __init__(self, model, run_dir, files_train, files_heldout, encode, hcfg: Optional[HeadConfig] = None,
                 say=print):
        # a new run's default batch: ~2048 rows of whole sequences (a resumed run keeps its own)
        super().__init__(model, run_dir, files_train, files_heldout, encode, hcfg or HeadConfig(batch_rows=2048),
                         say=say)

    def new_head(self, vocab: List[int]):
        if self.hcfg.init_from:                       # the draft head's weights and vocabulary
            ff = DraftHead.load(self.hcfg.init_from, self.cfg)
            return A.AttentionHead.from_draft_head(ff, self.cfg, heads=self.hcfg.heads, kv_heads=self.hcfg.kv_heads,
                                                   seed=self.hcfg.seed)
        return A.AttentionHead(self.cfg, vocab, inner=self.hcfg.inner, heads=self.hcfg.heads,
                               kv_heads=self.hcfg.kv_heads, slots=self.hcfg.slots,
                               out_norm=self.model.norm.weight, seed=self.hcfg.seed)

    def load_head(self, path: Path):
        return A.AttentionHead.load(path, self.cfg)

    def batch_loss(self, feats: Dict[str, torch.Tensor], gen: torch.Generator):
        lengths = feats["lengths"]
        starts = torch.cumsum(lengths, 0) - lengths
        picked, rows = [], 0
        while rows < self.hcfg.batch_rows:
            i = int(torch.randint(len(lengths), (1,), generator=gen))
            if int(lengths[i]) < 2:
                continue
            picked.append(i)
            rows += int(lengths[i])
        width = max(int(lengths[i]) for i in picked)
        dev = self.head.table.device
        hidden = torch.zeros(len(picked), width, self.cfg.hidden_size, device=dev)        # [B, L, H]
        tokens = torch.zeros(len(picked), width, dtype=torch.long, device=dev)            # [B, L]
        greedy = torch.zeros(len(picked), width, dtype=torch.long, device=dev)
        for r, i in enumerate(picked):
            s, n = int(starts[i]), int(lengths[i])
            hidden[r, :n] = feats["hidden"][s:s + n].to(dev, torch.float32)
            tokens[r, :n] = feats["tokens"][s:s + n].to(dev).long()
            greedy[r, :n] = feats["greedy"][s:s + n].to(dev).long()
        return A.chain_loss(self.head, hidden, tokens, greedy, lengths[picked].to(dev),
                            self.vocab_index.to(dev), self.hcfg.depth, self.hcfg.feature_weight)

    def evaluate_on(self, held: Dict[str, torch.Tensor], mids: Sequence[int]) -> dict:
        return evaluate(self.head, held, mids)


@torch.no_grad()
def evaluate(head: A.AttentionHead, held: Dict[str, torch.Tensor], mids: Sequence[int]) -> dict:
    """draft_head_train.evaluate_head's measure, drafting the way the decoder does: at every
    middle row t the head's cache holds the true rows < t, and its chain starts from h_t and the
    bonus token x_{t+1} (thresholds off: every chain runs to the head's slots)."""
    score = ChainScore(head.slots)
    saved = head.first_min_prob, head.min_prob
    head.first_min_prob = head.min_prob = 0.0
    try:
        start = 0
        for n, mid in zip(held["lengths"].tolist(), mids):
            toks = held["tokens"][start:start + n].long()
            hid = held["hidden"][start:start + n].float()
            whole = A.HeadCache()
            head.extend(whole, hid[:n - 1], toks[1:n], 0)                    # true rows 0..n-2
            for t in range(mid, n - 2):
                cache = A.HeadCache(whole.k[:, :t], whole.v[:, :t])
                guesses = head.propose(cache, hid[t], int(toks[t + 1]), head.slots)
                score.add(guesses, toks[t + 2:t + 2 + head.slots].tolist())
            start += n
    finally:
        head.first_min_prob, head.min_prob = saved
    return score.result()
