"""One stream of text as it is decoded, whatever produces it: the in-process engine (runtime/host.py
decode_plan), the HTTP server's engine loop (http/server.py) or a remote FIM server's SSE events
(http/client.py). Each loop only feeds `Watch.update` with (committed text, draft, passes) and
stops when it answers True; the watch applies a view, reports every update, times the first text.

A view says what may be shown of the committed text and whether more cannot change the answer:
PlanView (the editor's pipeline: post-processed text that never shrinks, stop once settled,
core/postprocess.is_settled: e.g. a line completion whose line has ended) and StopView (the HTTP
APIs: stop strings, cut by StopScanner, and llama.cpp's deadline).
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Protocol, Sequence, Tuple

from dllm_lsp.core.plan import Plan, finish_completion, stream_completion
from dllm_lsp.core.postprocess import is_settled

Update = Callable[[str, str, int], None]      # (visible committed text, draft, passes or events so far)


class View(Protocol):
    def visible(self, stable: str) -> Tuple[str, bool]: ...   # (what may be shown, more cannot change it)
    def draft(self, draft: str) -> str: ...


class PlanView:
    def __init__(self, plan: Plan):
        self.plan, self.shown = plan, ""

    def visible(self, stable: str) -> Tuple[str, bool]:
        text = stream_completion(self.plan, stable)
        if text.startswith(self.shown):           # never retract what was shown
            self.shown = text
        return self.shown, is_settled(stable, self.plan.shape)

    def draft(self, draft: str) -> str:
        return finish_completion(self.plan, draft)


class Watch:
    """The bookkeeping of one stream: `update` per step, True once the view says to stop."""

    def __init__(self, view: View, on_update: Optional[Update] = None, t0: Optional[float] = None):
        self.view, self.on_update = view, on_update
        self.t0 = time.perf_counter() if t0 is None else t0
        self.first_text_ms: Optional[float] = None

    def update(self, stable: str, draft: str, steps: int) -> bool:
        shown, done = self.view.visible(stable)
        draft = self.view.draft(draft)
        if self.first_text_ms is None and (shown or draft):
            self.first_text_ms = (time.perf_counter() - self.t0) * 1000
        if self.on_update is not None:
            self.on_update(shown, draft, steps)
        return done

    def finished(self, final: str) -> None:
        """The final text is known: it counts as the first text if nothing was shown before."""
        if self.first_text_ms is None and final:
            self.first_text_ms = (time.perf_counter() - self.t0) * 1000


class StopScanner:
    """Cut text at the first stop string; while streaming, hold back a tail that may become one.

    `visible(text)` for a growing `text` only grows (a held-back tail is a prefix of a stop
    string, so a stop that later completes starts at or after what was shown)."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)

    def find(self, text: str) -> Tuple[int, str]:
        """(index of the first stop string in text, which one) or (-1, "")."""
        best, word = -1, ""
        for s in self.stops:
            i = text.find(s)
            if i >= 0 and (best < 0 or i < best):
                best, word = i, s
        return best, word

    def final(self, text: str) -> Tuple[str, str]:
        i, word = self.find(text)
        return (text, "") if i < 0 else (text[:i], word)

    def visible(self, text: str) -> Tuple[str, bool]:
        """(the part of a growing text that is safe to show, whether a stop string was hit)."""
        i, _ = self.find(text)
        if i >= 0:
            return text[:i], True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        return text[:len(text) - hold], False


class StopView:
    """What a FIM API client may be shown (runtime/stream.py's view): the text cut at the first
    stop string, a tail that may become one held back; stop on a stop string, or once a line is
    complete past the request's deadline (llama.cpp's t_max_predict_ms, from the first update)."""

    def __init__(self, stops, deadline_ms: Optional[float] = None):
        self.scanner, self.deadline_ms = StopScanner(stops), deadline_ms
        self.first_at: Optional[float] = None
        self.timed_out = False

    def visible(self, stable: str) -> Tuple[str, bool]:
        now = time.perf_counter()
        self.first_at = now if self.first_at is None else self.first_at
        text, hit = self.scanner.visible(stable)
        if not hit and self.deadline_ms is not None and "\n" in stable \
                and (now - self.first_at) * 1000 > self.deadline_ms:
            self.timed_out = True
        return text, hit or self.timed_out

    def draft(self, draft: str) -> str:
        return self.scanner.final(draft)[0]
