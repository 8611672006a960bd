"""What the draft heads train on and how they are scored: the frozen model's features (each
position's final hidden state and its own greedy next token) computed once per file and kept in a
run folder (FeatureStore), and a chain of guesses scored against the model's greedy tokens
(ChainScore, evaluate_head)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from engine.drafting.head import DraftHead
from engine.model.transformer import DecoderModel, causal_visibility


def frozen_features(model: DecoderModel, x: Sequence[int], chunk: int = 128):
    """(hidden [L, H] fp16 on CPU, greedy [L] int32): one frozen pass over x; the argmax is
    taken over the whole vocabulary (mask token excluded), `chunk` rows at a time."""
    dev = model.device
    ids = torch.tensor([list(x)], device=dev)
    hidden, _ = model.hidden(ids, torch.arange(len(x), device=dev), None, causal_visibility(len(x), 0, dev))
    hidden = hidden[0]                                                                   # [L, H]
    best = []
    for i in range(0, len(x), chunk):
        logits = model.head(hidden[i:i + chunk]).float()                                 # [c, V]
        logits[:, model.cfg.mask_id] = float("-inf")
        best.append(logits.argmax(-1))
    return hidden.to(torch.float16).cpu(), torch.cat(best).to(torch.int32).cpu()


class FeatureStore:
    """Shards of (tokens, hidden, greedy, starts) in a folder; `load()` concatenates them."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pending: List[tuple] = []

    def add(self, tokens: Sequence[int], hidden: torch.Tensor, greedy: torch.Tensor) -> None:
        self.pending.append((torch.tensor(list(tokens), dtype=torch.int32), hidden, greedy))

    def pending_rows(self) -> int:
        return sum(len(t) for t, _, _ in self.pending)

    def flush(self) -> None:
        if not self.pending:
            return
        from safetensors.torch import save_file
        n = len(list(self.folder.glob("*.safetensors")))
        lengths = torch.tensor([len(t) for t, _, _ in self.pending], dtype=torch.int64)
        tensors = {"tokens": torch.cat([t for t, _, _ in self.pending]),
                   "hidden": torch.cat([h for _, h, _ in self.pending]).contiguous(),
                   "greedy": torch.cat([g for _, _, g in self.pending]),
                   "lengths": lengths}
        tmp = self.folder / f"{n:05d}.safetensors.part"
        save_file(tensors, str(tmp))
        tmp.replace(self.folder / f"{n:05d}.safetensors")
        self.pending = []

    def load(self) -> Optional[Dict[str, torch.Tensor]]:
        from safetensors.torch import load_file
        parts = [load_file(str(p)) for p in sorted(self.folder.glob("*.safetensors"))]
        parts += [{"tokens": t, "hidden": h, "greedy": g, "lengths": torch.tensor([len(t)])} for t, h, g in self.pending]
        if not parts:
            return None
        return {k: torch.cat([p[k] for p in parts]) for k in ("tokens", "hidden", "greedy", "lengths")}


class ChainScore:
    """Slot accuracy and chain acceptance of guess chains against the tokens that followed:
    slot i counts when the truth reaches it; a chain is accepted through slot i when slots
    1..i all hit; expected tokens per pass = 1 + the sum of the chain acceptances."""

    def __init__(self, k: int):
        self.right, self.chain, self.counted, self.groups = torch.zeros(k), torch.zeros(k), torch.zeros(k), 0

    def add(self, guesses: Sequence[int], truth: Sequence[int]) -> None:
        run = 1.0
        for i in range(min(len(self.right), len(truth))):
            hit = float(i < len(guesses) and guesses[i] == truth[i])
            self.right[i] += hit
            self.counted[i] += 1
            run *= hit
            self.chain[i] += run
        self.groups += 1

    def result(self) -> dict:
        acc = (self.right / self.counted.clamp(min=1)).tolist()
        rate = (self.chain / max(self.groups, 1)).tolist()
        return {"slot_accuracy": [round(a, 4) for a in acc], "chain_acceptance": [round(c, 4) for c in rate],
                "expected_tokens_per_pass": round(1.0 + sum(rate), 4), "groups": self.groups}


@torch.no_grad()
def evaluate_head(head: DraftHead, held: Dict[str, torch.Tensor], mids: Sequence[int]) -> dict:
    """Slot accuracy and chain acceptance at every middle row of greedy-middle examples."""
    k = head.slots
    score = ChainScore(k)
    start = 0
    for n, mid in zip(held["lengths"].tolist(), mids):
        toks = held["tokens"][start:start + n].tolist()
        for t in range(start + mid, start + n - 2):                   # bonus token = x_{t+1}
            guesses = []
            f = held["hidden"][t].reshape(1, -1).to(head.table.device, head.table.dtype)
            tok = torch.tensor([toks[t + 1 - start]], device=head.table.device)
            for _ in range(k):
                f, logits = head.step(f, tok)
                tok = head.vocab[logits[0].argmax()].reshape(1)
                guesses.append(int(tok))
            score.add(guesses, toks[t + 2 - start:t + 2 - start + k])
        start += n
    return score.result()


# ---- the run ------------------------------------------------------------------------------------
