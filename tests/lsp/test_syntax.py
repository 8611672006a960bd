"""Single-line vs block vs nothing, decided with tree-sitter (Python) and the lexical fallback."""
import pytest

from dllm_lsp.core.syntax import decide_mode, has_grammar, in_comment_or_string


def at_cursor(src):
    off = src.index("|")
    return src.replace("|", "", 1), off


@pytest.mark.parametrize("src, mode", [
    ("def f(x):\n    |", "block"),                       # empty line after a block opener
    ("def f(x):|", "block"),                             # end of the opener line
    ("class A:\n    def f(self):  # note\n\n        |", "block"),
    ("for i in range(3):\n|", "block"),
    ("if (a and\n      b):\n    |", "block"),
    ("x = foo(|)\n", "line"),                            # mid-line: rest of the line
    ("x = |\n", "line"),                                 # end of a line
    ("def f():\n    return 1\n|", "line"),                # blank line, no opener
    ("x = {'a':\n    |", "line"),                        # a colon inside a dict is not an opener
    ("f = lambda x:|", "line"),
    ("    # a comment about |", "line"),                 # inside a comment
    ("s = 'abc|", "line"),                               # inside an unterminated string
    ('def f():\n    """Docstring:\n    |\n    """\n', "line"),   # inside a docstring, after a ':'
    ("pri|nt(x)", None),                                 # inside a word
])
def test_python_modes(src, mode):
    text, off = at_cursor(src)
    assert decide_mode(text, off, "python") == mode


def test_tree_sitter_python_is_available_and_sees_strings_and_comments():
    assert has_grammar("python")
    text, off = at_cursor('x = """multi\nline |text"""\n')
    assert in_comment_or_string(text, off, "python")
    text, off = at_cursor('x = "done"|\n')
    assert not in_comment_or_string(text, off, "python")


def test_brace_languages_blocks_comments_and_strings():
    text, off = at_cursor("function f(a) {\n  |\n}\n")
    assert decide_mode(text, off, "javascript") == "block"
    text, off = at_cursor("const s = `abc|")
    assert decide_mode(text, off, "javascript") == "line"
    text, off = at_cursor("int x = 1; // see |")
    assert decide_mode(text, off, "c") == "line"
    text, off = at_cursor("foo(|);")
    assert decide_mode(text, off, "rust") == "line"


def test_grammar_wheels_are_used_when_installed():
    pytest.importorskip("tree_sitter_javascript")
    assert has_grammar("javascript")
    text, off = at_cursor("const s = `multi\nline | and`;\n")      # a template string spanning lines
    assert in_comment_or_string(text, off, "javascript") and decide_mode(text, off, "javascript") == "line"
    text, off = at_cursor("/* block\n comm| */\nlet x = 1;\n")     # a block comment on its second line
    assert in_comment_or_string(text, off, "javascript")
    text, off = at_cursor("function f() {\n  |\n}\n")
    assert decide_mode(text, off, "javascript") == "block"


def test_a_local_parse_decides_like_a_whole_document_parse(monkeypatch):
    import random
    import textwrap
    import dllm_lsp.core.syntax as syntax
    text = open(textwrap.__file__, encoding="utf-8").read() * 3          # ~60 kB of real Python
    rng = random.Random(0)
    offsets = rng.sample(range(len(text)), 150)
    local = [syntax.decide_mode(text, off, "python") for off in offsets]
    lo, hi = syntax.local_region(text, offsets[0])
    assert 0 < hi - lo < len(text)                                        # it really parses less
    monkeypatch.setattr(syntax, "local_region", lambda t, o: (0, len(t)))
    whole = [syntax.decide_mode(text, off, "python") for off in offsets]
    assert local == whole


def test_one_extension_table_for_every_caller():
    from dllm_lsp.core.syntax import language_for_path
    from dllm_lsp.http.fim_engine import comment_for
    assert language_for_path("file:///w/App.jsx") == "javascriptreact" == language_for_path("App.JSX")
    assert language_for_path("stubs/os.pyi") == "python"
    assert language_for_path("file:///w/v1.2/Makefile") == "plaintext"          # a dot in a folder is no extension
    assert language_for_path("notes.md") == "md"
    assert comment_for("App.jsx") == "//" and comment_for("x.pyi") == "#" and comment_for("README") == "#"
