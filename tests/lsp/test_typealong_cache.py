"""The type-along cache answers the rest of a suggestion the user is typing."""
from dllm_lsp.core.typealong import TypeAlongCache


def test_typing_the_start_of_a_suggestion_returns_the_rest():
    c = TypeAlongCache()
    c.store("x = ", "\nprint(x)", "compute(1, 2)")
    hit = c.lookup("x = com", "\nprint(x)")
    assert hit.text == "pute(1, 2)" and hit.typed == 3
    assert c.lookup("x = ", "\nprint(x)").text == "compute(1, 2)"       # exact repeat


def test_a_different_keystroke_or_suffix_misses():
    c = TypeAlongCache()
    c.store("x = ", "\n", "compute()")
    assert c.lookup("x = cz", "\n") is None
    assert c.lookup("x = co", "\nother") is None
    assert c.lookup("x = compute()", "\n") is None                      # fully typed: nothing left


def test_empty_answers_are_remembered_only_for_the_exact_place():
    c = TypeAlongCache()
    c.store("a", "b", "")
    assert c.lookup("a", "b").text == ""
    assert c.lookup("ax", "b") is None


def test_lru_evicts_the_oldest_and_a_lookup_refreshes():
    c = TypeAlongCache(capacity=2)
    c.store("p1", "", "one")
    c.store("p2", "", "two")
    assert c.lookup("p1", "") is not None                                # p1 is now the newest
    c.store("p3", "", "three")
    assert c.lookup("p2", "") is None and c.lookup("p1o", "").text == "ne" and len(c) == 2
    c.clear()
    assert c.lookup("p1", "") is None


def test_keys_use_only_the_text_near_the_cursor():
    c = TypeAlongCache(key_chars=4)
    c.store("AAAAAAAAAAAAx = ", "", "value")
    assert c.lookup("BBBBBBBBBBBBx = va", "").text == "lue"             # far-away text differs: still a hit
