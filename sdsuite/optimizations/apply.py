"""apply: split out of sdsuite.optimizations (see the package docstring)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sdsuite.core.denoiser import denoiser_attr, pipeline_family
from sdsuite.core.errors import UsageError
from sdsuite.optimizations.attention import KVCache, SdsuiteAttnProcessor
from sdsuite.optimizations.quant import _quant_config, quantized_linear_count
from sdsuite.optimizations.sets import DEFAULT_ATTENTION, WEIGHT_MUTATING, OptimizationSet, UnsupportedOptimization
from sdsuite.optimizations.support import supported


def _within(fn: Callable, context: Callable) -> Callable:
    """``fn`` run inside a fresh ``context()`` on every call."""

    def wrapped(*args, **kwargs):
        with context():
            return fn(*args, **kwargs)

    return wrapped


def _attention_modules(pipe) -> list[torch.nn.Module]:
    return [
        m
        for m in (getattr(pipe, "unet", None), getattr(pipe, "vae", None))  # a DiT keeps its own processors
        if m is not None and hasattr(m, "set_attn_processor")
    ]


@dataclass
class AppliedOptimizations:
    """What :func:`apply_optimizations` did to a pipeline: per-option setup time, caches, and how to undo it."""

    options: OptimizationSet
    pipe: Any
    setup_s: dict[str, float] = field(default_factory=dict)
    kv_cache: KVCache | None = None
    quantized_layers: tuple[int, int] | None = None
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    _undone: bool = False

    @property
    def needs_fresh_pipeline(self) -> bool:
        """True when weights or module structure were changed: ``undo`` cannot restore the pipeline."""
        return self.options.mutates_weights

    def undo(self) -> None:
        """Revert every option in reverse order; raises UsageError for weight-mutating sets (load a fresh pipeline)."""
        if self.needs_fresh_pipeline:
            mutated = ", ".join(WEIGHT_MUTATING[f] for f in WEIGHT_MUTATING if getattr(self.options, f))
            raise UsageError(
                f"optimizations {self.options.id!r} cannot be undone in place ({mutated}); "
                f"load a fresh pipeline instead."
            )
        if self._undone:
            return
        for _name, fn in reversed(self._undo):
            fn()
        self._undone = True

    def new_generation(self) -> None:
        """Forget cached cross-attention K/V (not needed for correctness, see KVCache; frees the memory)."""
        if self.kv_cache is not None:
            self.kv_cache.clear()

    def to_record(self) -> dict[str, Any]:
        """JSON-ready summary for the result record."""
        rec: dict[str, Any] = {**self.options.to_dict(), "setup_s": dict(self.setup_s)}
        if self.kv_cache is not None:
            rec["kv_cache_stats"] = self.kv_cache.stats()
        if self.quantized_layers is not None:
            rec["quantized_linear_layers"] = {"quantized": self.quantized_layers[0], "total": self.quantized_layers[1]}
        return rec


def options_record(
    opts: OptimizationSet, *parts: AppliedOptimizations | None, weight_setup_cached: bool | None = None
) -> dict[str, Any]:
    """The record's ``options`` entry for a set applied in parts (weight-mutating at load, reversible per case).

    ``setup_s`` merges every part's per-option setup times; ``weight_setup_cached`` says the
    weight-mutating part was applied when an earlier case loaded the cached pipeline (None: the set has none).
    """
    rec: dict[str, Any] = {**opts.to_dict(), "setup_s": {}, "weight_setup_cached": weight_setup_cached}
    for part in parts:
        if part is None:
            continue
        rec["setup_s"].update(part.setup_s)
        if part.kv_cache is not None:
            rec["kv_cache_stats"] = part.kv_cache.stats()
        if part.quantized_layers is not None:
            rec["quantized_linear_layers"] = {"quantized": part.quantized_layers[0], "total": part.quantized_layers[1]}
    return rec


def apply_optimizations(pipe, opts: OptimizationSet, device: torch.device | str | None = None) -> AppliedOptimizations:
    """Apply ``opts`` to a loaded pipeline in a fixed order; raises UnsupportedOptimization with the skip reason.

    Order: fused QKV -> quantization -> channels_last -> attention processors (+ K/V cache) ->
    VAE slicing/tiling -> torch.compile -> CPU offload. Fusing comes before quantizing so the fused
    projections are quantized too; offload comes last because it wraps the final modules in hooks.
    If a step fails, the reversible steps already applied are undone before the error propagates;
    when ``opts.mutates_weights`` the pipeline must then be dropped from the cache.
    """
    attr = denoiser_attr(pipe)
    net = getattr(pipe, attr)
    device = torch.device(device) if device is not None else net.device
    dtype = net.dtype
    reason = supported(opts, device, dtype, family=pipeline_family(pipe))
    if reason:
        raise UnsupportedOptimization(reason)
    applied = AppliedOptimizations(opts, pipe)

    def step(name: str, fn: Callable[[], Callable[[], None] | None]) -> None:
        t0 = time.perf_counter()
        try:
            undo = fn()
        except BaseException:
            # Leave no half-applied reversible option behind; a weight-mutating set already needs a fresh pipeline.
            for _name, undo_fn in reversed(applied._undo):
                undo_fn()
            raise
        applied.setup_s[name] = time.perf_counter() - t0
        if undo is not None:
            applied._undo.append((name, undo))

    if opts.drop_t5 and getattr(pipe, "text_encoder_3", None) is not None:
        # The cache builds such pipelines without T5 (sdsuite.pipelines.build.load_pipeline); this frees a loaded one.
        step("drop_t5", lambda: pipe.register_modules(text_encoder_3=None, tokenizer_3=None))
    if opts.fused_qkv:
        step("fused_qkv", lambda: pipe.fuse_qkv_projections())
    if opts.quantization:

        def quantize() -> None:
            from torchao.quantization import quantize_

            quantize_(net, _quant_config(opts.quantization))
            applied.quantized_layers = quantized_linear_count(net)
            if applied.quantized_layers[0] == 0:
                raise UnsupportedOptimization(
                    f"quantization {opts.quantization}: torchao left every nn.Linear of the {attr} unquantized "
                    f"on {device}"
                )

        step("quantization", quantize)
    if opts.channels_last:

        def to_channels_last():
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
            return lambda: (
                pipe.unet.to(memory_format=torch.contiguous_format),
                pipe.vae.to(memory_format=torch.contiguous_format),
            )

        step("channels_last", to_channels_last)
    # The diffusers default (SDPA, possibly fused) stays untouched: the default set measures stock diffusers.
    if attr == "transformer" and opts.attention == "eager":

        def math_attention():
            # diffusers' joint-attention processors call F.scaled_dot_product_attention: its plain-math kernel is the
            # eager attention of a DiT (sdsuite's processors only fit the UNet's attention modules).
            from torch.nn.attention import SDPBackend, sdpa_kernel

            net.forward = _within(net.forward, lambda: sdpa_kernel(SDPBackend.MATH))
            return lambda: vars(net).pop("forward", None)

        step("attention_eager_math_sdpa", math_attention)
    if opts.attention != DEFAULT_ATTENTION or opts.kv_cache:

        def set_processors():
            applied.kv_cache = KVCache() if opts.kv_cache else None
            saved = [(m, m.attn_processors) for m in _attention_modules(pipe)]
            for m in _attention_modules(pipe):
                # A fresh processor per model: only the UNet has cross-attention, the VAE never hits the cache.
                m.set_attn_processor(SdsuiteAttnProcessor(opts.attention, applied.kv_cache))
            return lambda: [m.set_attn_processor(procs) for m, procs in saved]

        step(f"attention_{opts.attention}" + ("_kv_cache" if opts.kv_cache else ""), set_processors)
    if opts.vae_slicing:

        def vae_slicing():
            pipe.vae.enable_slicing()
            return pipe.vae.disable_slicing

        step("vae_slicing", vae_slicing)
    if opts.vae_tiling:

        def vae_tiling():
            pipe.vae.enable_tiling()
            return pipe.vae.disable_tiling

        step("vae_tiling", vae_tiling)
    if opts.compile_mode:

        def compile_unet():
            original = getattr(pipe, attr)
            setattr(pipe, attr, torch.compile(original, mode=opts.compile_mode, fullgraph=False))

            def restore() -> None:
                setattr(pipe, attr, original)

            return restore

        # Compiling is lazy: the real compile time lands in the first call (the runner's first_call_s).
        step("compile_unet" if attr == "unet" else "compile_transformer", compile_unet)
    if opts.offload == "model":
        step("model_cpu_offload", lambda: pipe.enable_model_cpu_offload(device=device))
    elif opts.offload == "sequential":
        step("sequential_cpu_offload", lambda: pipe.enable_sequential_cpu_offload(device=device))
    return applied


# -- K/V cache accounting ----------------------------------------------------------------------
