"""The denoising network of a diffusers pipeline, whatever its generation: ``unet`` or ``transformer``."""

from __future__ import annotations

from typing import Any

DENOISER_ATTRS = ("unet", "transformer")


def denoiser_attr(pipe: Any) -> str:
    """``unet`` (SD 1.x/2.x/XL) or ``transformer`` (SD 3/3.5, FLUX.1): the pipeline attribute holding the denoiser."""
    for name in DENOISER_ATTRS:
        if getattr(pipe, name, None) is not None:
            return name
    raise AttributeError(f"{type(pipe).__name__} has neither a unet nor a transformer")


def denoiser(pipe: Any) -> Any:
    """The pipeline's denoising network (its UNet or its diffusion transformer)."""
    return getattr(pipe, denoiser_attr(pipe))


def pipeline_family(pipe: Any) -> str:
    """``sd``, ``sdxl``, ``sd3`` or ``flux`` from the pipeline's class (text-to-image, img2img or inpainting)."""
    name = type(pipe).__name__
    for prefix, family in (("StableDiffusion3", "sd3"), ("Flux", "flux"), ("StableDiffusionXL", "sdxl")):
        if name.startswith(prefix):
            return family
    return "sd"
