"""Build or load a diffusers pipeline for a variant: embedded tiny model, real architecture with
random weights, or real weights from a local path / the Hugging Face cache (offline only)."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from sdsuite.core.errors import UsageError, WeightsNotFoundError
from sdsuite.pipelines.random_init import fill_random_, skip_weight_init
from sdsuite.pipelines.registry import VariantSpec
from sdsuite.pipelines.tiny_tokenizers import tiny_tokenizer

WEIGHTS_AUTO = "auto"
WEIGHTS_RANDOM = "random"


def weights_kind(weights: str) -> str:
    """Classify a --weights value: ``auto``, ``random`` or ``path``."""
    return weights if weights in (WEIGHTS_AUTO, WEIGHTS_RANDOM) else "path"


def validate_weights(weights: str) -> None:
    """Reject a --weights PATH that does not exist (one clear error)."""
    if weights_kind(weights) == "path" and not Path(weights).is_dir():
        raise UsageError(
            f"--weights {weights!r} is neither 'auto', 'random' nor an existing directory holding a diffusers pipeline "
            f"(model_index.json)."
        )


def _build_components(spec: VariantSpec, seed: int, fast_init: bool, device: str = "cpu") -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    ctx = skip_weight_init() if fast_init else contextlib.nullcontext()
    with ctx:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**spec.unet)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**spec.vae)
        encoders = []
        for i, cfg in enumerate(spec.text_encoders):
            torch.manual_seed(seed + 2 + i)
            cls = CLIPTextModelWithProjection if (spec.is_xl and i == 1) else CLIPTextModel
            encoders.append(cls(CLIPTextConfig(**cfg)))
    if fast_init:
        # Fill where the model will run: on a GPU the random draw of 1B+ parameters takes milliseconds.
        for j, m in enumerate([unet, vae, *encoders]):
            m.to(device)
            fill_random_(m, seed + 10 * j, device=device)
    comps: dict[str, Any] = {"unet": unet, "vae": vae, "text_encoder": encoders[0], "tokenizer": tiny_tokenizer()}
    if spec.is_xl:
        comps["text_encoder_2"] = encoders[1]
        comps["tokenizer_2"] = tiny_tokenizer()
    return comps


def _scheduler_from_spec(spec: VariantSpec):
    import diffusers

    cfg = dict(spec.scheduler)
    cls = getattr(diffusers, cfg.pop("_class_name"))
    return cls(**cfg)


def _assemble(spec: VariantSpec, comps: dict[str, Any]):
    import diffusers

    cls = getattr(diffusers, spec.pipeline_class)
    comps = dict(comps, scheduler=_scheduler_from_spec(spec))
    if spec.family == "sd":
        comps.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return cls(**comps)


def build_in_code(
    spec: VariantSpec, seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32, with_t5: bool = True
):
    """Build the variant's pipeline from its configs: tiny ones with torch's own deterministic init,
    real architectures with the fast random fill (``--weights random``; DiT ones allocated in ``dtype``)."""
    if spec.is_dit:
        from sdsuite.pipelines.dit import build_dit_components

        comps = build_dit_components(spec, seed, not spec.embedded, device=device, dtype=dtype, with_t5=with_t5)
    else:
        comps = _build_components(spec, seed, fast_init=not spec.embedded, device=device)
    pipe = _assemble(spec, comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _hf_cache_hint() -> str:
    return os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")


def load_pretrained(spec: VariantSpec, source: str, torch_dtype: torch.dtype, with_t5: bool = True):
    """Load real weights with diffusers' ``from_pretrained``, never touching the network."""
    import diffusers

    cls = getattr(diffusers, spec.pipeline_class)
    kwargs: dict[str, Any] = {"torch_dtype": torch_dtype, "local_files_only": True}
    if not with_t5:
        kwargs.update(text_encoder_3=None, tokenizer_3=None)
    if spec.family == "sd":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    candidates = [source] if source != WEIGHTS_AUTO else [h for h in (spec.hub_id, *spec.alt_hub_ids) if h]
    errors = []
    for cand in candidates:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                pipe = cls.from_pretrained(cand, **kwargs)
            pipe.set_progress_bar_config(disable=True)
            return pipe
        except (OSError, ValueError) as exc:  # not in cache / not a pipeline dir
            errors.append(f"{cand}: {str(exc).splitlines()[0][:120]}")
    raise WeightsNotFoundError(missing_weights_message([spec], source, details="; ".join(errors)))


def missing_weights_message(specs, source: str, details: str = "") -> str:
    """The one message for absent weights (``sdsuite run`` records it, ``sdsuite sweep`` refuses with it)."""
    names = ", ".join(s.name for s in specs)
    where = f"the Hugging Face cache ({_hf_cache_hint()})" if source == WEIGHTS_AUTO else f"{source!r}"
    hubs = ", ".join(s.hub_id for s in specs if s.hub_id)
    return (
        f"weights for {names} were not found in {where}{f' ({details})' if details else ''}. "
        f"Either put a local copy there and pass --weights PATH (e.g. a diffusers directory of {hubs}), "
        f"or run the real architecture with random weights: --weights random."
    )


def _weights_present(spec: VariantSpec, weights: str) -> bool:
    """Whether load_pretrained would find a pipeline, by its model_index.json, without loading anything."""
    kind = weights_kind(weights)
    if kind == WEIGHTS_RANDOM or (kind == WEIGHTS_AUTO and spec.embedded):
        return True
    if kind == "path":
        return (Path(weights) / "model_index.json").is_file()
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(h, "model_index.json"), str) for h in (spec.hub_id, *spec.alt_hub_ids) if h
    )


def require_weights(variant_names, weights: str) -> None:
    """UsageError (exit 2, before any measurement) naming every variant whose weights are absent, with the remedies."""
    from sdsuite.pipelines.registry import get_variant

    specs = [get_variant(n) for n in dict.fromkeys(variant_names)]
    missing = [spec for spec in specs if not _weights_present(spec, weights)]
    if missing:
        raise UsageError(missing_weights_message(missing, weights))


def load_pipeline(spec: VariantSpec, weights: str, torch_dtype: torch.dtype, device: str = "cpu", with_t5: bool = True):
    """Dispatch on the weights source; returns the pipeline on ``device`` in ``torch_dtype``.

    ``with_t5=False`` (SD 3/3.5) never builds or loads the T5 encoder: the pipeline encodes with CLIP alone.
    """
    if not with_t5 and spec.family != "sd3":
        raise UsageError(f"dropping the T5 encoder applies to the SD 3/3.5 variants, not {spec.name}.")
    kind = weights_kind(weights)
    if kind == "path" or (kind == WEIGHTS_AUTO and not spec.embedded):
        pipe = load_pretrained(spec, weights, torch_dtype, with_t5=with_t5)
    elif spec.embedded:
        pipe = build_in_code(spec, device="cpu", with_t5=with_t5)
    else:
        pipe = build_in_code(spec, device=device, dtype=torch_dtype, with_t5=with_t5)
    from diffusers.utils import logging as dlogging

    # diffusers warns on every .to(dtype) that no module is kept in fp32 (none is, for these models).
    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        return pipe.to(device=device, dtype=torch_dtype)
    finally:
        dlogging.set_verbosity(level)
