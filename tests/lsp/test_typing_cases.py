"""bench/typing_cases.py and bench typing's summaries: the cases a typist types, where the cursor goes, the summaries."""
from dllm_lsp.bench.typing_report import Pause, headline, summarize
from dllm_lsp.bench.typing_cases import apply_key, cursor_after, typing_case, typing_cases

LINES = ["def total(items):", "    result = 0", "    for item in items:", "        result += item.price",
         "    return result"]


def type_all(case):
    text = case.start
    for _, keys, _ in case.phases:
        for key in keys:
            text = apply_key(text, key)
    return text


def test_a_case_types_the_end_of_the_line_before_enter_and_half_the_target():
    case = typing_case("f.py", LINES, 3)
    assert case.name == "f.py:4"
    assert case.start == "\n".join(LINES[:2] + ["    for item in "] + LINES[4:])    # 6 characters cut, target gone
    (enter, enter_keys, enter_ref), (mid, mid_keys, mid_ref) = case.phases
    assert (enter, mid) == ("enter", "mid")
    assert "".join(k.text for k in enter_keys) == "items:\n        "               # the end, then Enter + indentation
    assert enter_ref == "result += item.price"
    assert "".join(k.text for k in mid_keys) == "result += "                     # half the line
    assert mid_ref == "item.price"
    typed = type_all(case)
    assert typed == "\n".join(LINES[:3] + ["        result += "] + LINES[4:])    # exactly the file up to the cursor
    assert cursor_after(enter_keys[-1]) == (3, 8) and cursor_after(mid_keys[-1]) == (3, 18)


def test_lines_that_cannot_be_typed_this_way_give_no_case():
    assert typing_case("f.py", ["x = 1", "# a comment here", "y"], 1) is None
    assert typing_case("f.py", ["ab", "result = compute()"], 1) is None      # too little to type before


def test_cases_are_a_seeded_sample(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("\n".join(f"value_{i} = compute_{i}(argument)" for i in range(60)))
    first, again = typing_cases([path], 5, seed=1), typing_cases([path], 5, seed=1)
    assert [c.name for c in first] == [c.name for c in again] and len(first) == 5
    assert all(int(c.name.split(":")[1]) > 20 for c in first)
    assert [c.name for c in typing_cases([path], 5, seed=2)] != [c.name for c in first]


def test_summaries_and_ratios():
    def pause(phase, ms, shown=True, exact=False, floor=None, reason="ok"):
        return Pause(phase, shown, exact, ms, ms / 2, ms * 0.75, 10.0, 40, 3, 5, 12.0, floor, "x", reason)
    ours = summarize([pause("enter", 100, exact=True, floor=50), pause("enter", 300, floor=50),
                      pause("mid", 200, shown=False), pause("accept", 5, reason="cached")])
    assert ours["enter"]["pauses"] == 2 and ours["enter"]["shown"] == 1.0 and ours["enter"]["exact"] == 0.5
    assert ours["enter"]["p50_ms"] == 200.0 and ours["enter"]["floor_p50_ms"] == 50.0
    assert ours["enter"]["first_text_p50_ms"] == 100.0 and ours["enter"]["first_line_p50_ms"] == 150.0
    assert ours["mid"]["shown"] == 0.0
    assert ours["accept"]["exact"] is None and ours["accept"]["ready"] == 1.0
    anchor = summarize([pause("enter", 800), pause("mid", 400)])
    ratios = headline({"ours": ours, "anchor": anchor}, "ours", "anchor")
    assert ratios["enter_anchor_ratio"] == 0.25 and ratios["mid_anchor_ratio"] == 0.5
    assert ratios["enter_floor_ratio"] == 4.0
