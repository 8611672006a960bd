"""decode_plan with a scripted engine: streaming callbacks, early stop once settled, cancellation."""
import threading

from engine.api import InfillResult, InfillUpdate

from dllm_lsp.core.plan import plan_completion
from dllm_lsp.runtime.host import decode_plan
from dllm_lsp.core.postprocess import Shape, is_settled
from dllm_lsp.settings import Settings


class ScriptedEngine:
    """Commits one character of `out` per forward pass; checks the stop flag like the real engine."""

    def __init__(self, out: str):
        self.out = out

    def stream(self, req, cancel=None):
        n = 0
        while n < len(self.out):
            if cancel is not None and cancel.is_set():
                text = self.out[:n]
                yield InfillUpdate(text, text, n, n, len(self.out),
                                   InfillResult(text, n, n, 1.0, "cancelled"))
                return
            n += 1
            if n < len(self.out):
                yield InfillUpdate(self.out[:n], self.out, n, n, len(self.out))
        yield InfillUpdate(self.out, self.out, n, n, n, InfillResult(self.out, n, n, 1.0, "length"))


def line_plan():
    text = "x = \n"
    return plan_completion(text, 4, "python", Settings())


def test_a_line_completion_stops_once_its_line_has_ended():
    updates = []
    out = "compute(1)\nprint(x)\nmore = 2\n"
    decoded = decode_plan(ScriptedEngine(out), line_plan(), on_update=lambda s, d, f: updates.append((s, f)))
    assert decoded.text == "compute(1)" and decoded.finish_reason == "settled"
    assert decoded.forwards == len("compute(1)\n") < len(out)                      # no forward pass wasted
    shown = [s for s, _ in updates]
    assert all(b.startswith(a) for a, b in zip(shown, shown[1:])) and shown[-1] == "compute(1"   # ")" held back
    assert decoded.first_text_ms is not None


def test_cancel_from_the_caller_gives_no_text():
    cancel = threading.Event()
    seen = []

    def on_update(stable, draft, forwards):
        seen.append(forwards)
        if forwards == 3:
            cancel.set()
    decoded = decode_plan(ScriptedEngine("abcdefghij"), line_plan(), cancel, on_update)
    assert decoded.text == "" and decoded.finish_reason == "cancelled" and decoded.forwards == 3


def test_is_settled():
    line = Shape(mode="line")
    assert not is_settled("abc", line) and is_settled("abc\n", line)
    block = Shape(mode="block", line_prefix="    ", scope_indent=0, next_lines=("print(1)",))
    assert not is_settled("a = 1\n    b = 2\n", block)
    assert not is_settled("a = 1\npri", block)                 # the unfinished line may still be indented
    assert is_settled("a = 1\nprint(2)\n", block)               # a complete line left the scope
    assert is_settled("a = 1\n    print(1)\n", block)           # a complete line repeats the next one
