"""Incremental detokenization never shows half a UTF-8 character; `stable` never shrinks."""
from engine.testing.checkpoints import tiny_tokenizer
from engine.loading.tokenizer import REPLACEMENT, StableText, TextTokenizer


def test_prefixes_never_end_in_half_a_character():
    tok = TextTokenizer(tiny_tokenizer())
    text = "x = '🎉 café ✓'\n"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    raw_partial = [tok.decode(ids[:k]) for k in range(len(ids) + 1)]
    assert any(s.endswith(REPLACEMENT) for s in raw_partial), "the emoji should span several byte tokens"
    shown = [tok.safe_decode(ids[:k]) for k in range(len(ids) + 1)]
    for s in shown:
        assert REPLACEMENT not in s and text.startswith(s)
    assert shown[-1] == text


def test_stable_text_grows_monotonically():
    tok = TextTokenizer(tiny_tokenizer())
    ids = tok.encode("print('✓ ok')")
    stable = StableText(tok)
    seen = [stable.update(ids[:k]) for k in range(len(ids) + 1)]
    for a, b in zip(seen, seen[1:]):
        assert b.startswith(a)
    assert seen[-1] == "print('✓ ok')"


def test_special_ids_are_dropped_from_text():
    tk = tiny_tokenizer()
    eos = tk.token_to_id("<|eos|>")
    tok = TextTokenizer(tk, special_ids={eos})
    assert tok.decode(tok.encode("a") + [eos]) == "a"
