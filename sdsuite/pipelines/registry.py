"""Registries as data: model variants, schedulers and precisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdsuite.core.errors import UsageError, unknown_choice
from sdsuite.pipelines import architectures as arch


@dataclass(frozen=True)
class VariantSpec:
    """Everything sdsuite knows about one model variant."""

    name: str
    hub_id: str | None
    pipeline_class: str  # StableDiffusion(XL|3)Pipeline | FluxPipeline
    default_height: int
    default_width: int
    default_steps: int
    default_guidance: float
    prediction_type: str
    gpu_classes: tuple[str, ...]
    approx_vram_gb: float  # inference at default size, batch 1, in the default precision (weights dominate)
    unet: dict[str, Any]  # empty for the diffusion transformers
    vae: dict[str, Any]
    text_encoders: tuple[dict[str, Any], ...]
    scheduler: dict[str, Any]
    embedded: bool = False
    description: str = ""
    alt_hub_ids: tuple[str, ...] = field(default_factory=tuple)
    transformer: dict[str, Any] = field(default_factory=dict)  # the DiT denoiser (SD 3/3.5, FLUX.1)
    t5: dict[str, Any] = field(default_factory=dict)  # the T5 encoder config of a DiT variant
    default_precision: str = "fp32"
    max_sequence_length: int | None = None  # T5 tokens the pipeline encodes (its call argument)

    @property
    def is_xl(self) -> bool:
        """SDXL-style: two text encoders and the text_time add-embedding."""
        return self.pipeline_class == "StableDiffusionXLPipeline"

    @property
    def family(self) -> str:
        """``sd`` (SD 1.x/2.x), ``sdxl``, ``sd3`` (SD 3/3.5 MMDiT) or ``flux`` (FLUX.1)."""
        return FAMILIES[self.pipeline_class]

    @property
    def is_dit(self) -> bool:
        """A diffusion transformer with a flow-matching scheduler (SD 3/3.5, FLUX.1), not a UNet."""
        return self.family in DIT_FAMILIES


FAMILIES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}
DIT_FAMILIES = ("sd3", "flux")

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

_SD3 = dict(
    hub_id="stabilityai/stable-diffusion-3-medium-diffusers",
    pipeline_class="StableDiffusion3Pipeline",
    default_height=1024,
    default_width=1024,
    default_steps=28,
    default_guidance=7.0,
    prediction_type="flow",
    gpu_classes=("a100", "h100", "h200", "l40s"),
    approx_vram_gb=16.0,  # bf16 weights: transformer 2.0B + T5-XXL 4.8B + CLIP-L/G 0.8B + VAE; ~7 GB without T5
    unet={},
    vae=arch.VAE_SD3,
    text_encoders=(arch.CLIP_VIT_L, arch.OPENCLIP_BIGG),
    scheduler=arch.SCHEDULER_SD3,
    transformer=arch.SD3_TRANSFORMER_MEDIUM,
    t5=arch.T5_XXL,
    default_precision="bf16",
    max_sequence_length=256,
)
_FLUX = dict(
    pipeline_class="FluxPipeline",
    default_height=1024,
    default_width=1024,
    prediction_type="flow",
    gpu_classes=("a100", "h100", "h200"),
    approx_vram_gb=34.0,  # bf16 weights: transformer 11.9B + T5-XXL 4.8B + CLIP-L + VAE
    unet={},
    vae=arch.VAE_FLUX,
    text_encoders=(arch.CLIP_VIT_L,),
    t5=arch.T5_XXL,
    default_precision="bf16",
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
        VariantSpec(
            name="tiny-sd3",
            hub_id=None,
            pipeline_class="StableDiffusion3Pipeline",
            default_height=64,
            default_width=64,
            default_steps=4,
            default_guidance=7.0,
            prediction_type="flow",
            gpu_classes=(),
            approx_vram_gb=0.01,
            unet={},
            vae=arch.TINY_VAE_DIT,
            text_encoders=(arch.TINY_CLIP, arch.TINY_CLIP_2),
            scheduler=arch.SCHEDULER_SD3,
            transformer=arch.TINY_SD3_TRANSFORMER,
            t5=arch.TINY_T5,
            max_sequence_length=32,
            embedded=True,
            description="embedded SD3-style MMDiT: CLIP-L, CLIP-G and T5 encoders, 16-channel VAE, flow matching",
        ),
        VariantSpec(
            name="tiny-flux",
            hub_id=None,
            pipeline_class="FluxPipeline",
            default_height=64,
            default_width=64,
            default_steps=4,
            default_guidance=3.5,
            prediction_type="flow",
            gpu_classes=(),
            approx_vram_gb=0.01,
            unet={},
            vae={**arch.TINY_VAE_DIT, "scaling_factor": 0.3611, "shift_factor": 0.1159},
            text_encoders=(arch.TINY_CLIP,),
            scheduler=arch.SCHEDULER_FLUX_DEV,
            transformer=arch.TINY_FLUX_TRANSFORMER,
            t5=arch.TINY_T5,
            max_sequence_length=32,
            embedded=True,
            description="embedded FLUX.1-style DiT: double and single stream blocks, CLIP-L + T5, guidance embedding",
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
        VariantSpec(name="sd3-medium", description="Stable Diffusion 3 medium (MMDiT, 2B)", **_SD3),
        VariantSpec(
            name="sd3.5-medium",
            description="Stable Diffusion 3.5 medium (MMDiT-X, 2.5B)",
            **dict(
                _SD3,
                hub_id="stabilityai/stable-diffusion-3.5-medium",
                default_steps=40,
                default_guidance=4.5,
                transformer=arch.SD35_TRANSFORMER_MEDIUM,
            ),
        ),
        VariantSpec(
            name="sd3.5-large",
            description="Stable Diffusion 3.5 large (MMDiT, 8.1B)",
            **dict(
                _SD3,
                hub_id="stabilityai/stable-diffusion-3.5-large",
                default_steps=28,
                default_guidance=3.5,
                approx_vram_gb=28.0,  # bf16 weights: transformer 8.1B + T5-XXL 4.8B + CLIP-L/G 0.8B + VAE
                gpu_classes=("a100", "h100", "h200"),
                transformer=arch.SD35_TRANSFORMER_LARGE,
            ),
        ),
        VariantSpec(
            name="sd3.5-large-turbo",
            description="Stable Diffusion 3.5 large turbo (timestep-distilled, 4 steps, no CFG)",
            **dict(
                _SD3,
                hub_id="stabilityai/stable-diffusion-3.5-large-turbo",
                default_steps=4,
                default_guidance=0.0,
                approx_vram_gb=28.0,
                gpu_classes=("a100", "h100", "h200"),
                transformer=arch.SD35_TRANSFORMER_LARGE,
            ),
        ),
        VariantSpec(
            name="flux.1-schnell",
            hub_id="black-forest-labs/FLUX.1-schnell",
            description="FLUX.1 schnell (12B, timestep-distilled, 1-4 steps, no guidance)",
            **dict(
                _FLUX,
                default_steps=4,
                default_guidance=0.0,
                transformer=arch.FLUX_TRANSFORMER_SCHNELL,
                scheduler=arch.SCHEDULER_FLUX_SCHNELL,
                max_sequence_length=256,
            ),
        ),
        VariantSpec(
            name="flux.1-dev",
            hub_id="black-forest-labs/FLUX.1-dev",
            description="FLUX.1 dev (12B, guidance-distilled)",
            **dict(
                _FLUX,
                default_steps=50,
                default_guidance=3.5,
                transformer=arch.FLUX_TRANSFORMER_DEV,
                scheduler=arch.SCHEDULER_FLUX_DEV,
                max_sequence_length=512,
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
    # Variant families it runs with: the UNet ones (DDPM-style noise schedules) or the DiT ones (flow matching).
    families: tuple[str, ...] = ("sd", "sdxl")


# DPM-Solver and UniPC as flow-matching solvers (how diffusers runs them for SANA and Wan).
_FLOW_SIGMAS = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0}

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
        SchedulerSpec(
            "flow-euler", "FlowMatchEulerDiscreteScheduler", description="flow-matching Euler (SD 3/3.5, FLUX default)",
            families=DIT_FAMILIES,
        ),
        SchedulerSpec(
            "flow-heun", "FlowMatchHeunDiscreteScheduler",
            description="flow-matching Heun, 2 evaluations per step (SD 3/3.5: FluxPipeline passes sigmas it lacks)",
            families=("sd3",),
        ),
        SchedulerSpec(
            "flow-lcm", "FlowMatchLCMScheduler", description="flow-matching LCM (for consistency-distilled weights)",
            families=DIT_FAMILIES,
        ),
        SchedulerSpec(
            "dpm++2m-flow", "DPMSolverMultistepScheduler", _FLOW_SIGMAS,
            "DPM-Solver++ 2M on flow sigmas (flow_shift 3.0)", families=DIT_FAMILIES,
        ),
        SchedulerSpec(
            "unipc-flow", "UniPCMultistepScheduler", _FLOW_SIGMAS, "UniPC on flow sigmas (flow_shift 3.0)",
            families=DIT_FAMILIES,
        ),
    ]
}  # fmt: skip
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


def schedulers_for(spec: VariantSpec) -> list[str]:
    """The scheduler names valid for a variant (``default`` first)."""
    return [DEFAULT_SCHEDULER, *(n for n, s in SCHEDULERS.items() if spec.family in s.families)]


def check_scheduler_for(spec: VariantSpec, name: str) -> None:
    """UsageError when a known scheduler does not fit the variant's family (a UNet sampler on a DiT, or the reverse)."""
    sched = get_scheduler(name)
    if sched is not None and spec.family not in sched.families:
        kind = "a flow-matching transformer" if spec.is_dit else "a UNet (noise-prediction) model"
        raise UsageError(
            f"scheduler {name!r} does not fit {spec.name} ({kind}); valid for it: {', '.join(schedulers_for(spec))}."
        )


def get_precision(name: str) -> str:
    """Map a precision name to its torch dtype name."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise unknown_choice("precision", name, PRECISIONS) from None
