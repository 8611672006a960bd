"""The pure completion core: plans (mode, span length, windows, snippets) and finishing."""

from dllm_lsp.core.plan import finish_completion, plan_completion, stream_completion
from dllm_lsp.settings import Settings

SRC = "import os\n\n\ndef area(w, h):\n    \n\n\nprint(area(2, 3))\n"


def test_block_after_an_opener_sets_the_block_length_and_windows():
    s = Settings(max_new_tokens_line=7, max_new_tokens_block=33)
    off = SRC.index("    \n") + 4
    plan = plan_completion(SRC, off, "python", s)
    assert plan.mode == "block" and plan.request.max_new_tokens == 33
    assert not plan.request.ends_at_newline          # a block's drafts may run over lines
    assert plan.prefix == SRC[:off] and plan.suffix == SRC[off:]
    assert plan.request.prefix == plan.prefix and plan.request.policy == s.policy
    assert plan.request.min_new_tokens == 0          # by default the model may suggest nothing
    forced = plan_completion(SRC, off, "python", Settings(blank_line_min_tokens=1))
    assert forced.request.min_new_tokens == 1        # a blank line then asks for a line, not nothing
    assert finish_completion(plan, "return w * h\n\nprint(area(1, 1))") == "return w * h"


def test_mid_line_is_a_line_completion_with_the_line_length():
    text = "x = max(\n"
    plan = plan_completion(text, len("x = max("), "python", Settings(max_new_tokens_line=9))
    assert plan.mode == "line" and plan.request.max_new_tokens == 9
    assert plan.request.ends_at_newline              # drafts stop at the line's end
    forced = plan_completion(text, len("x = max("), "python", Settings(blank_line_min_tokens=3))
    assert forced.request.min_new_tokens == 0        # mid-line, ending at once is always a fine answer
    assert finish_completion(plan, "a, b)\nmore") == "a, b)"


def test_no_plan_inside_a_word_or_for_a_disabled_language():
    assert plan_completion("print(x)", 3, "python", Settings()) is None
    off = SRC.index("    \n") + 4
    assert plan_completion(SRC, off, "python", Settings(enabled_languages={"*": True, "python": False})) is None
    assert plan_completion(SRC, off, "go", Settings(enabled_languages={"*": False})) is None


def test_token_budgets_are_respected_with_a_real_tokenizer():
    from engine.testing.checkpoints import tiny_tokenizer
    from engine.loading.tokenizer import TextTokenizer
    tok = TextTokenizer(tiny_tokenizer())
    body = "".join(f"value_{i} = compute({i}, {i + 1})\n" for i in range(200))
    text = body + "result = \n" + body
    off = len(body) + len("result = ")
    plan = plan_completion(text, off, "python", Settings(prefix_tokens=120, suffix_tokens=40), tok)
    n_prefix, n_suffix = len(tok.encode(plan.prefix)), len(tok.encode(plan.suffix))
    assert n_prefix + n_suffix <= 160 and n_prefix > n_suffix
    assert plan.prefix.endswith("result = ") and plan.prefix.startswith("value_")   # whole lines
    assert text[off - len(plan.prefix): off] == plan.prefix


def test_snippets_from_other_documents_go_in_front_of_the_prefix():
    others = [("shapes.py", "def area(w, h):\n    return w * h\n")]
    text = "from shapes import area\nsize = area("
    plan = plan_completion(text, len(text), "python", Settings(), snippets=others)
    assert plan.snippet_header.startswith("# Compare this snippet from shapes.py:")
    assert plan.prefix == plan.snippet_header + text
    none = plan_completion(text, len(text), "python", Settings(snippet_tokens=0), snippets=others)
    assert none.snippet_header == "" and none.prefix == text


def test_streamed_text_is_a_prefix_of_the_final_text():
    text = "print(\n"
    plan = plan_completion(text, len("print("), "python", Settings())
    out = "'total:', total)"
    final = finish_completion(plan, out)
    assert final == "'total:', total)"
    for k in range(len(out) + 1):
        assert final.startswith(stream_completion(plan, out[:k]))


def test_drafting_sources_are_the_previous_suggestion_then_other_documents():
    from dllm_lsp.core.plan import plan_completion
    from dllm_lsp.settings import Settings
    text = "def f(x):\n    return "
    plan = plan_completion(text, len(text), "python", Settings(), snippets=[("b.py", "x = 1\n")],
                           draft_hints=("x + 1",))
    assert plan.request.drafting and plan.request.draft_sources == ("x + 1", "x = 1\n")
    off = plan_completion(text, len(text), "python", Settings(drafting=False), snippets=[("b.py", "x = 1\n")],
                          draft_hints=("x + 1",))
    assert not off.request.drafting and off.request.draft_sources == ()
