"""Train the byte-level BPE tokenizer (tokenizers) on the training split only.

The special tokens come first, at fixed ids 0..6, in the order of SPECIAL_TOKENS, so a
model's config can name them without looking them up; the byte alphabet follows, so any
text (any UTF-8) round-trips exactly.
"""
from __future__ import annotations

from typing import Dict, Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|eos|>", "<|pad|>", "<|mask|>", "<|fim_prefix|>", "<|fim_suffix|>",
                  "<|fim_middle|>", "<|file_sep|>"]
SPECIAL_IDS: Dict[str, int] = {"eos": 0, "pad": 1, "mask": 2, "fim_prefix": 3, "fim_suffix": 4,
                               "fim_middle": 5, "file_sep": 6}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2) -> Tokenizer:
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(texts, trainer)
    check_special_ids(tk)
    return tk


def check_special_ids(tk: Tokenizer) -> None:
    for name, tid in SPECIAL_IDS.items():
        got = tk.token_to_id(SPECIAL_TOKENS[tid])
        if got != tid:
            raise ValueError(f"special token {name} has id {got}, expected {tid}")
