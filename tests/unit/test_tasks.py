"""Image-to-image and inpainting on the tiny offline models: shared components, determinism, sanity."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdsuite.core.errors import UsageError
from sdsuite.pipelines.build import build_in_code
from sdsuite.pipelines.registry import get_variant
from sdsuite.quality.sanity import sanity_check
from sdsuite.spec.tasks import (
    IMAGE_TO_IMAGE,
    INPAINTING,
    TASKS,
    TEXT_TO_IMAGE,
    input_image,
    input_mask,
    task_call_kwargs,
    task_pipeline,
    validate_task,
)

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
SLOW_SDXL = pytest.mark.slow  # the same task code on the second family: the full run; `pytest -m quick` runs tiny-sd


@pytest.fixture(scope="module")
def pipes():
    return {v: build_in_code(get_variant(v)) for v in ("tiny-sd", "tiny-sdxl")}


def _base(prompt="a red bicycle"):
    # What the runner's CaseMeasurement.call_kwargs() passes for text-to-image.
    return {
        "prompt": [prompt],
        "negative_prompt": None,
        "height": SIZE,
        "width": SIZE,
        "num_inference_steps": 2,
        "guidance_scale": 5.0,
        "latents": torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(0)),
        "generator": torch.Generator("cpu").manual_seed(0),
        "output_type": "pt",
    }


def _run(pipe, task, **kw):
    tp = task_pipeline(pipe, task)
    base = _base(kw.pop("prompt", "a red bicycle"))
    return tp(**task_call_kwargs(tp, task, base, **kw)).images


@given(st.integers(8, 40).map(lambda x: x * 2), st.integers(8, 40).map(lambda x: x * 2), st.integers(0, 100))
@settings(max_examples=max(5, settings().max_examples * 3 // 4))  # image generation: 3/4 of the profile's
def test_inputs_are_deterministic_images_and_masks(h, w, seed):
    img = input_image(h, w, batch_size=2, seed=seed)
    assert img.shape == (2, 3, h, w) and float(img.min()) >= 0 and float(img.max()) <= 1
    assert torch.equal(img, input_image(h, w, batch_size=2, seed=seed))
    assert sanity_check(img) is None
    mask = input_mask(h, w, fraction=0.5)
    assert mask.shape == (1, 1, h, w) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert float(mask.mean()) == pytest.approx(0.25, abs=0.1)
    assert float(input_mask(h, w, fraction=0.0).sum()) == 0.0


def test_bad_task_arguments_list_the_choices():
    with pytest.raises(UsageError, match="image-to-image"):
        validate_task("img2img")
    with pytest.raises(UsageError, match=r"strength must be in \(0, 1\]"):
        task_call_kwargs(object(), IMAGE_TO_IMAGE, _base(), strength=0.0)
    with pytest.raises(UsageError, match="0..1"):
        input_mask(16, 16, fraction=1.5)


@pytest.mark.parametrize("variant", ["tiny-sd", pytest.param("tiny-sdxl", marks=SLOW_SDXL)])
@pytest.mark.parametrize("task", [IMAGE_TO_IMAGE, INPAINTING])
def test_task_runs_offline_shares_weights_and_is_deterministic(pipes, variant, task):
    pipe = pipes[variant]
    tp = task_pipeline(pipe, task)
    assert tp is not pipe and tp.unet is pipe.unet and tp.vae is pipe.vae and tp.text_encoder is pipe.text_encoder
    first, second = _run(pipe, task), _run(pipe, task)
    assert first.shape == (1, 3, SIZE, SIZE)
    assert torch.equal(first, second), "same case, different images"
    assert sanity_check(first) is None


def test_text_to_image_is_the_pipeline_itself(pipes):
    pipe = pipes["tiny-sd"]
    assert task_pipeline(pipe, TEXT_TO_IMAGE) is pipe
    assert task_call_kwargs(pipe, TEXT_TO_IMAGE, _base()).keys() == _base().keys()
    assert set(TASKS) == {TEXT_TO_IMAGE, IMAGE_TO_IMAGE, INPAINTING}


@pytest.mark.parametrize("variant", ["tiny-sd", pytest.param("tiny-sdxl", marks=SLOW_SDXL)])
def test_img2img_depends_on_the_input_image(pipes, variant):
    a = _run(pipes[variant], IMAGE_TO_IMAGE, image_seed=0)
    b = _run(pipes[variant], IMAGE_TO_IMAGE, image_seed=1)
    assert not torch.equal(a, b)


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
@pytest.mark.parametrize("variant", ["tiny-sd", "tiny-sdxl"])
def test_inpainting_repaints_only_inside_the_mask(pipes, variant):
    pipe = pipes[variant]
    # Empty mask: everything is kept, so the prompt cannot change the output; a real mask lets it.
    keep_a = _run(pipe, INPAINTING, prompt="a red bicycle", mask_fraction=0.0)
    keep_b = _run(pipe, INPAINTING, prompt="a lighthouse at night", mask_fraction=0.0)
    assert torch.equal(keep_a, keep_b)
    paint_a = _run(pipe, INPAINTING, prompt="a red bicycle", mask_fraction=0.5)
    paint_b = _run(pipe, INPAINTING, prompt="a lighthouse at night", mask_fraction=0.5)
    assert not torch.equal(paint_a, paint_b)


def test_task_kwargs_drop_what_the_pipeline_does_not_take(pipes):
    pipe = pipes["tiny-sd"]
    img2img = task_pipeline(pipe, IMAGE_TO_IMAGE)
    kw = task_call_kwargs(img2img, IMAGE_TO_IMAGE, _base(), strength=0.5)
    assert (
        "latents" not in kw and "height" not in kw and kw["strength"] == 0.5 and kw["image"].shape == (1, 3, SIZE, SIZE)
    )
    inpaint = task_pipeline(pipe, INPAINTING)
    kw = task_call_kwargs(inpaint, INPAINTING, _base())
    assert "latents" not in kw and kw["mask_image"].shape == (1, 1, SIZE, SIZE) and kw["height"] == SIZE
