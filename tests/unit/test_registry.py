import re

import diffusers
import pytest

from sdsuite.core.errors import UsageError
from sdsuite.pipelines.cache import PipelineCache
from sdsuite.pipelines.registry import SCHEDULERS, VARIANTS, get_precision, get_scheduler, get_variant

REQUIRED_VARIANTS = {
    "sd-v1.4",
    "sd-v1.5",
    "sd-v2.0",
    "sd-v2.1",
    "sdxl",
    "sdxl-turbo",
    "sd-turbo",
    "tiny-sd",
    "tiny-sdxl",
    "tiny-sd3",
    "tiny-flux",
    "sd3-medium",
    "sd3.5-medium",
    "sd3.5-large",
    "sd3.5-large-turbo",
    "flux.1-schnell",
    "flux.1-dev",
}
REQUIRED_SCHEDULERS = {
    "ddim",
    "pndm",
    "lms",
    "euler",
    "euler-a",
    "heun",
    "dpm++2m",
    "dpm++2m-karras",
    "dpm++2m-sde-karras",
    "unipc",
}


def test_registry_has_every_required_variant_with_its_facts():
    assert REQUIRED_VARIANTS <= set(VARIANTS)
    for v in VARIANTS.values():
        assert v.pipeline_class in ("StableDiffusionPipeline", "StableDiffusionXLPipeline") or v.is_dit
        assert v.default_height % 8 == 0 and v.default_steps >= 1
        if v.is_dit:  # a transformer, a 16-channel VAE, CLIP and T5, a flow-matching scheduler
            assert v.transformer and v.t5 and not v.unet and v.vae["latent_channels"] == 16
            assert v.scheduler["_class_name"].startswith("FlowMatch") and v.prediction_type == "flow"
            assert hasattr(diffusers, v.pipeline_class) and v.max_sequence_length
        else:
            assert v.prediction_type in ("epsilon", "v_prediction")
            assert v.unet and v.vae and v.text_encoders
        assert v.embedded or (v.hub_id and v.gpu_classes and v.approx_vram_gb > 0)
    assert [VARIANTS[n].default_precision for n in ("sd3.5-large", "flux.1-dev", "tiny-flux", "sdxl")] == [
        "bf16", "bf16", "fp32", "fp32",
    ]  # fmt: skip
    assert (VARIANTS["sd3.5-large-turbo"].default_steps, VARIANTS["sd3.5-large-turbo"].default_guidance) == (4, 0.0)
    assert VARIANTS["flux.1-dev"].transformer["guidance_embeds"]
    assert not VARIANTS["flux.1-schnell"].transformer["guidance_embeds"]
    assert VARIANTS["sdxl"].is_xl and len(VARIANTS["sdxl"].text_encoders) == 2
    assert VARIANTS["tiny-sdxl"].is_xl and VARIANTS["tiny-sdxl"].unet["addition_embed_type"] == "text_time"
    assert VARIANTS["sd-v2.1"].prediction_type == "v_prediction"
    assert VARIANTS["sdxl-turbo"].default_guidance == 0.0


def test_scheduler_registry_covers_the_required_samplers():
    assert REQUIRED_SCHEDULERS <= set(SCHEDULERS)
    for s in SCHEDULERS.values():
        assert hasattr(diffusers, s.class_name), s.class_name
    flow = {n for n, s in SCHEDULERS.items() if "flux" in s.families or "sd3" in s.families}
    assert {"flow-euler", "flow-heun", "flow-lcm"} <= flow
    assert not flow & REQUIRED_SCHEDULERS  # the UNet samplers are not offered to the DiT variants


@pytest.mark.parametrize(
    "variant, scheduler, valid",
    [
        ("tiny-flux", "euler", "flow-euler"),
        ("sd3.5-large", "dpm++2m-karras", "flow-heun"),
        ("sdxl", "flow-euler", "euler"),
    ],
)
def test_a_scheduler_of_the_other_family_is_refused_naming_the_valid_ones(variant, scheduler, valid):
    from sdsuite.pipelines.registry import check_scheduler_for, schedulers_for

    with pytest.raises(UsageError, match=re.escape(f"scheduler {scheduler!r} does not fit {variant} (")) as err:
        check_scheduler_for(get_variant(variant), scheduler)
    assert valid in str(err.value) and ", ".join(schedulers_for(get_variant(variant))) in str(err.value)
    check_scheduler_for(get_variant(variant), valid)  # the valid one passes
    assert "flow-heun" not in schedulers_for(get_variant("flux.1-dev"))  # FluxPipeline passes sigmas Heun lacks


@pytest.mark.parametrize(
    "lookup, bad, kind",
    [(get_variant, "sd-v1.6", "variant"), (get_scheduler, "eulr", "scheduler"), (get_precision, "fp8", "precision")],
)
def test_unknown_names_list_the_valid_choices(lookup, bad, kind):
    with pytest.raises(UsageError) as err:
        lookup(bad)
    msg = str(err.value)
    assert f"unknown {kind} {bad!r}" in msg and "valid choices:" in msg


def test_close_typo_gets_a_suggestion():
    with pytest.raises(UsageError, match="Did you mean 'sd-v1.5'"):
        get_variant("sd-v15")


@pytest.mark.parametrize("name", sorted(REQUIRED_SCHEDULERS))
def test_scheduler_swap_uses_from_config_and_keeps_the_model_config(name):
    cache = PipelineCache()
    loaded = cache.get("tiny-sd", "auto", "fp32", "cpu")
    loaded.set_scheduler(name)
    spec = SCHEDULERS[name]
    sched = loaded.pipe.scheduler
    assert type(sched).__name__ == spec.class_name
    assert sched.config.beta_schedule == "scaled_linear"  # inherited from the checkpoint's config
    for key, value in spec.overrides.items():
        assert sched.config[key] == value
    loaded.set_scheduler("default")
    assert type(loaded.pipe.scheduler).__name__ == "PNDMScheduler"


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_cache_reuses_and_releases():
    cache = PipelineCache(max_entries=1)
    a = cache.get("tiny-sd", "auto", "fp32", "cpu")
    assert cache.get("tiny-sd", "auto", "fp32", "cpu") is a and a.uses == 2
    b = cache.get("tiny-sdxl", "auto", "fp32", "cpu")  # evicts tiny-sd (max_entries=1)
    assert len(cache) == 1 and b.key in cache and a.key not in cache
    cache.release()
    assert len(cache) == 0
