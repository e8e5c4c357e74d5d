"""FLOPs of one generation with torch's FlopCounterMode: deterministic, device independent."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_flash_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch counts the CUDA attention kernels but not the CPU fused one, so SDPA on the CPU would count 0.
_CUSTOM = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _CUSTOM[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_sdpa_flop


def count_flops(fn: Callable[[], object]) -> int:
    """Run ``fn`` once under FlopCounterMode and return the total FLOPs counted."""
    with FlopCounterMode(display=False, custom_mapping=_CUSTOM) as counter:
        fn()
    return int(counter.get_total_flops())


def cross_attention_kv_flops(unet: torch.nn.Module, batch: int, text_tokens: int) -> int:
    """FLOPs of all cross-attention K and V projections for one UNet evaluation (2*M*N*K per matmul).

    ``batch`` counts the UNet batch (x2 with classifier-free guidance). With the K/V cache these are
    paid once per generation instead of once per step: the saving is ``(steps - 1) *`` this value.
    """
    from diffusers.models.attention_processor import Attention

    total = 0
    for m in unet.modules():
        if isinstance(m, Attention) and m.is_cross_attention:
            if getattr(m, "fused_projections", False) and hasattr(m, "to_kv"):
                total += 2 * batch * text_tokens * m.to_kv.in_features * m.to_kv.out_features
            else:
                for lin in (m.to_k, m.to_v):
                    total += 2 * batch * text_tokens * lin.in_features * lin.out_features
    return total
