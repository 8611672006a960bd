import random

import pytest

import engine.train.fim as fim
from train_samples import SAMPLE_FILES

TEXT = SAMPLE_FILES["a.py"]


@pytest.mark.parametrize("seed", range(40))
def test_every_cut_reassembles_the_file(seed):
    cut = fim.sample_cut(TEXT, random.Random(seed))
    assert cut is not None and cut.kind in fim.KINDS
    assert cut.prefix + cut.middle + cut.suffix == TEXT


def _helpers(text):
    starts = fim.line_starts(text)
    return starts, fim._content_lines(text, starts)


def test_rest_of_line_stops_at_the_newline():
    starts, lines = _helpers(TEXT)
    for seed in range(30):
        cut = fim.cut_rest_of_line(TEXT, random.Random(seed), starts, lines)
        if cut is None:
            continue
        assert "\n" not in cut.middle and cut.middle
        assert cut.suffix == "" or cut.suffix.startswith("\n")
        assert cut.prefix[-1:] not in ("", "\n")                 # the cursor is inside the line


def test_block_is_the_indented_body_of_a_colon_line():
    starts, lines = _helpers(TEXT)
    for seed in range(30):
        cut = fim.cut_block(TEXT, random.Random(seed), starts, lines)
        head = cut.prefix.rstrip(" ").rstrip("\n").split("\n")[-1]
        assert head.rstrip().endswith(":")
        head_indent = len(head) - len(head.lstrip())
        body_lines = [ln for ln in (cut.prefix.split("\n")[-1] + cut.middle).split("\n") if ln.strip()]
        assert body_lines and all(len(ln) - len(ln.lstrip()) > head_indent for ln in body_lines)
        after = [ln for ln in cut.suffix.split("\n")[1:] if ln.strip()]
        if after:                                                  # the next code line leaves the block
            assert len(after[0]) - len(after[0].lstrip()) <= head_indent


def test_empty_and_continuation():
    starts, lines = _helpers(TEXT)
    empty = fim.cut_empty(TEXT, random.Random(0), starts, lines)
    assert empty.middle == "" and empty.kind == "empty"
    cont = fim.cut_continuation(TEXT, random.Random(0), starts, lines)
    assert cont.suffix == "" and cont.middle


def test_all_kinds_occur():
    kinds = {fim.sample_cut(TEXT, random.Random(s)).kind for s in range(300)}
    assert kinds == set(fim.KINDS)


def test_no_usable_line():
    assert fim.sample_cut("\n\n   \n", random.Random(0)) is None
