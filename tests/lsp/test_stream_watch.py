"""runtime/stream.py: the bookkeeping every decode loop shares (pure, with stand-in views)."""
from dllm_lsp.runtime.stream import StopView, Watch


class Upper:
    """A view that shows the text upper-cased and says stop once it holds a '.'."""
    def visible(self, stable):
        return stable.upper(), "." in stable

    def draft(self, draft):
        return draft.upper()


def test_watch_reports_each_update_through_the_view_and_says_when_to_stop():
    seen = []
    watch = Watch(Upper(), lambda s, d, n: seen.append((s, d, n)))
    assert watch.update("", "", 1) is False and watch.first_text_ms is None      # nothing to show yet
    assert watch.update("ab", "abc", 2) is False and watch.first_text_ms is not None
    assert watch.update("abc.", "abc.", 3) is True
    assert seen == [("", "", 1), ("AB", "ABC", 2), ("ABC.", "ABC.", 3)]


def test_watch_without_streamed_text_takes_the_final_text_as_the_first():
    watch = Watch(Upper())
    watch.update("", "", 1)
    watch.finished("")
    assert watch.first_text_ms is None
    watch.finished("x")
    assert watch.first_text_ms is not None


def test_stop_view_cuts_at_a_stop_string_and_holds_back_a_possible_one():
    view = StopView(["\n\n"])
    assert view.visible("a = 1\n") == ("a = 1", False)        # the "\n" may become "\n\n": held back
    assert view.visible("a = 1\n\nb") == ("a = 1", True)
    assert not view.timed_out


def test_stop_view_deadline_only_once_a_line_is_complete():
    view = StopView([], deadline_ms=0.0)
    assert view.visible("x = ") == ("x = ", False)             # the first update starts the clock
    assert view.visible("x = 1") == ("x = 1", False)           # past the deadline, but no line yet
    text, stop = view.visible("x = 1\ny")
    assert stop and view.timed_out and text == "x = 1\ny"
