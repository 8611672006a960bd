"""A thin wrapper over `tokenizers` (tokenizer.json): encode, decode, special ids, safe incremental text.

`safe_decode` never returns half a UTF-8 character: byte-level BPE tokens can split a
multi-byte character, and decoding such a prefix yields U+FFFD at the end; those trailing
tokens are held back until the character is complete.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from tokenizers import Tokenizer

from engine.errors import CheckpointError

REPLACEMENT = "\ufffd"


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer, special_ids: Iterable[int] = ()):
        self.tk = tokenizer
        self.special_ids = frozenset(special_ids)

    @classmethod
    def from_folder(cls, folder, special_ids: Iterable[int] = ()) -> "TextTokenizer":
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{path}: no tokenizer.json in the model folder")
        try:
            return cls(Tokenizer.from_file(str(path)), special_ids)
        except Exception as exc:  # tokenizers raises a plain Exception on bad JSON
            raise CheckpointError(f"{path}: cannot load tokenizer: {exc}") from exc

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size(with_added_tokens=True)

    @cached_property
    def newline_ids(self) -> frozenset:
        """Ids of the tokens whose own text holds a newline (one batch decode of the whole
        vocabulary: ~0.15 s for Qwen's 151,936 tokens, once per tokenizer)."""
        texts = self.tk.decode_batch([[i] for i in range(self.vocab_size)], skip_special_tokens=False)
        return frozenset(i for i, text in enumerate(texts) if "\n" in text)

    def token_id(self, token: str) -> Optional[int]:
        return self.tk.token_to_id(token)

    def encode(self, text: str) -> List[int]:
        if not text:
            return []
        return self.tk.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        ids = [i for i in ids if i not in self.special_ids]
        return self.tk.decode(ids, skip_special_tokens=False) if ids else ""

    def safe_decode(self, ids: Sequence[int]) -> str:
        """Decode, holding back trailing tokens that end in an incomplete UTF-8 sequence."""
        ids = list(ids)
        text = self.decode(ids)
        held = 0
        while text.endswith(REPLACEMENT) and ids and held < 4:
            ids.pop()
            held += 1
            text = self.decode(ids)
        return text


class StableText:
    """Grows the `stable` text monotonically: a new decode that does not extend it is ignored."""

    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer
        self.text = ""
        self._n = -1

    def update(self, ids: Sequence[int]) -> str:
        if len(ids) != self._n:
            new = self.tokenizer.safe_decode(ids)
            if new.startswith(self.text):
                self.text = new
            self._n = len(ids)
        return self.text
