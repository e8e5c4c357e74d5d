"""quant: split out of sdsuite.optimizations (see the package docstring)."""

from __future__ import annotations

import torch


def _quant_config(name: str):
    from torchao import quantization as q

    if name == "int8wo":
        return q.Int8WeightOnlyConfig()
    if name == "int8dq":
        return q.Int8DynamicActivationInt8WeightConfig()
    if name == "int4wo":
        return q.Int4WeightOnlyConfig(group_size=128)
    if name == "fp8wo":
        return q.Float8WeightOnlyConfig()
    return q.Float8DynamicActivationFloat8WeightConfig()


def quantized_linear_count(module: torch.nn.Module) -> tuple[int, int]:
    """(quantized, total) nn.Linear layers: a layer counts as quantized when torchao swapped its weight tensor type."""
    total = quantized = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            total += 1
            if type(m.weight) not in (torch.Tensor, torch.nn.Parameter):
                quantized += 1
    return quantized, total
