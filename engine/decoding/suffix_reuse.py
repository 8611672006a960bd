"""Approximate reuse of the suffix's keys/values after typing (`InfillRequest.suffix_reuse`, the
setting `suffixReuse`), as llama.cpp's `--cache-reuse` does. Off by default: a different model.

In prefix-suffix-middle order a key typed at the cursor changes the end of the prefix, and
everything after it moves: the suffix's tokens are the same but sit at other positions and, in
the exact model, attend to what was typed. The context cache holds the previous prompt's KV:

    cached: .. <|fim_prefix|> P_common P_old <|fim_suffix|> S <|fim_middle|>      (the tail from j_old)
    new:    .. <|fim_prefix|> P_common P_new <|fim_suffix|> S <|fim_middle|>      (the tail from j_new)

`plan_reuse` finds the shared head (n tokens), the changed prefix tokens P_new to compute exactly
(the new prompt's [n, j_new)) and the cached tail [j_old, end) to reuse at [j_new, ..), shifted
by delta = j_new - j_old. `shift_keys` turns a key at position p into the key at p + delta (RoPE is
a rotation by the position: R(p + delta) = R(delta) R(p)); values carry no position. Those keys
and values were computed without P_new: that is the approximation. The cache marks the positions
from j_new as approximate (ContextCache.approximate_from) and counts the tokens typed since the
tail was last computed exactly (`shift_debt`); past MAX_SHIFT_DEBT the tail is computed exactly
again, and a request without suffix_reuse never reads approximate entries.

Only the last context token is then computed with the request's first pass (its output starts
the suggestion), so a pause costs the typed tokens and one more, not the suffix window.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch

from engine.model.kvcache import common_prefix

MAX_SHIFT_DEBT = 32      # tokens typed before a reused tail since it was last computed exactly


class ReusePlan(NamedTuple):
    shared: int          # n: leading tokens whose cached KV is exact for the new prompt
    new_start: int       # j_new: where the tail starts in the new prompt
    old_start: int       # j_old: where it starts in the cached one
    length: int          # tail tokens reused (the new prompt's last token is computed again)

    @property
    def delta(self) -> int:
        return self.new_start - self.old_start


def plan_reuse(cached: Sequence[int], new: Sequence[int], suffix_marker: Optional[int], debt: int = 0,
               max_debt: int = MAX_SHIFT_DEBT) -> Optional[ReusePlan]:
    """The reuse of `cached`'s tail for the prompt `new`, or None: both must hold the suffix marker
    once, the cached tail from it must begin the new one (a reuse leaves the prompt's last token
    to the request's first pass, so the cache may lack it), something before it must differ
    (else the exact cache already serves), and the changed tokens must not take the debt past
    `max_debt`. The new prompt's last token is never reused: its output starts the suggestion."""
    if suffix_marker is None or list(cached).count(suffix_marker) != 1 or list(new).count(suffix_marker) != 1:
        return None
    j_old, j_new = list(cached).index(suffix_marker), list(new).index(suffix_marker)
    length = min(len(cached) - j_old, len(new) - j_new - 1)
    if length < 1 or list(cached[j_old:j_old + length]) != list(new[j_new:j_new + length]) \
            or (len(cached) - j_old > length and list(cached[j_old:]) != list(new[j_new:])):
        return None
    n = min(common_prefix(cached, new), j_old, j_new)
    if n == j_old == j_new:                   # nothing before the tail changed
        return None
    if debt + max(j_new - n, j_old - n) > max_debt:
        return None
    return ReusePlan(n, j_new, j_old, length)


def shift_keys(keys: torch.Tensor, delta: int, rope, apply_rope) -> torch.Tensor:
    """keys [1, Hkv, T, D] (RoPE at positions p) -> the same keys at positions p + delta.
    `rope(positions)` -> (cos, sin) [T, D] and `apply_rope(q, k, cos, sin)` are the model's own."""
    if delta == 0:
        return keys
    cos, sin = rope(torch.full((keys.shape[2],), delta, device=keys.device))
    return apply_rope(keys, keys, cos, sin)[1]
