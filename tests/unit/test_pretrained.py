"""The real from_pretrained path, exercised offline: save a tiny pipeline, load it back."""

import pytest
import torch

from sdsuite.core.errors import WeightsNotFoundError
from sdsuite.measure.context import RunOptions
from sdsuite.measure.runner import run_case
from sdsuite.pipelines.build import load_pipeline
from sdsuite.pipelines.cache import PipelineCache
from sdsuite.pipelines.registry import VARIANTS
from sdsuite.spec.case import Case


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
@pytest.mark.parametrize("variant", ["tiny-sd", "tiny-sdxl"])
def test_saved_pipeline_loads_back_with_from_pretrained_and_gives_the_same_image(tmp_path, variant, request):
    pipe = request.getfixturevalue("tiny_sd_pipe" if variant == "tiny-sd" else "tiny_sdxl_pipe")
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").exists()
    loaded = load_pipeline(VARIANTS[variant], str(tmp_path), torch.float32)
    assert type(loaded) is type(pipe)
    lat = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    kw = dict(prompt="a cat", num_inference_steps=2, height=64, width=64, latents=lat, output_type="pt")
    assert torch.equal(loaded(**kw).images, pipe(**kw).images)


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_weights_path_through_the_runner_records_pretrained(tmp_path, tiny_sd_pipe, cpu):
    tiny_sd_pipe.save_pretrained(tmp_path)
    rec = run_case(
        Case("tiny-sd", steps=2),
        RunOptions(runs=1, warmup=0, weights=str(tmp_path), count_flops=False),
        cpu,
        cache=PipelineCache(),
    )
    assert rec["status"] == "ok", rec["reason"]
    assert rec["weights"] == {"source": str(tmp_path), "kind": "path"}


def test_missing_weights_name_both_remedies(tmp_path, monkeypatch, cpu):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(WeightsNotFoundError) as err:
        load_pipeline(VARIANTS["sd-v1.5"], "auto", torch.float16)
    msg = str(err.value)
    assert "--weights PATH" in msg and "--weights random" in msg and "sd-v1.5" in msg
    rec = run_case(Case("sd-v1.5"), RunOptions(runs=1), cpu, cache=PipelineCache())
    assert rec["status"] == "failed" and "--weights random" in rec["reason"]
