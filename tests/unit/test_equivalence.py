"""The suite's image for a case is exactly what a plain diffusers call makes with the same inputs."""

import pytest
import torch

from sdsuite.measure.meters.energy import UnavailableEnergyMeter
from sdsuite.measure.runner import CaseMeasurement
from sdsuite.pipelines.cache import PipelineCache
from sdsuite.spec.case import Case


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
@pytest.mark.parametrize(
    "variant, scheduler", [("tiny-sd", "euler"), ("tiny-sd", "euler-a"), ("tiny-sdxl", "dpm++2m-karras")]
)
def test_suite_image_equals_plain_diffusers_call(variant, scheduler, cpu):
    cache = PipelineCache()
    case = Case(variant, scheduler, steps=3, seed=7, negative_prompt="blurry").resolved()
    loaded = cache.get(variant, "auto", "fp32", cpu)
    with CaseMeasurement(case, loaded, cpu, UnavailableEnergyMeter("test")) as m:
        m.measure_once()
        ours = m.last_images()
    # Plain call: same components, latents drawn the documented way (CPU generator, case seed).
    pipe = loaded.pipe
    assert "encode_prompt" not in vars(pipe), "instrumentation must be removed after the case"
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(7))
    plain = pipe(
        prompt=[case.prompt],
        negative_prompt=["blurry"],
        height=64,
        width=64,
        num_inference_steps=3,
        guidance_scale=case.guidance_scale,
        latents=latents,
        generator=torch.Generator("cpu").manual_seed(7),
        output_type="pt",
    ).images
    assert torch.equal(ours, plain)


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_same_case_gives_the_same_image_twice(cpu):
    cache = PipelineCache()
    case = Case("tiny-sd", "euler-a", steps=2).resolved()
    loaded = cache.get("tiny-sd", "auto", "fp32", cpu)
    with CaseMeasurement(case, loaded, cpu, UnavailableEnergyMeter("test")) as m:
        m.measure_once()
        m.measure_once()
        assert m.image_summary()["deterministic"]
