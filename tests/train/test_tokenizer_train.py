from engine.train.embedded.tokenizer_train import SPECIAL_IDS, SPECIAL_TOKENS


def test_special_tokens_have_fixed_ids(tiny_tok):
    for name, tid in SPECIAL_IDS.items():
        assert tiny_tok.token_to_id(SPECIAL_TOKENS[tid]) == tid
    assert set(SPECIAL_IDS) == {"eos", "pad", "mask", "fim_prefix", "fim_suffix", "fim_middle", "file_sep"}


def test_byte_level_roundtrip_any_text(tiny_tok):
    text = "def f():\n    return 'caf\u00e9 \u2713 \U0001F389'\t# \u65e5\u672c\n"
    ids = tiny_tok.encode(text, add_special_tokens=False).ids
    assert tiny_tok.decode(ids) == text
    assert not set(ids) & set(SPECIAL_IDS.values())        # plain text never becomes a special token


def test_vocab_size_respected(tiny_tok):
    assert 300 < tiny_tok.get_vocab_size() <= 400
