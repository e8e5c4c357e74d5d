"""Task axis: text-to-image, image-to-image and inpainting on the same loaded components.

The image-to-image and inpainting pipelines are built with ``from_pipe`` from a loaded text-to-image
pipeline, so they share its modules (no second copy of the weights, and the pipeline cache keeps one
entry per variant). Input images and masks are deterministic functions of (size, seed), so a task
case is reproducible on every machine without any data file.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from sdsuite.core.denoiser import denoiser
from sdsuite.core.errors import UsageError, unknown_choice

if TYPE_CHECKING:
    import torch

TEXT_TO_IMAGE = "text-to-image"
IMAGE_TO_IMAGE = "image-to-image"
INPAINTING = "inpainting"
TASKS: tuple[str, ...] = (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, INPAINTING)
DEFAULT_STRENGTH = 0.75

# (text-to-image pipeline class, task) -> the diffusers pipeline of that task.
_PIPELINE_CLASSES: dict[tuple[str, str], str] = {
    ("StableDiffusionPipeline", IMAGE_TO_IMAGE): "StableDiffusionImg2ImgPipeline",
    ("StableDiffusionPipeline", INPAINTING): "StableDiffusionInpaintPipeline",
    ("StableDiffusionXLPipeline", IMAGE_TO_IMAGE): "StableDiffusionXLImg2ImgPipeline",
    ("StableDiffusionXLPipeline", INPAINTING): "StableDiffusionXLInpaintPipeline",
    ("StableDiffusion3Pipeline", IMAGE_TO_IMAGE): "StableDiffusion3Img2ImgPipeline",
    ("StableDiffusion3Pipeline", INPAINTING): "StableDiffusion3InpaintPipeline",
    ("FluxPipeline", IMAGE_TO_IMAGE): "FluxImg2ImgPipeline",
    ("FluxPipeline", INPAINTING): "FluxInpaintPipeline",
}


def validate_task(task: str) -> str:
    """Return ``task`` when known, else raise UsageError listing the tasks."""
    if task not in TASKS:
        raise unknown_choice("task", task, TASKS)
    return task


def task_pipeline(pipe, task: str):
    """The pipeline for ``task`` sharing ``pipe``'s components (``pipe`` itself for text-to-image)."""
    validate_task(task)
    if task == TEXT_TO_IMAGE:
        return pipe
    import diffusers

    cls = getattr(diffusers, _PIPELINE_CLASSES[(type(pipe).__name__, task)])
    kwargs: dict[str, Any] = {}
    if type(pipe).__name__ == "StableDiffusionPipeline":
        kwargs = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    from diffusers.utils import logging as dlogging

    # from_pipe re-registers the modules and warns that none is kept in fp32 (none is, for these models).
    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        out = cls.from_pipe(pipe, **kwargs)
    finally:
        dlogging.set_verbosity(level)
    out.set_progress_bar_config(disable=True)
    return out


def input_image(height: int, width: int, batch_size: int = 1, seed: int = 0) -> torch.Tensor:
    """Deterministic RGB input (N, 3, H, W) in 0..1: smooth colour gradients plus seeded low-frequency noise.

    Smooth structure (not white noise) so the VAE encodes something image-like at every size.
    """
    if height < 8 or width < 8:
        raise UsageError(f"input image size must be at least 8x8, got {width}x{height}.")
    import torch

    y = torch.linspace(0, 1, height).view(1, 1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, 1, width)
    base = torch.cat(
        [
            x.expand(1, 1, height, width),
            y.expand(1, 1, height, width),
            (0.5 + 0.5 * torch.sin(6.28 * (x + y))).expand(1, 1, height, width),
        ],
        dim=1,
    )
    gen = torch.Generator("cpu").manual_seed(seed)
    coarse = torch.rand((batch_size, 3, max(height // 8, 1), max(width // 8, 1)), generator=gen)
    noise = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (0.7 * base + 0.3 * noise).clamp(0, 1)


def input_mask(height: int, width: int, batch_size: int = 1, fraction: float = 0.5) -> torch.Tensor:
    """Deterministic inpainting mask (N, 1, H, W): 1 (repaint) in a centred box covering ``fraction`` of each side."""
    if not 0.0 <= fraction <= 1.0:
        raise UsageError(f"mask fraction must be in 0..1, got {fraction}.")
    import torch

    mask = torch.zeros((batch_size, 1, height, width))
    mh, mw = round(height * fraction), round(width * fraction)
    top, left = (height - mh) // 2, (width - mw) // 2
    mask[:, :, top : top + mh, left : left + mw] = 1.0
    return mask


def task_call_kwargs(
    pipe,
    task: str,
    base: dict[str, Any],
    *,
    strength: float = DEFAULT_STRENGTH,
    image_seed: int = 0,
    mask_fraction: float = 0.5,
) -> dict[str, Any]:
    """Adapt a text-to-image call (the runner's ``call_kwargs``) to ``task`` on ``pipe`` (from :func:`task_pipeline`).

    Adds the deterministic ``image`` (and ``mask_image``) and ``strength``. Drops ``latents``: for
    these tasks the start point is the noised image, drawn from the case's CPU generator (diffusers'
    inpainting would otherwise take ``latents`` as pure noise and ignore the image). Keys the
    pipeline does not accept (img2img takes no height/width) are dropped too.
    """
    validate_task(task)
    if task == TEXT_TO_IMAGE:
        return dict(base)
    if not 0.0 < strength <= 1.0:
        raise UsageError(f"strength must be in (0, 1], got {strength}.")
    prompt = base.get("prompt")
    batch = len(prompt) if isinstance(prompt, list) else 1
    size = denoiser(pipe).config.get("sample_size", 128) * pipe.vae_scale_factor
    height = base.get("height") or size
    width = base.get("width") or size
    out = {k: v for k, v in base.items() if k != "latents"}
    out["image"] = input_image(height, width, batch, image_seed)
    out["strength"] = strength
    if task == INPAINTING:
        out["mask_image"] = input_mask(height, width, batch, mask_fraction)
    accepted = inspect.signature(type(pipe).__call__).parameters
    return {k: v for k, v in out.items() if k in accepted}
