"""model/attention.py's batched products against torch's SDPA (the oracle), and kvcache.KVBuffer:
written in place, grown without losing a position, shared with the context cache safely."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.model.attention import MAX_PRODUCT_ROWS, additive_bias, attend, visibility_for_pass, uses_products
from engine.model.kvcache import ContextCache, KVBuffer, kv_len
from engine.model.transformer import causal_visibility


def _qkv(t, s, gen):
    q = torch.randn(1, t, 14, 64, generator=gen).transpose(1, 2)       # [1, Hq, T, D], strided like the model's
    return q, torch.randn(1, 2, s + t, 64, generator=gen), torch.randn(1, 2, s + t, 64, generator=gen)


def test_products_equal_sdpa_for_few_rows_with_bool_or_additive_masks():
    gen = torch.Generator().manual_seed(0)
    for t, s in ((1, 0), (1, 50), (3, 50), (8, 300), (MAX_PRODUCT_ROWS, 10)):
        q, k, v = _qkv(t, s, gen)
        mask = causal_visibility(t, s)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        assert uses_products(t, q.dtype, q.device)
        for m in (mask, additive_bias(mask)):
            assert torch.allclose(attend(q, k, v, m), want, rtol=1e-5, atol=1e-5), (t, s)


def test_long_inputs_other_dtypes_and_batched_masks_go_to_sdpa():
    assert not uses_products(MAX_PRODUCT_ROWS + 1, torch.float32, torch.device("cpu"))
    assert not uses_products(4, torch.bfloat16, torch.device("cpu"))
    assert not uses_products(4, torch.float32, torch.device("meta"))
    gen = torch.Generator().manual_seed(1)
    q, k, v = _qkv(4, 6, gen)
    per_row = causal_visibility(4, 6)[None, None].expand(1, 1, 4, 10)                # training's [B, 1, T, S]
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=per_row, enable_gqa=True)
    assert torch.equal(attend(q, k, v, per_row), want)


def test_mask_for_pass_is_additive_only_where_products_read_it():
    mask = causal_visibility(3, 5)
    add = visibility_for_pass(mask, 3, torch.float32, torch.device("cpu"))
    assert add.dtype == torch.float32 and torch.equal(add == 0, mask) and torch.isinf(add[~mask]).all()
    assert visibility_for_pass(mask, 100, torch.float32, torch.device("cpu")) is mask
    assert visibility_for_pass(None, 1, torch.float32, torch.device("cpu")) is None


SHAPE = (2, 2, 4, torch.float32, torch.device("cpu"))          # layers, Hkv, D, dtype, device


def _kv(n, seed):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 2, n, 4, generator=gen), torch.randn(1, 2, n, 4, generator=gen)) for _ in range(2)]


def test_a_buffer_extends_in_place_and_grows_keeping_every_position():
    buf = KVBuffer.holding(_kv(3, 0), 5)
    assert kv_len(buf) == 3 and buf.capacity == 5 and len(buf) == 2
    new = _kv(2, 1)
    keys, values = buf[0].extend(*new[0])
    assert keys.shape == (1, 2, 5, 4) and torch.equal(keys[:, :, 3:], new[0][0]) and torch.equal(values[:, :, :3], _kv(3, 0)[0][1])
    buf.length = 4                                    # kept one of the two rows
    buf.reserve(50)
    assert buf.capacity >= 50 and torch.equal(buf.prefix(4)[0][0][:, :, 3:], new[0][0][:, :, :1])
    try:
        buf[1].extend(torch.zeros(1, 2, buf.capacity, 4), torch.zeros(1, 2, buf.capacity, 4))
        raise AssertionError("wrote past the capacity")
    except ValueError as exc:
        assert "reserve first" in str(exc)


def test_take_shares_the_cached_buffer_and_forgets_what_the_decode_will_overwrite():
    cache = ContextCache()
    buf = KVBuffer.holding(None, 10, shape=SHAPE)
    for layer, (k, v) in zip(buf.layers, _kv(6, 2)):
        layer.extend(k, v)
    buf.length = 6
    cache.store_buffer([1, 2, 3, 4, 5, 6], buf, last_hidden=torch.ones(3))
    n, taken = cache.take([1, 2, 3, 4, 5, 6], 8, SHAPE)
    assert n == 6 and taken is buf and cache.last_state([1, 2, 3, 4, 5, 6]) is not None
    n, taken = cache.take([1, 2, 3, 9], 8, SHAPE)     # diverges at 3: positions 3.. will be rewritten
    assert n == 3 and taken is buf and taken.length == 3
    assert cache.ids == [1, 2, 3] and cache.last_hidden is None and kv_len(cache.kv) == 3
    before = cache.kv[0][0].clone()
    taken[0].extend(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))
    assert torch.equal(cache.kv[0][0], before)        # what the cache still holds is never written
    cache.store(cache.ids, cache.kv)                  # a tuple store: the next take copies
    n, copied = cache.take([1, 2, 3], 4, SHAPE)
    assert n == 3 and copied is not buf and torch.equal(copied.prefix(3)[1][1], cache.kv[1][1])
