"""Registries as data: model variants, schedulers and precisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdsuite.core.errors import unknown_choice
from sdsuite.pipelines import architectures as arch


@dataclass(frozen=True)
class VariantSpec:
    """Everything sdsuite knows about one model variant."""

    name: str
    hub_id: str | None
    pipeline_class: str  # "StableDiffusionPipeline" | "StableDiffusionXLPipeline"
    default_height: int
    default_width: int
    default_steps: int
    default_guidance: float
    prediction_type: str
    gpu_classes: tuple[str, ...]
    approx_vram_gb: float  # fp16 inference at default size, batch 1
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: tuple[dict[str, Any], ...]
    scheduler: dict[str, Any]
    embedded: bool = False
    description: str = ""
    alt_hub_ids: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_xl(self) -> bool:
        """SDXL-style: two text encoders and the text_time add-embedding."""
        return self.pipeline_class == "StableDiffusionXLPipeline"


_SD1 = dict(
    pipeline_class="StableDiffusionPipeline",
    default_height=512,
    default_width=512,
    default_steps=50,
    default_guidance=7.5,
    prediction_type="epsilon",
    gpu_classes=("v100", "a100", "h100", "h200", "l40s"),
    approx_vram_gb=3.5,
    unet=arch.UNET_SD1,
    vae=arch.VAE_SD,
    text_encoders=(arch.CLIP_VIT_L,),
    scheduler=arch.SCHEDULER_SD1,
)
_SD2 = dict(
    _SD1,
    default_height=768,
    default_width=768,
    prediction_type="v_prediction",
    approx_vram_gb=5.0,
    unet=arch.UNET_SD2,
    text_encoders=(arch.OPENCLIP_VIT_H,),
    scheduler=arch.SCHEDULER_SD2_V,
)
_SDXL = dict(
    pipeline_class="StableDiffusionXLPipeline",
    default_height=1024,
    default_width=1024,
    default_steps=30,
    default_guidance=5.0,
    prediction_type="epsilon",
    gpu_classes=("a100", "h100", "h200", "l40s"),
    approx_vram_gb=10.0,
    unet=arch.UNET_SDXL,
    vae=arch.VAE_SDXL,
    text_encoders=(arch.CLIP_VIT_L, arch.OPENCLIP_BIGG),
    scheduler=arch.SCHEDULER_SDXL,
)

VARIANTS: dict[str, VariantSpec] = {
    v.name: v
    for v in [
        VariantSpec(
            name="tiny-sd",
            hub_id=None,
            pipeline_class="StableDiffusionPipeline",
            default_height=64,
            default_width=64,
            default_steps=4,
            default_guidance=7.5,
            prediction_type="epsilon",
            gpu_classes=(),
            approx_vram_gb=0.01,
            unet=arch.TINY_UNET_SD,
            vae=arch.TINY_VAE,
            text_encoders=(arch.TINY_CLIP,),
            scheduler=arch.SCHEDULER_SD1,
            embedded=True,
            description=(
                "embedded SD1-style model built in code (random deterministic weights), runs on any CPU in seconds"
            ),
        ),
        VariantSpec(
            name="tiny-sdxl",
            hub_id=None,
            pipeline_class="StableDiffusionXLPipeline",
            default_height=64,
            default_width=64,
            default_steps=4,
            default_guidance=5.0,
            prediction_type="epsilon",
            gpu_classes=(),
            approx_vram_gb=0.01,
            unet=arch.TINY_UNET_SDXL,
            vae=arch.TINY_VAE_SDXL,
            text_encoders=(arch.TINY_CLIP, arch.TINY_CLIP_2),
            scheduler=arch.SCHEDULER_SDXL,
            embedded=True,
            description="embedded SDXL-style model: two text encoders, text_time add-embedding",
        ),
        VariantSpec(name="sd-v1.4", hub_id="CompVis/stable-diffusion-v1-4", description="Stable Diffusion 1.4", **_SD1),
        VariantSpec(
            name="sd-v1.5",
            hub_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
            alt_hub_ids=("runwayml/stable-diffusion-v1-5",),
            description="Stable Diffusion 1.5",
            **_SD1,
        ),
        VariantSpec(
            name="sd-v2.0",
            hub_id="stabilityai/stable-diffusion-2",
            description="Stable Diffusion 2.0 (768px, v-prediction)",
            **dict(_SD2, unet={**arch.UNET_SD2, "upcast_attention": False}),
        ),
        VariantSpec(
            name="sd-v2.1",
            hub_id="stabilityai/stable-diffusion-2-1",
            description="Stable Diffusion 2.1 (768px, v-prediction)",
            **_SD2,
        ),
        VariantSpec(
            name="sdxl", hub_id="stabilityai/stable-diffusion-xl-base-1.0", description="SDXL base 1.0", **_SDXL
        ),
        VariantSpec(
            name="sdxl-turbo",
            hub_id="stabilityai/sdxl-turbo",
            description="SDXL Turbo (adversarial distillation, 1-4 steps, no CFG)",
            **dict(
                _SDXL,
                default_height=512,
                default_width=512,
                default_steps=1,
                default_guidance=0.0,
                scheduler=arch.SCHEDULER_TURBO,
            ),
        ),
        VariantSpec(
            name="sd-turbo",
            hub_id="stabilityai/sd-turbo",
            description="SD Turbo (SD 2.1 distilled, 1-4 steps, no CFG)",
            **dict(
                _SD2,
                default_height=512,
                default_width=512,
                default_steps=1,
                default_guidance=0.0,
                prediction_type="epsilon",
                unet={**arch.UNET_SD2, "sample_size": 64},
                scheduler={**arch.SCHEDULER_TURBO, "prediction_type": "epsilon"},
            ),
        ),
    ]
}


@dataclass(frozen=True)
class SchedulerSpec:
    """A diffusers scheduler class plus the config overrides that make it a named sampler."""

    name: str
    class_name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""


SCHEDULERS: dict[str, SchedulerSpec] = {
    s.name: s
    for s in [
        SchedulerSpec("ddim", "DDIMScheduler", description="DDIM"),
        SchedulerSpec("pndm", "PNDMScheduler", {"skip_prk_steps": True}, "PNDM/PLMS (SD 1.x default)"),
        SchedulerSpec("lms", "LMSDiscreteScheduler", description="linear multistep"),
        SchedulerSpec("euler", "EulerDiscreteScheduler", description="Euler (SDXL default)"),
        SchedulerSpec("euler-a", "EulerAncestralDiscreteScheduler", description="Euler ancestral (stochastic)"),
        SchedulerSpec("heun", "HeunDiscreteScheduler", description="Heun (2 UNet evaluations per step)"),
        SchedulerSpec("dpm++2m", "DPMSolverMultistepScheduler", {"use_karras_sigmas": False}, "DPM-Solver++ 2M"),
        SchedulerSpec(
            "dpm++2m-karras",
            "DPMSolverMultistepScheduler",
            {"use_karras_sigmas": True},
            "DPM-Solver++ 2M, Karras sigmas",
        ),
        SchedulerSpec(
            "dpm++2m-sde-karras",
            "DPMSolverMultistepScheduler",
            {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"},
            "DPM-Solver++ 2M SDE, Karras sigmas (stochastic)",
        ),
        SchedulerSpec("unipc", "UniPCMultistepScheduler", description="UniPC multistep"),
        SchedulerSpec("dpm-sde", "DPMSolverSDEScheduler", description="DPM++ SDE (needs torchsde)"),
        SchedulerSpec("lcm", "LCMScheduler", description="latent consistency (for LCM-distilled weights)"),
        SchedulerSpec("tcd", "TCDScheduler", description="trajectory consistency distillation"),
        SchedulerSpec("deis", "DEISMultistepScheduler", description="DEIS multistep"),
        SchedulerSpec("kdpm2", "KDPM2DiscreteScheduler", description="KDPM2"),
    ]
}
# "default" keeps the scheduler the checkpoint ships with.
DEFAULT_SCHEDULER = "default"

PRECISIONS: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def get_variant(name: str) -> VariantSpec:
    """Look a variant up by name; unknown names list the valid choices."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise unknown_choice("variant", name, VARIANTS) from None


def get_scheduler(name: str) -> SchedulerSpec | None:
    """Look a scheduler up by name (``default`` -> None: keep the checkpoint's own)."""
    if name == DEFAULT_SCHEDULER:
        return None
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise unknown_choice("scheduler", name, [DEFAULT_SCHEDULER, *SCHEDULERS]) from None


def get_precision(name: str) -> str:
    """Map a precision name to its torch dtype name."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise unknown_choice("precision", name, PRECISIONS) from None
