"""Lazily loaded pipelines, cached across cases and tests (the one piece of global mutable state)."""

from __future__ import annotations

import gc
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from sdsuite.pipelines.build import load_pipeline, validate_weights
from sdsuite.pipelines.registry import get_precision, get_scheduler, get_variant


@dataclass(frozen=True)
class PipelineKey:
    """What changes the loaded object. The scheduler does not: it is swapped per case; neither do
    reversible optimizations (applied per case and undone). Weight-mutating ones (quantization, fused
    QKV, offload: ``OptimizationSet.weight_key``) get their own entry."""

    variant: str
    weights: str
    precision: str
    device: str
    weight_key: str = ""


@dataclass
class LoadedPipeline:
    """A pipeline plus what we learned loading it."""

    key: PipelineKey
    pipe: Any
    load_s: float
    base_scheduler_config: dict
    base_scheduler_class: type
    uses: int = 0
    param_counts: dict[str, int] = field(default_factory=dict)
    applied: Any = None  # sdsuite.optimizations.apply.AppliedOptimizations of the weight-mutating options, if any

    def set_scheduler(self, name: str) -> None:
        """Install the named scheduler via ``from_config`` (``default``: the checkpoint's own)."""
        import diffusers

        spec = get_scheduler(name)
        if spec is None:
            self.pipe.scheduler = self.base_scheduler_class.from_config(self.base_scheduler_config)
            return
        from diffusers.utils import logging as dlogging

        cls = getattr(diffusers, spec.class_name)
        # A flow-matching config carries keys another solver class does not take (FLUX's dynamic-shift settings for
        # DPM-Solver): diffusers warns on every swap that it ignores them, which is intended (docs/dit.md).
        level = dlogging.get_verbosity()
        dlogging.set_verbosity_error()
        try:
            self.pipe.scheduler = cls.from_config(self.base_scheduler_config, **spec.overrides)
        finally:
            dlogging.set_verbosity(level)


def _param_counts(pipe) -> dict[str, int]:
    out = {}
    for name, comp in pipe.components.items():
        if isinstance(comp, torch.nn.Module):
            out[name] = sum(p.numel() for p in comp.parameters())
    return out


class PipelineCache:
    """LRU cache of loaded pipelines; ``release`` frees device memory explicitly."""

    def __init__(self, max_entries: int = 2):
        self.max_entries = max_entries
        self._entries: OrderedDict[PipelineKey, LoadedPipeline] = OrderedDict()

    def get(
        self, variant: str, weights: str, precision: str, device: torch.device | str, options: Any = None
    ) -> LoadedPipeline:
        """The cached pipeline for this key, loading it (and evicting the least recent) when needed.

        ``options`` (an OptimizationSet): its weight-mutating part is applied right after loading and
        the entry is keyed on it; the reversible part is the caller's to apply and undo per case.
        """
        weight_part = options.weight_part() if options is not None and options.mutates_weights else None
        key = PipelineKey(
            variant, weights, precision, str(device), weight_part.weight_key if weight_part is not None else ""
        )
        if key in self._entries:
            self._entries.move_to_end(key)
            entry = self._entries[key]
            entry.uses += 1
            return entry
        spec = get_variant(variant)
        validate_weights(weights)
        dtype = getattr(torch, get_precision(precision))
        while len(self._entries) >= self.max_entries:
            self.release(next(iter(self._entries)))
        t0 = time.perf_counter()
        with_t5 = not (weight_part is not None and weight_part.drop_t5)
        pipe = load_pipeline(spec, weights, dtype, device=str(device), with_t5=with_t5)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        load_s = time.perf_counter() - t0
        param_counts = _param_counts(pipe)
        applied = None
        if weight_part is not None:
            from sdsuite.optimizations.apply import apply_optimizations

            # Raises (skip reason or error) before the entry exists: a half-mutated pipeline is never cached.
            applied = apply_optimizations(pipe, weight_part, device)
        entry = LoadedPipeline(
            key=key,
            pipe=pipe,
            load_s=load_s,
            base_scheduler_config=dict(pipe.scheduler.config),
            base_scheduler_class=type(pipe.scheduler),
            uses=1,
            param_counts=param_counts,
            applied=applied,
        )
        self._entries[key] = entry
        return entry

    def release(self, key: PipelineKey | None = None) -> None:
        """Drop one entry (or all) and give its device memory back."""
        keys = [key] if key is not None else list(self._entries)
        for k in keys:
            self._entries.pop(k, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: PipelineKey) -> bool:
        return key in self._entries


PIPELINES = PipelineCache()
