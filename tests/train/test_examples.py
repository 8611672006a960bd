"""The training layout must be exactly what the block-causal decoder computes."""
import random

import pytest
import torch

from engine import Engine, InfillRequest
from engine.train.embedded.examples import (Example, attention_mask, copies_for, fit_middle_lines, make_batch,
                                   make_example, pack_rows, row_layout)
from engine.train.embedded.tokenizer_train import SPECIAL_IDS

EOS, PAD, MASK = SPECIAL_IDS["eos"], SPECIAL_IDS["pad"], SPECIAL_IDS["mask"]


def test_make_example_ends_with_eos_then_pad_to_whole_blocks():
    ex = make_example(prefix=[10, 11], suffix=[20], middle=[30, 31, 32], ends=True, block_size=4)
    assert ex.context == (SPECIAL_IDS["fim_suffix"], 20, SPECIAL_IDS["fim_prefix"], 10, 11, SPECIAL_IDS["fim_middle"])
    assert ex.middle == (30, 31, 32, EOS)
    ex = make_example([10], [], [30, 31, 32, 33], ends=True, block_size=4)
    assert ex.middle == (30, 31, 32, 33, EOS, PAD, PAD, PAD)
    empty = make_example([10], [20], [], ends=True, block_size=4)
    assert empty.middle == (EOS, PAD, PAD, PAD)
    cut = make_example([10], [], list(range(40, 51)), ends=False, block_size=4)   # continuation: whole blocks, no eos
    assert cut.middle == tuple(range(40, 48))
    assert copies_for(4) == 8 and copies_for(64) == 3 and copies_for(128) == 1
    assert ex.length == len(ex.context) + (1 + ex.copies) * len(ex.middle)


def _expected_mask(n_c: int, n_m: int, B: int, copies: int) -> torch.Tensor:
    """The rules of the module docstring, written out slot by slot."""
    slots = [("ctx", i, 0) for i in range(n_c)]
    slots += [("mid", i // B, c) for c in range(copies + 1) for i in range(n_m)]
    n = len(slots)
    out = torch.zeros(n, n, dtype=torch.bool)
    for q, (qk, qi, qc) in enumerate(slots):
        for k, (kk, ki, kc) in enumerate(slots):
            if qk == "ctx":
                ok = kk == "ctx" and k <= q
            elif kk == "ctx":
                ok = True
            elif qc == 0:
                ok = kc == 0 and ki <= qi
            else:
                ok = (kc == 0 and ki < qi) or (kc == qc and ki == qi)
            out[q, k] = ok
    return out


def test_attention_mask_follows_the_rules_and_separates_packed_examples():
    a = Example(context=(4, 9, 3, 5), middle=(30, 31, 0, 1), copies=2)       # B = 2: two blocks
    b = Example(context=(4, 3, 8, 5), middle=(40, 0), copies=1)
    ids, pos, doc, blk, copy, _ = row_layout([a, b], block_size=2, capacity=a.length + b.length + 3)
    mask = attention_mask(torch.tensor(doc), torch.tensor(blk), torch.tensor(copy))
    la, lb = a.length, b.length
    assert torch.equal(mask[:la, :la], _expected_mask(4, 4, 2, 2))
    assert torch.equal(mask[la:la + lb, la:la + lb], _expected_mask(4, 2, 2, 1))
    assert not mask[:la, la:].any() and not mask[la:, :la].any()             # documents never mix
    assert not mask[:la + lb, la + lb:].any()                                # padding is invisible
    assert mask[la + lb:, la + lb:].all()                                    # ... and sees only itself
    # positions: context 0..3, every middle copy 4..7
    assert pos[:la] == [0, 1, 2, 3] + [4, 5, 6, 7] * 3
    assert ids[:la] == list(a.context) + list(a.middle) * 3


def test_make_batch_masks_each_noisy_block_and_keeps_targets():
    exs = [make_example([50 + i for i in range(6)], [60, 61], list(range(70, 70 + n)), True, 4, max_copies=2)
           for n in (3, 9, 0)]
    rows, left = pack_rows(exs, n_rows=2, capacity=80)
    assert not left
    gen = torch.Generator().manual_seed(0)
    batch = make_batch(rows, 4, 80, MASK, gen)
    assert batch.ids.shape == (len(rows), 80) and batch.mask.shape == (len(rows), 1, 80, 80)
    assert batch.positions.shape == (len(rows), 80)
    # every masked slot is a noisy slot whose clean token is the target; clean copies untouched
    for r, row in enumerate(rows):
        ids, _, doc, blk, copy, _ = row_layout(row, 4, 80)
        sel = batch.loss_rows == r
        cols = batch.loss_cols[sel]
        assert all(copy[c] > 0 for c in cols.tolist())
        assert batch.targets[sel].tolist() == [ids[c] for c in cols.tolist()]
        assert (batch.ids[r, cols] == MASK).all()
        untouched = [c for c in range(80) if c not in set(cols.tolist())]
        assert batch.ids[r, untouched].tolist() == [ids[c] for c in untouched]
        groups = {(doc[c], copy[c], blk[c]) for c in range(80) if copy[c] > 0}
        hit = {(doc[c], copy[c], blk[c]) for c in cols.tolist()}
        assert hit == groups                                                # at least one per block
    assert ((batch.rates > 0) & (batch.rates <= 1)).all()


def test_fit_middle_lines_keeps_whole_lines():
    enc = lambda s: list(s.encode())                                        # 1 token per byte
    text, ids = fit_middle_lines("ab\ncd\nef", enc, 6)
    assert text == "ab\ncd\n" and ids == enc(text)
    assert fit_middle_lines("abcdefgh", enc, 4) is None


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from engine.testing.checkpoints import block_config, write_block_model
    folder = tmp_path_factory.mktemp("m") / "model"
    write_block_model(folder, cfg=block_config(vocab_size=320, hidden=64, layers=2, block_size=4), seed=3)
    return Engine.load(folder)


@pytest.mark.parametrize("policy,tps", [("quota", 1), ("quota", 2)])
def test_training_logits_equal_the_decoders_logits_at_every_step(engine, policy, tps, monkeypatch):
    """Spy on every forward pass of a real decode (exact KV cache, partially committed blocks) and
    recompute each step's block logits with the training layout: they must agree."""
    B = engine.cfg.block_size
    steps = []
    original = engine.model.forward

    def spy(ids, positions, past=None, mask=None, logits_from=0):
        raw, kvs = original(ids, positions, past, mask, logits_from)
        steps.append((ids[0, -B:].tolist(), raw[0, -B:].detach().clone(), int(positions[-B])))
        return raw, kvs

    monkeypatch.setattr(engine.model, "forward", spy)
    prefix, suffix = "def add(a, b):\n    return", "\n\nclass Point:\n    pass\n"
    req = InfillRequest(prefix=prefix, suffix=suffix, max_new_tokens=3 * B, policy=policy, tokens_per_step=tps,
                        stop_at_eos=False)
    result = engine.infill(req)
    monkeypatch.undo()
    assert result.forwards == len(steps) == 3 * B // tps
    tok, cfg = engine.tokenizer, engine.cfg
    ex = make_example(tok.encode(prefix), tok.encode(suffix), list(result.token_ids), False, B, max_copies=1)
    assert len(ex.middle) == 3 * B and ex.copies == 1
    n_c, n_m = len(ex.context), len(ex.middle)
    for block_ids, dec_logits, start in steps:
        b = (start - n_c) // B
        ids, pos, doc, blk, copy, _ = row_layout([ex], B, ex.length)
        ids = torch.tensor(ids)
        noisy = n_c + n_m + b * B
        ids[noisy:noisy + B] = torch.tensor(block_ids)             # the block as the decoder saw it
        ids[n_c + n_m:noisy] = MASK                                 # other noisy blocks: irrelevant
        mask = attention_mask(torch.tensor(doc), torch.tensor(blk), torch.tensor(copy))
        with torch.no_grad():
            hidden, _ = engine.model.hidden(ids[None], torch.tensor(pos)[None], None, mask[None, None])
            train_logits = engine.model.head(hidden[0, noisy:noisy + B])
        assert torch.allclose(train_logits, dec_logits, atol=1e-4), f"block {b}"


def test_batched_rows_equal_single_rows(engine):
    """Batch > 1 with per-row positions [R, C] and masks [R, 1, C, C] gives each row's own logits."""
    rng = random.Random(0)
    exs = [make_example([rng.randrange(7, 300) for _ in range(n)], [rng.randrange(7, 300)], [rng.randrange(7, 300)] * 5,
                        True, 4, max_copies=2) for n in (5, 11, 8)]
    rows = [[exs[0], exs[1]], [exs[2]]]
    batch = make_batch(rows, 4, 120, MASK, torch.Generator().manual_seed(1))
    with torch.no_grad():
        both, _ = engine.model.hidden(batch.ids, batch.positions, None, batch.mask)
        for r, row in enumerate(rows):
            n = sum(e.length for e in row)
            one, _ = engine.model.hidden(batch.ids[r:r + 1, :n], batch.positions[r:r + 1, :n], None,
                                         batch.mask[r:r + 1, :, :n, :n])
            assert torch.allclose(both[r, :n], one[0], atol=1e-5)
