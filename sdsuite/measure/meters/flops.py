"""FLOPs of one generation with torch's FlopCounterMode: deterministic, device independent."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
    return count_flops_by_module(fn, {})[0]


def count_flops_by_module(
    fn: Callable[[], object], modules: Mapping[str, torch.nn.Module]
) -> tuple[int, dict[str, int]]:
    """Run ``fn`` once under FlopCounterMode: the total FLOPs and, per named module, the FLOPs of its forward calls.

    A module's share is the counter's growth between its forward pre-hook and its forward hook, summed over every
    call (the T5 encoder runs twice per generation with classifier-free guidance, the denoiser once per step).
    """
    shares = dict.fromkeys(modules, 0)
    handles = []
    with FlopCounterMode(display=False, custom_mapping=_CUSTOM) as counter:
        for name, module in modules.items():
            start: list[int] = []

            def pre(_m, _args, start=start):
                start.append(counter.get_total_flops())

            def post(_m, _args, _out, name=name, start=start):
                shares[name] += counter.get_total_flops() - start.pop()

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        try:
            fn()
        finally:
            for h in handles:
                h.remove()
    return int(counter.get_total_flops()), {k: int(v) for k, v in shares.items()}


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
