"""Components of the diffusion-transformer variants (SD 3/3.5, FLUX.1): transformer, 16-channel VAE, CLIP and T5.

Tiny embedded models are built in fp32 with torch's own deterministic init. Real architectures with random weights
(``--weights random``) are allocated directly in the target dtype on the target device, with every initializer
skipped, then filled in place: no fp32 copy of a multi-billion-parameter network ever exists in host memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from sdsuite.pipelines.random_init import fill_random_, skip_weight_init
from sdsuite.pipelines.registry import VariantSpec
from sdsuite.pipelines.tiny_tokenizers import tiny_t5_tokenizer, tiny_tokenizer


@contextlib.contextmanager
def _allocate_in(dtype: torch.dtype, device: str) -> Iterator[None]:
    """Modules built inside allocate their parameters in ``dtype`` on ``device``, uninitialised."""
    from transformers.initialization import no_init_weights

    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), skip_weight_init(), no_init_weights():
            yield
    finally:
        torch.set_default_dtype(saved)


def build_dit_components(
    spec: VariantSpec, seed: int, fast_init: bool, device: str = "cpu", dtype: torch.dtype = torch.float32,
    with_t5: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The pipeline components of a DiT variant; ``with_t5=False`` leaves the T5 encoder out (SD 3/3.5 only)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    ctx = _allocate_in(dtype, device) if fast_init else contextlib.nullcontext()
    flux = spec.family == "flux"
    with ctx:
        torch.manual_seed(seed)
        transformer = (FluxTransformer2DModel if flux else SD3Transformer2DModel)(**spec.transformer)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**spec.vae)
        clips = []
        for i, cfg in enumerate(spec.text_encoders):
            torch.manual_seed(seed + 2 + i)
            # SD 3 takes both CLIP towers' projected pooled output; FLUX takes CLIP-L's pooler output.
            cls = CLIPTextModel if flux else CLIPTextModelWithProjection
            clips.append(cls(CLIPTextConfig(**cfg)))
        t5 = None
        if with_t5 or flux:
            torch.manual_seed(seed + 5)
            t5 = T5EncoderModel(T5Config(**spec.t5))
            # no_init_weights also skips the tying post_init does: share the embedding as the checkpoints do
            # (otherwise a second 32128 x 4096 table, 0.26 GB in bf16, is allocated and counted).
            t5.tie_weights()
    modules = [m for m in (transformer, vae, *clips, t5) if m is not None]
    if fast_init:
        for j, m in enumerate(modules):
            fill_random_(m, seed + 10 * j, device=device)
    t5_tokenizer = tiny_t5_tokenizer() if t5 is not None else None
    if flux:
        return {
            "transformer": transformer, "vae": vae, "text_encoder": clips[0], "tokenizer": tiny_tokenizer(),
            "text_encoder_2": t5, "tokenizer_2": t5_tokenizer,
        }  # fmt: skip
    return {
        "transformer": transformer, "vae": vae,
        "text_encoder": clips[0], "tokenizer": tiny_tokenizer(),
        "text_encoder_2": clips[1], "tokenizer_2": tiny_tokenizer(),
        "text_encoder_3": t5, "tokenizer_3": t5_tokenizer,
    }  # fmt: skip


def t5_attribute(pipe) -> str | None:
    """The name of the pipeline's T5 component (``text_encoder_3`` for SD 3, ``text_encoder_2`` for FLUX), or None."""
    cls = type(pipe).__name__
    if cls.startswith("StableDiffusion3"):
        return "text_encoder_3"
    if cls.startswith("Flux"):
        return "text_encoder_2"
    return None


def initial_latents(pipe, num_images: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Fixed starting latents drawn on the CPU in fp32 from ``seed``, in the layout the pipeline takes.

    UNet and SD 3 pipelines take (N, C, H/8, W/8); FLUX takes them packed in 2x2 patches, (N, H/16 * W/16, 4C).
    """
    from sdsuite.core.denoiser import denoiser

    gen = torch.Generator("cpu").manual_seed(seed)
    f = pipe.vae_scale_factor
    if type(pipe).__name__.startswith("Flux"):
        c = pipe.vae.config.latent_channels
        h, w = 2 * (height // (f * 2)), 2 * (width // (f * 2))  # what FluxPipeline itself rounds to
        x = torch.randn((num_images, c, h, w), generator=gen, dtype=torch.float32)
        return pipe._pack_latents(x, num_images, c, h, w)
    c = denoiser(pipe).config.in_channels
    return torch.randn((num_images, c, height // f, width // f), generator=gen, dtype=torch.float32)
