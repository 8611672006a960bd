"""Context windows within token budgets, cut at line boundaries, prefix favoured; snippets."""
import dllm_lsp.core.context as context
from dllm_lsp.core.context import STICKY_LINES, pick_snippets, token_counter, windows

chars = lambda s: len(s)          # 1 "token" per character makes the budgets easy to read


def doc(n_before=20, n_after=20):
    before = "".join(f"b{i:02d}\n" for i in range(n_before))   # 4 chars per line
    after = "".join(f"a{i:02d}\n" for i in range(n_after))
    return before + "x = f(" + ")\n" + after, len(before) + len("x = f(")


def test_windows_cut_at_line_boundaries_and_keep_the_cursor_line(monkeypatch):
    monkeypatch.setattr(context, "STICKY_LINES", 1)
    text, off = doc()
    prefix, suffix = windows(text, off, 14, 10, chars)
    assert prefix.endswith("x = f(") and suffix.startswith(")\n")
    assert prefix == "b18\nb19\nx = f("           # 6 chars of the line + two whole 4-char lines
    assert suffix == ")\na00\na01\n"
    assert text[off - len(prefix): off + len(suffix)] == prefix + suffix


def test_the_suffix_leaves_its_unused_budget_to_the_prefix(monkeypatch):
    monkeypatch.setattr(context, "STICKY_LINES", 1)
    text, off = doc(n_after=0)                    # nothing after the cursor's line
    prefix, suffix = windows(text, off, 14, 10, chars)
    assert suffix == ")\n"
    assert len(prefix) > 14 and len(prefix) <= 14 + 10 - 2 and prefix.startswith("b")


def test_the_prefix_gives_back_what_it_does_not_need():
    text, off = doc(n_before=1)
    prefix, suffix = windows(text, off, 40, 10, chars)
    assert prefix == text[:off]
    assert len(suffix) > 10 and len(suffix) <= 10 + 40


def test_the_window_start_stays_put_while_typing_on_a_line():
    text, off = doc(n_before=80)
    starts = set()
    for typed in ["", "a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg"]:
        t = text[:off] + typed + text[off:]
        prefix, _ = windows(t, off + len(typed), 160, 10, chars)
        assert 120 <= len(prefix) <= 160
        starts.add(off + len(typed) - len(prefix))
        line_index = t[: off + len(typed) - len(prefix)].count("\n")
        assert line_index % STICKY_LINES == 0
    assert len(starts) == 1          # an exact window would have moved its start twice here


def test_whole_document_when_it_fits_and_a_long_line_is_clipped():
    text, off = doc(3, 3)
    assert windows(text, off, 1000, 1000, chars) == (text[:off], text[off:])
    long_line = "y" * 100
    prefix, suffix = windows(long_line, 100, 20, 5, chars)
    assert 0 < len(prefix) <= 20 and long_line.endswith(prefix) and suffix == ""


def test_token_counter_uses_the_tokenizer_when_given():
    class Tok:
        def encode(self, s):
            return s.split()
    assert token_counter(Tok())("a b c") == 3
    assert token_counter(None)("x" * 7) == 2


def test_snippets_pick_the_most_related_document_as_a_comment_header():
    others = [("util.py", "def parse_header(raw_header):\n    return raw_header.split(':')\n"),
              ("other.py", "import os\nprint(os.getcwd())\n")]
    near = "value = parse_header(raw_header)\n"
    header = pick_snippets(others, near, 200, chars, "#")
    assert header.startswith("# Compare this snippet from util.py:\n")
    assert "# def parse_header(raw_header):" in header and "other.py" not in header
    assert all(line.startswith("#") for line in header.splitlines())
    assert pick_snippets(others, near, 10, chars, "#") == ""          # over budget: nothing
    assert pick_snippets(others, near, 200, chars, None) == ""        # no comment syntax: nothing
