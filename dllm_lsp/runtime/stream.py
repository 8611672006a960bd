"""One stream of text as it is decoded, whatever produces it: the in-process engine (runtime/host.py
decode_plan), the HTTP server's engine loop (http/server.py) or a remote FIM server's SSE events
(http/client.py). Each loop only feeds `Watch.update` with (committed text, draft, passes) and
stops when it answers True; the watch applies a view, reports every update, times the first text.

A view says what may be shown of the committed text and whether more cannot change the answer:
PlanView here (the editor's pipeline: post-processed text that never shrinks, stop once settled,
core/postprocess.is_settled: e.g. a line completion whose line has ended), StopView in
http/server.py (the HTTP APIs' stop strings and llama.cpp's deadline).
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Protocol, Tuple

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
