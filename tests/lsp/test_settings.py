"""Settings: camelCase in, validated, bad values fall back to defaults with a message."""
from dllm_lsp.settings import Settings, camel_case, parse_settings, snake_case, to_camel_dict


def test_defaults_are_valid_and_parse_of_nothing_is_default():
    s, msgs = parse_settings({})
    assert s == Settings() and msgs == []
    assert parse_settings(None) == (Settings(), [])


def test_camel_case_keys_flat_and_under_the_dllm_section():
    raw = {"model": "/m", "maxNewTokensLine": 12, "blockSize": 8, "policy": "quota", "tokensPerStep": 2,
           "enabledLanguages": {"markdown": False}, "streaming": False, "debounceMs": 30, "logLevel": "debug"}
    flat, msgs = parse_settings(raw)
    nested, msgs2 = parse_settings({"dllm": raw})
    assert msgs == [] and msgs2 == [] and flat == nested
    assert flat.model == "/m" and flat.max_new_tokens_line == 12 and flat.block_size == 8
    assert flat.policy == "quota" and flat.tokens_per_step == 2 and flat.debounce_ms == 30
    assert flat.streaming is False and flat.log_level == "debug"
    assert not flat.language_enabled("markdown") and flat.language_enabled("python")


def test_invalid_values_keep_their_default_and_say_why():
    s, msgs = parse_settings({"threshold": 3, "policy": "greedy", "maxNewTokensBlock": "lots",
                              "streaming": "yes", "device": "tpu", "prefixTokens": 10.5, "model": ""})
    d = Settings()
    assert (s.threshold, s.policy, s.max_new_tokens_block, s.streaming, s.device, s.prefix_tokens, s.model) == \
           (d.threshold, d.policy, d.max_new_tokens_block, d.streaming, d.device, d.prefix_tokens, d.model)
    assert len(msgs) == 7
    assert any("dllm.threshold" in m and "[0, 1]" in m for m in msgs)
    assert any("dllm.policy" in m and "threshold, quota, entropy" in m for m in msgs)


def test_a_bad_value_does_not_spoil_the_good_ones_and_unknown_keys_are_reported():
    s, msgs = parse_settings({"threshold": -1, "maxNewTokensLine": 7, "colour": "blue"})
    assert s.max_new_tokens_line == 7 and s.threshold == Settings().threshold
    assert len(msgs) == 2 and any("unknown setting 'dllm.colour'" in m for m in msgs)


def test_booleans_are_not_numbers_and_per_language_default_star():
    s, msgs = parse_settings({"debounceMs": True, "enabledLanguages": {"*": False, "python": True}})
    assert s.debounce_ms == 0 and len(msgs) == 1
    assert s.language_enabled("python") and not s.language_enabled("go")
    _, msgs = parse_settings({"enabledLanguages": {"python": "yes"}})
    assert len(msgs) == 1


def test_max_new_tokens_follows_the_mode_and_names_round_trip():
    s = Settings(max_new_tokens_line=5, max_new_tokens_block=50)
    assert s.max_new_tokens("line") == 5 and s.max_new_tokens("block") == 50
    assert camel_case("max_new_tokens_line") == "maxNewTokensLine" and snake_case("maxNewTokensLine") == "max_new_tokens_line"
    back, msgs = parse_settings(to_camel_dict(Settings(model="x", threshold=0.5)))
    assert msgs == [] and back == Settings(model="x", threshold=0.5)


def test_non_dict_settings_are_rejected_with_a_message():
    s, msgs = parse_settings(["model"])
    assert s == Settings() and len(msgs) == 1


def test_draft_tree_reaches_the_engine_requests():
    from dllm_lsp.core.plan import _request
    from dllm_lsp.http.fim_engine import fim_request
    from dllm_lsp.lsp.server import infill_options
    from dllm_lsp.http.wire import parse_request
    on, problems = parse_settings({"dllm": {"draftTree": True}})
    assert not problems and on.draft_tree and not Settings().draft_tree
    assert _request("a", "b", "line", on).draft_tree and not _request("a", "b", "line", Settings()).draft_tree
    q = parse_request("openai", {"prompt": "def f(", "suffix": ")", "max_tokens": 4})
    assert fim_request(on, q, len)[0].draft_tree and not fim_request(Settings(), q, len)[0].draft_tree
    assert infill_options({"draftTree": True}, Settings())["draft_tree"] is True
    assert infill_options({}, on)["draft_tree"] is True
    try:
        infill_options({"draftTree": "yes"}, Settings())
    except ValueError as exc:
        assert "draftTree" in str(exc) or "bool" in str(exc).lower()
    else:
        raise AssertionError("a non-boolean draftTree was accepted")


def test_one_mapping_from_settings_to_the_engine_request():
    """Every setting that has a twin of the same name in InfillRequest reaches it through
    Settings.infill_request (a new decoding setting cannot be forgotten at a call site)."""
    from dataclasses import fields as dc_fields
    from engine.api import InfillRequest
    s = Settings(policy="quota", threshold=0.5, entropy_bound=0.25, tokens_per_step=3, block_size=16,
                 drafting=False, max_draft_tokens=3, draft_tree=True, suffix_reuse=True)
    req = s.infill_request("pre", "suf", max_new_tokens=5)
    twins = {f.name for f in dc_fields(InfillRequest)} & {f.name for f in dc_fields(Settings)}
    assert twins == {"policy", "threshold", "entropy_bound", "tokens_per_step", "block_size", "drafting",
                     "max_draft_tokens", "draft_tree", "suffix_reuse"}
    assert all(getattr(req, name) == getattr(s, name) for name in twins)
    assert (req.prefix, req.suffix, req.max_new_tokens) == ("pre", "suf", 5)
    assert s.infill_request("p", max_new_tokens=1, drafting=True).drafting is True      # a call site may override
