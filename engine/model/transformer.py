"""One decoder stack for every family: RMSNorm, rotate-half RoPE, GQA attention (model/attention.py), SwiGLU.

Parameter names follow the Qwen2 layout (`embed_tokens`, `layers.N.self_attn.q_proj`, ...);
loading/weights.py maps each family's checkpoint names onto them.

forward(ids, positions, past, mask) is the only entry the decoder uses:
  ids [1, T], positions [T] (absolute, for RoPE), past: per-layer (k, v) [1, Hkv, S, D] of
  positions already processed (RoPE applied), or a kvcache.KVBuffer (the new keys and values
  are then written into it after its `length` positions; the caller advances it), mask: bool [T, S + T] (True = may attend) or
  None for "attend to everything". Returns raw logits [1, T, V] (hidden state i -> logits i)
  and the new per-layer (k, v) for the T inputs, which the caller may append to a cache.
logits(ids) is the engine API's convenience (docs/ARCHITECTURE.md): the whole sequence with the family's
attention kind and the logit shift applied, so logits[:, i] predicts token i.
"""
from __future__ import annotations

from types import ModuleType
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from engine.model.attention import attend, visibility_for_pass
from engine.loading.config import ModelConfig
from engine.model.packed import fused_outputs
from engine.model.kvcache import LayerKV
import engine.kernels.reference as reference
from engine.model.linear import Linear, project

KV = Tuple[torch.Tensor, torch.Tensor]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, d
        self.q_proj = Linear(h, cfg.num_heads * d, bias=cfg.qkv_bias)
        self.k_proj = Linear(h, cfg.num_kv_heads * d, bias=cfg.qkv_bias)
        self.v_proj = Linear(h, cfg.num_kv_heads * d, bias=cfg.qkv_bias)
        self.o_proj = Linear(cfg.num_heads * d, h, bias=cfg.mlp_bias)
        self.qkv = None           # q|k|v packed as one matrix (half_linear.pack_fp16), or None

    def forward(self, x, cos, sin, past: Optional[KV], mask, kernels) -> Tuple[torch.Tensor, KV]:
        b, t, _ = x.shape
        # slices of one fused product are copied out: the same layouts as separate products, and a
        # cached v does not hold the whole fused output
        q, k, v = (t.contiguous() for t in fused_outputs(self.qkv, x, (self.q_proj, self.k_proj, self.v_proj)))
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)                  # [B,Hq,T,D]
        k = k.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)               # [B,Hk,T,D]
        v = v.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = kernels.apply_rope(q, k, cos, sin)
        new_kv = (k, v)
        if isinstance(past, LayerKV):                                                    # written in place
            k, v = past.extend(k, v)                                                     # [B,Hk,S+T,D] views
        elif past is not None and past[0].shape[2]:
            k = torch.cat([past[0], k], dim=2)                                           # [B,Hk,S+T,D]
            v = torch.cat([past[1], v], dim=2)
        out = attend(q, k, v, mask)                                                      # [B,Hq,T,D]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), new_kv


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = Linear(h, i, bias=cfg.mlp_bias)
        self.up_proj = Linear(h, i, bias=cfg.mlp_bias)
        self.down_proj = Linear(i, h, bias=cfg.mlp_bias)
        self.gate_up = None       # gate|up packed as one matrix (half_linear.pack_fp16), or None

    def forward(self, x, kernels):
        gate, up = fused_outputs(self.gate_up, x, (self.gate_proj, self.up_proj))
        return self.down_proj(kernels.swiglu(gate, up))


class Layer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)


class DecoderModel(nn.Module):
    def __init__(self, cfg: ModelConfig, kernels: ModuleType = reference, init_weights: bool = True):
        """init_weights=False leaves the embedding uninitialised (for a model built on the meta
        device and then filled from a checkpoint: a meta normal_() costs ~2 s of torch imports)."""
        super().__init__()
        self.cfg = cfg
        self.kernels = kernels
        blank = None if init_weights else torch.empty(cfg.vocab_size, cfg.hidden_size)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, _weight=blank)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_embeddings else Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        d = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device="cpu") / d))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device        # not the embedding's: it may be held as codes (CodesEmbedding)

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.weight.dtype

    def rope(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """positions [T] -> cos/sin [T, D]; per-row positions [B, T] (training) -> [B, 1, T, D]."""
        freqs = positions.float()[..., None] * self.inv_freq                              # [.., T, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)                                           # [.., T, D]
        if emb.dim() == 3:
            emb = emb[:, None]                                                            # [B, 1, T, D]
        return emb.cos(), emb.sin()

    def hidden(self, ids: torch.Tensor, positions: torch.Tensor, past: Optional[Sequence[KV]] = None,
               mask: Optional[torch.Tensor] = None, stop=None) -> Tuple[torch.Tensor, List[KV]]:
        """Final hidden states [1, T, H] (after the last norm) and new per-layer (k, v).

        `stop` (an object with is_set(), e.g. a threading.Event) is read before every layer after
        the first: when it is set the pass raises PassStopped, having written its keys/values only
        past the positions the caller counts as valid (a KVBuffer's length is not advanced), so
        the caller drops the pass and nothing it keeps changes (a prefill chunk stops within a
        layer's time, not a whole pass's)."""
        kern = self.kernels
        cos, sin = self.rope(positions)
        x = self.embed_tokens(ids)                                                        # [1, T, H]
        mask = visibility_for_pass(mask, ids.shape[1], x.dtype, x.device)
        residual = None
        new_kvs: List[KV] = []
        for i, layer in enumerate(self.layers):
            if stop is not None and i and stop.is_set():
                raise PassStopped()
            h, residual = kern.rms_norm(x, layer.input_layernorm.weight, layer.input_layernorm.eps, residual)
            h, kv = layer.self_attn(h, cos, sin, past[i] if past else None, mask, kern)
            new_kvs.append(kv)
            h2, residual = kern.rms_norm(h, layer.post_attention_layernorm.weight,
                                         layer.post_attention_layernorm.eps, residual)
            x = layer.mlp(h2, kern)
        out, _ = kern.rms_norm(x, self.norm.weight, self.norm.eps, residual)
        return out, new_kvs

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is None:                                                          # tied embeddings
            return project(hidden, self.embed_tokens.weight)                              # [.., V]
        return self.lm_head(hidden)                                                       # [.., V]

    def forward(self, ids, positions, past=None, mask=None, logits_from: int = 0):
        """Raw logits for inputs logits_from.. only ([1, T - logits_from, V]): the vocabulary
        projection is the largest matrix, so rows nobody reads are not projected."""
        hidden, new_kvs = self.hidden(ids, positions, past, mask)
        return self.head(hidden[:, logits_from:]), new_kvs

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """[1, T] -> [1, T, V], logits[:, i] predicts token i (family shift applied)."""
        t = ids.shape[1]
        positions = torch.arange(t, device=ids.device)
        mask = None
        if self.cfg.attention == "block_causal":
            mask = block_causal_visibility(torch.arange(t, device=ids.device) // self.cfg.block_size)
        elif self.cfg.attention == "causal":
            mask = causal_visibility(t, 0, ids.device)
        raw, _ = self.forward(ids, positions, None, mask)
        return shift_logits(raw) if self.cfg.logit_shift else raw


def shift_logits(raw: torch.Tensor) -> torch.Tensor:
    """Dream convention: logits for token i come from hidden state i-1; position 0 keeps its own."""
    return torch.cat([raw[:, :1], raw[:, :-1]], dim=1)


def block_causal_visibility(query_blocks: torch.Tensor, key_blocks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """bool [Tq, Tk]: query i may attend key j iff block(j) <= block(i)."""
    key_blocks = query_blocks if key_blocks is None else key_blocks
    return key_blocks[None, :] <= query_blocks[:, None]


class PassStopped(Exception):
    """A forward pass stopped between two layers because its `stop` flag was set."""


def causal_visibility(t: int, past: int, device=None) -> Optional[torch.Tensor]:
    """bool [t, past + t]: new token i (at absolute position past + i) sees keys 0..past + i.
    None when t == 1 (one query sees everything before it)."""
    if t == 1:
        return None
    own = torch.ones(t, t, dtype=torch.bool, device=device).tril()
    return torch.cat([torch.ones(t, past, dtype=torch.bool, device=device), own], dim=1)
