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
        assert v.pipeline_class in ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
        assert v.default_height % 8 == 0 and v.default_steps >= 1
        assert v.prediction_type in ("epsilon", "v_prediction")
        assert v.unet and v.vae and v.text_encoders
        assert v.embedded or (v.hub_id and v.gpu_classes and v.approx_vram_gb > 0)
    assert VARIANTS["sdxl"].is_xl and len(VARIANTS["sdxl"].text_encoders) == 2
    assert VARIANTS["tiny-sdxl"].is_xl and VARIANTS["tiny-sdxl"].unet["addition_embed_type"] == "text_time"
    assert VARIANTS["sd-v2.1"].prediction_type == "v_prediction"
    assert VARIANTS["sdxl-turbo"].default_guidance == 0.0


def test_scheduler_registry_covers_the_required_samplers():
    assert REQUIRED_SCHEDULERS <= set(SCHEDULERS)
    for s in SCHEDULERS.values():
        assert hasattr(diffusers, s.class_name), s.class_name


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
