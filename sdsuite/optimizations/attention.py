"""attention: split out of sdsuite.optimizations (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sdsuite.core.errors import unknown_choice
from sdsuite.optimizations.sets import ATTENTION_KERNELS, DEFAULT_ATTENTION


def _version_of(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors keep no version counter
        return None


@dataclass
class _KVEntry:
    source: torch.Tensor  # held so its id cannot be reused by another tensor while cached
    version: int | None
    key: torch.Tensor
    value: torch.Tensor


class KVCache:
    """Text-conditioned K and V of every cross-attention module, valid while the conditioning is unchanged.

    An entry is reused only when ``encoder_hidden_states`` is the very same tensor object, unmodified
    in place (same version counter), as when it was computed. A pipeline call encodes the prompt into a
    new tensor, so every generation starts with a miss: the cache can never serve K/V of an older
    prompt. ``hits``/``misses`` count per-module lookups, so a pipeline that passes a fresh tensor every
    step shows up as a zero hit rate instead of a silent non-saving.
    """

    def __init__(self) -> None:
        self._entries: dict[int, _KVEntry] = {}
        self.hits = 0
        self.misses = 0

    def get(
        self, attn: torch.nn.Module, source: torch.Tensor, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached (key, value) of ``attn`` for ``source``, computing them with ``compute`` on a miss."""
        entry = self._entries.get(id(attn))
        if entry is not None and entry.source is source and entry.version == _version_of(source):
            self.hits += 1
            return entry.key, entry.value
        self.misses += 1
        key, value = compute()
        self._entries[id(attn)] = _KVEntry(source, _version_of(source), key, value)
        return key, value

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        self._entries.clear()

    def stats(self) -> dict[str, Any]:
        """Lookup counters and hit rate, JSON-ready."""
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": (self.hits / total) if total else None,
            "entries": len(self._entries),
        }

    def __len__(self) -> int:
        return len(self._entries)


# -- attention kernels -------------------------------------------------------------------------


def _eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, attn
) -> torch.Tensor:
    # softmax(Q K^T * scale) V written out, as diffusers' AttnProcessor does (upcasts honoured).
    dtype = q.dtype
    if attn.upcast_attention:
        q, k = q.float(), k.float()
    scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scale
    if mask is not None:
        scores = scores + mask
    if attn.upcast_softmax:
        scores = scores.float()
    probs = scores.softmax(dim=-1).to(dtype)
    return torch.matmul(probs, v)


def _sliced_attention(q, k, v, mask, attn, slice_size: int | None) -> torch.Tensor:
    # Same algorithm as diffusers' SlicedAttnProcessor: batch*heads in slices, plain math per slice.
    b, h, s, d = q.shape
    qf, kf, vf = (t.reshape(b * h, t.shape[2], d) for t in (q, k, v))
    mf = mask.reshape(b * h, *mask.shape[2:]) if mask is not None else None
    size = slice_size or max(attn.sliceable_head_dim // 2, 1)
    out = torch.empty((b * h, s, d), device=q.device, dtype=q.dtype)
    for start in range(0, b * h, size):
        sl = slice(start, start + size)
        out[sl] = _eager_attention(qf[sl], kf[sl], vf[sl], mf[sl] if mf is not None else None, attn)
    return out.view(b, h, s, d)


def _xformers_attention(q, k, v, mask, attn) -> torch.Tensor:
    import xformers.ops

    # xformers wants (batch, seq, heads, dim)
    out = xformers.ops.memory_efficient_attention(
        q.transpose(1, 2).contiguous(),
        k.transpose(1, 2).contiguous(),
        v.transpose(1, 2).contiguous(),
        attn_bias=mask,
        scale=attn.scale,
    )
    return out.transpose(1, 2)


class SdsuiteAttnProcessor:
    """Attention processor with a selectable kernel and an optional cross-attention K/V cache.

    Follows diffusers' ``AttnProcessor2_0`` step by step (spatial/group norm, norm_cross, residual,
    output rescale) and understands fused projections (``to_qkv`` / ``to_kv``), so it can replace the
    default, fused or sliced processors of a UNet or VAE without changing the math.
    """

    def __init__(self, kernel: str = DEFAULT_ATTENTION, kv_cache: KVCache | None = None, slice_size: int | None = None):
        if kernel not in ATTENTION_KERNELS:
            raise unknown_choice("attention", kernel, ATTENTION_KERNELS)
        self.kernel = kernel
        self.kv_cache = kv_cache
        self.slice_size = slice_size

    @staticmethod
    def _project_kv(attn, encoder_hidden_states: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        if getattr(attn, "fused_projections", False):
            key, value = attn.to_kv(encoder_hidden_states).chunk(2, dim=-1)
        else:
            key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        return key, value

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        if encoder_hidden_states is None:  # self-attention: nothing to cache, K/V change every step
            if getattr(attn, "fused_projections", False):
                query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
            else:
                query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
            head_dim = key.shape[-1] // attn.heads
            key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
        else:
            query = attn.to_q(hidden_states)
            ehs = encoder_hidden_states
            if self.kv_cache is not None:
                key, value = self.kv_cache.get(attn, ehs, lambda: self._project_kv(attn, ehs, batch_size))
            else:
                key, value = self._project_kv(attn, ehs, batch_size)
            head_dim = key.shape[-1]
        query = query.view(batch_size, -1, attn.heads, query.shape[-1] // attn.heads).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)

        if self.kernel == "sdpa":
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
            )
        elif self.kernel == "eager":
            hidden_states = _eager_attention(query, key, value, attention_mask, attn)
        elif self.kernel == "sliced":
            hidden_states = _sliced_attention(query, key, value, attention_mask, attn, self.slice_size)
        else:
            hidden_states = _xformers_attention(query, key, value, attention_mask, attn)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


# -- applying ----------------------------------------------------------------------------------
