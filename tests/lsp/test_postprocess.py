"""Post-processing rules on handwritten engine outputs."""
from dllm_lsp.core.postprocess import (Shape, balance, clean, drop_repeats, finish, is_settled, keep_scope, repeat_start,
                                       stream_view, strip_trailing)

LINE = Shape(mode="line", line_prefix="x = ")


def test_line_mode_keeps_the_first_line_and_strips():
    assert finish("compute(1, 2)   \nprint(x)\n", LINE) == "compute(1, 2)"
    assert finish("\nprint(x)", LINE) == ""                       # nothing on this line -> no item
    assert finish("   \t ", LINE) == ""


def test_control_characters_and_replacement_chars_are_dropped():
    assert clean("a\x06b\ufffdc\r\nd") == "abc\nd"
    assert finish("val\x03ue", LINE) == "value"


def test_block_mode_cuts_at_the_end_of_the_indented_scope():
    shape = Shape(mode="block", line_prefix="    ", scope_indent=0, next_lines=("print(f(1))",))
    out = finish("y = x * 2\n    return y\n\ndef g():\n    pass\n", shape)
    assert out == "y = x * 2\n    return y"
    nested = Shape(mode="block", line_prefix="        ", scope_indent=4)
    assert finish("a = 1\n        b = 2\n    def other(self):\n", nested) == "a = 1\n        b = 2"


def test_block_from_the_end_of_the_opener_line_keeps_the_leading_newline():
    shape = Shape(mode="block", line_prefix="def f(x):", scope_indent=0)
    assert finish("\n    return x + 1\nprint(1)", shape) == "\n    return x + 1"
    assert finish("\nprint(1)", shape) == ""


def test_brace_scope_ends_at_the_closing_brace_when_the_suffix_closes_it():
    shape = Shape(mode="block", line_prefix="  ", braces=True, next_lines=("}",))
    assert finish("let y = 1;\n  return y;\n}\nfunction g() {}", shape) == "let y = 1;\n  return y;"
    open_end = Shape(mode="block", line_prefix="  ", braces=True, next_lines=())
    assert finish("return 1;\n}\nfoo();", open_end) == "return 1;\n}"


def test_text_repeating_the_rest_of_the_line_is_dropped():
    shape = Shape(mode="line", line_prefix="print(", line_suffix=")")
    assert finish("x, y)", shape) == "x, y"
    shape = Shape(mode="line", line_prefix="f(a", line_suffix="):")
    assert finish(", b):", shape) == ", b"
    assert drop_repeats("a) + 1", Shape(mode="line", line_prefix="g(", line_suffix=") + 1")) == "a"


def test_text_repeating_the_next_lines_is_dropped():
    shape = Shape(mode="block", line_prefix="    ", scope_indent=0, next_lines=("    return total",))
    assert finish("total = a + b\n    return total\n", shape) == "total = a + b"
    line = Shape(mode="line", line_prefix="    ", next_lines=("    return total",))
    assert finish("return total", line) == ""


def test_a_block_that_skips_lines_and_rejoins_the_code_below_is_cut_where_it_rejoins():
    # HumanEval/143: the block wrote its line, skipped the next two, then wrote the rest again
    below = ("        if len(word) == 1:", "            flg = 1", "        for i in range(2, len(word)):",
             "            if len(word)%i == 0:", "                flg = 1")
    shape = Shape(mode="block", line_prefix="        ", scope_indent=4, next_lines=below)
    out = "flg = 0\n        for i in range(2, len(word)):\n            if len(word)%i == 0:\n                flg = 1"
    assert finish(out, shape) == "flg = 0"
    assert is_settled(out[: out.index("if len") + 30] + "\n", shape)
    for k in range(len(out) + 1):                            # the stream holds the first repeated line back
        assert "flg = 0".startswith(stream_view(out[:k], shape)), (k, stream_view(out[:k], shape))


def test_one_line_equal_to_a_later_line_is_not_a_repeat():
    below = ("    if x:", "        return False", "    return True")
    shape = Shape(mode="block", line_prefix="    ", scope_indent=0, next_lines=below)
    out = "if y:\n        return False\n    z = 1"
    assert finish(out, shape) == out
    assert repeat_start(out.split("\n"), [b.strip() for b in below]) is None


def test_closers_of_brackets_left_open_above_the_line_are_kept():
    # toolz/_signatures.py: `eq=[` on the line above, the hole `lambda a, b: None],`
    above = Shape(mode="line", line_prefix="        ", open_before="([")
    assert finish("lambda a, b: None],", above) == "lambda a, b: None],"
    assert finish("lambda a, b: None]],", above) == "lambda a, b: None]"               # one more has no opener
    assert finish("lambda a, b: None],", Shape(mode="line", line_prefix="        ")) == "lambda a, b: None"


def test_brackets_inside_string_literals_are_not_balanced():
    # HumanEval/1: `elif c == ')':` was cut to `elif c == '`
    shape = Shape(mode="line", line_prefix="        ")
    assert finish("elif c == ')':", shape) == "elif c == ')':"
    assert finish('s = "[(" + x)', Shape(mode="line", line_prefix="    ")) == 's = "[(" + x'
    inside = Shape(mode="line", line_prefix="    s = '(")                 # the cursor in a string
    assert finish("a)' + f(b))", inside) == "a)' + f(b)"


def test_the_shape_knows_the_brackets_the_lines_above_leave_open():
    from dllm_lsp.core.plan import shape_at
    text = 'sigs = dict(\n    # not a bracket: (\n    eq=[\n        "(",\n        '
    assert shape_at(text, len(text), "line", "python").open_before == "(["
    closed = "x = f(1,\n      2)\n"
    assert shape_at(closed, len(closed), "line", "python").open_before == ""


def test_brackets_are_balanced_against_the_suffix():
    assert balance("foo())", Shape(line_prefix="x = ")) == "foo()"               # stray closer cut
    assert finish("a[0]]", Shape(line_prefix="y = ")) == "a[0]"
    kept = Shape(mode="line", line_prefix="foo(bar(", line_suffix=")")
    assert finish("x))", kept) == "x)"                                          # one for bar(, suffix closes foo(
    claimed = Shape(mode="line", line_prefix="foo(bar(", line_suffix="))")
    assert finish("x))", claimed) == "x"


def test_keep_scope_and_strip_trailing_directly():
    assert keep_scope("a\nb", Shape(mode="line")) == "a"
    assert strip_trailing("a  \nb\t\n\n") == "a\nb"


def test_stream_view_is_a_prefix_of_the_final_text():
    shape = Shape(mode="line", line_prefix="print(", line_suffix=")")
    final = finish("total, end='')", shape)
    for k in range(len("total, end='')") + 1):
        view = stream_view("total, end='')"[:k], shape)
        assert final.startswith(view), (k, view, final)
    block = Shape(mode="block", line_prefix="    ", scope_indent=0)
    assert stream_view("a = 1\n    b = 2\n    ret", block) == "a = 1\n    b = 2"


def test_stream_view_never_shows_what_finish_removes_on_random_text():
    import random
    rng = random.Random(0)
    pieces = list("abc xy()[]{}:,=\n'\"#") + ["return ", "    ", "\n    ", "\n", "\n    abc\n    xy()"]
    shapes = [Shape(mode="line", line_prefix="print(", line_suffix=")"), Shape(mode="line", line_prefix="x = "),
              Shape(mode="block", line_prefix="    ", scope_indent=0, next_lines=("print(1)",)),
              Shape(mode="block", line_prefix="  ", braces=True, next_lines=("}",)),
              Shape(mode="block", line_prefix="    ", scope_indent=0, next_lines=("x = 1", "abc", "xy()", "return x")),
              Shape(mode="line", line_prefix="f(a, ", line_suffix="):", next_lines=("    pass",)),
              Shape(mode="line", line_prefix="    ", line_suffix="]", open_before="([")]
    for _ in range(500):
        shape = rng.choice(shapes)
        out = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        final = finish(out, shape)
        for k in range(len(out) + 1):
            assert final.startswith(stream_view(out[:k], shape)), (shape, out[:k], final)
