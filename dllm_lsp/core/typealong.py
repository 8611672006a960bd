"""Type-along cache: when the user types what we suggested, answer the rest without a forward pass.

An LRU of finished suggestions keyed by the text around the cursor: (the last KEY_CHARS
characters before it, the first KEY_CHARS after it). A lookup at a new cursor tries the key
the document had k characters earlier (k = 0 .. the longest stored suggestion): if the k
characters typed since are the start of the suggestion stored there, the answer is the
remainder. k = 0 is an exact repeat (its answer may be "", meaning "nothing here").
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Tuple

KEY_CHARS = 512


@dataclass(frozen=True)
class CacheHit:
    text: str        # what to insert now
    typed: int       # characters of the stored suggestion already typed (0 = exact repeat)


class TypeAlongCache:
    def __init__(self, capacity: int = 256, key_chars: int = KEY_CHARS):
        self.capacity, self.key_chars = capacity, key_chars
        self._entries: "OrderedDict[Tuple[str, str], str]" = OrderedDict()
        self._longest = 0
        self._lock = threading.Lock()

    def _key(self, before: str, after: str) -> Tuple[str, str]:
        return before[-self.key_chars:], after[: self.key_chars]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._longest = 0

    def store(self, before: str, after: str, suggestion: str) -> None:
        """Remember `suggestion` for the cursor between `before` and `after`."""
        key = self._key(before, after)
        with self._lock:
            self._entries[key] = suggestion
            self._entries.move_to_end(key)
            self._longest = max(self._longest, len(suggestion))
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def lookup(self, before: str, after: str) -> Optional[CacheHit]:
        """The remainder of a stored suggestion whose start the user has typed, or None."""
        suffix_key = after[: self.key_chars]
        with self._lock:
            for k in range(0, min(self._longest, len(before)) + 1):
                key = ((before[: len(before) - k] if k else before)[-self.key_chars:], suffix_key)
                stored = self._entries.get(key)
                if stored is None:
                    continue
                typed = before[len(before) - k:] if k else ""
                if k == 0 or (stored.startswith(typed) and len(stored) > k):
                    self._entries.move_to_end(key)
                    return CacheHit(stored[k:], k)
        return None
