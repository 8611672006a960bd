"""LSP positions in utf-16 / utf-8 / utf-32 units, with emoji and surrogate pairs."""
import pytest

from dllm_lsp.lsp.positions import edit_end, length_in_units, normalize_encoding, offset_at, position_at

TEXT = 'a = "🎉x"\nb = "é"\r\nlast'


def test_utf16_counts_an_astral_character_as_two_units():
    # line 0: a, space, =, space, ", 🎉(2 units), x, "
    assert offset_at(TEXT, 0, 5, "utf-16") == 5                  # before the emoji
    assert offset_at(TEXT, 0, 7, "utf-16") == 6                  # after the emoji: code point 6
    assert TEXT[offset_at(TEXT, 0, 7, "utf-16")] == "x"
    assert offset_at(TEXT, 0, 9, "utf-16") == 8                  # end of the line
    with pytest.raises(ValueError):
        offset_at(TEXT, 0, 10, "utf-16")


def test_utf32_and_utf8_units():
    assert TEXT[offset_at(TEXT, 0, 6, "utf-32")] == "x"
    assert TEXT[offset_at(TEXT, 0, 9, "utf-8")] == "x"            # the emoji is 4 utf-8 bytes
    with pytest.raises(ValueError):
        offset_at(TEXT, 0, 9, "utf-32")                           # line is only 8 code points


def test_inside_a_surrogate_pair_snaps_to_the_character_start():
    assert offset_at(TEXT, 0, 6, "utf-16") == 5


def test_crlf_lines_and_past_the_end():
    assert TEXT[offset_at(TEXT, 1, 5, "utf-16")] == "é"
    assert offset_at(TEXT, 1, 7, "utf-16") == TEXT.index("\r\n")   # end of line 1, before CRLF
    assert offset_at(TEXT, 2, 4) == len(TEXT)
    with pytest.raises(ValueError):
        offset_at(TEXT, 3, 0)
    with pytest.raises(ValueError):
        offset_at(TEXT, 1, 8)
    with pytest.raises(ValueError):
        offset_at(TEXT, -1, 0)


@pytest.mark.parametrize("enc", ["utf-8", "utf-16", "utf-32"])
def test_position_at_inverts_offset_at(enc):
    for off in range(len(TEXT) + 1):
        if TEXT[off - 1:off + 1] == "\r\n":
            continue
        line, ch = position_at(TEXT, off, enc)
        assert offset_at(TEXT, line, ch, enc) == off


def test_units_and_encoding_names():
    assert length_in_units("🎉é", "utf-16") == 3 and length_in_units("🎉é", "utf-8") == 6
    assert normalize_encoding(None) == "utf-16" and normalize_encoding("utf-8") == "utf-8"


def test_edit_end_finds_the_cursor_of_a_whole_document_change():
    old = "def f(x):\n    return \n\nprint(f(1))\n"
    at = old.index("return ") + len("return ")
    typed = old[:at] + "x" + old[at:]
    assert edit_end(old, typed) == at + 1                         # one key typed
    assert edit_end(typed, old) == at                             # backspace
    pasted = old[:at] + "x * 2" + old[at:]
    assert edit_end(old, pasted) == at + 5
    assert edit_end(old, old) == len(old)                         # nothing changed: the end
    assert edit_end("aaa", "aaaa") == 4                           # ambiguous: the rightmost place
    assert edit_end("", "abc") == 3 and edit_end("abc", "") == 0
    enter = old[:at] + "\n    " + old[at:]
    assert edit_end(old, enter) == at + 5                         # Enter and the indentation
