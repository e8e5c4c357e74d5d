import pytest
import torch

from sdsuite.measure.context import RunOptions
from sdsuite.measure.runner import metric_center, run_case
from sdsuite.pipelines.cache import PipelineCache
from sdsuite.spec.case import Case


@pytest.fixture(scope="module")
def cache():
    return PipelineCache()


def test_record_has_every_required_field_and_metric(cache, cpu):
    rec = run_case(Case("tiny-sd", "euler", steps=3), RunOptions(runs=3, warmup=1), cpu, cache=cache, run_id="r")
    assert rec["status"] == "ok" and rec["reason"] is None
    assert {"schema_version", "case", "case_id", "status", "metrics", "env", "started_at", "finished_at"} <= set(rec)
    assert rec["case"]["freq_mhz"] is None and rec["case"]["steps"] == 3
    m = rec["metrics"]
    assert m["latency_s"]["n"] == 3 and len(m["latency_s"]["samples"]) == 3
    assert len(m["step_latency_s"]["samples"]) == 9
    for name in ("text_encode_s", "denoise_s", "vae_decode_s", "images_per_s", "peak_memory_bytes"):
        assert m[name]["available"] and metric_center(m[name]) > 0, name
    for stat in ("median", "mean", "stdev", "iqr", "min", "max", "cv", "ci95_median"):
        assert stat in m["latency_s"]
    # The stages are inside the measured window.
    assert metric_center(m["denoise_s"]) < metric_center(m["latency_s"])
    assert m["flops_per_image"]["value"] > 0 and m["load_s"]["value"] > 0 and m["first_call_s"]["value"] > 0
    assert not m["energy_j"]["available"] and "RAPL" in m["energy_j"]["reason"]
    assert rec["params"]["unet"] > 0 and rec["image"]["deterministic"]


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_flops_scale_with_batch_and_steps(cache, cpu):
    opts = RunOptions(runs=1, warmup=0)

    def rec(**kw):
        return run_case(Case("tiny-sd", "euler", **kw), opts, cpu, cache=cache)

    def f(**kw):
        return rec(**kw)["metrics"]["flops_per_image"]["value"]

    one, two = f(steps=2), f(steps=4)
    assert two > one
    assert f(steps=2, batch_size=2) == pytest.approx(one, rel=1e-6)  # per image
    # Two images per prompt: per image too (it was per prompt, twice the UNet's share); the text encoder runs once
    # per prompt, so its share is spread over both images.
    single, double = rec(steps=2), rec(steps=2, images_per_prompt=2)
    assert double["flops_by_component"]["unet"] == pytest.approx(single["flops_by_component"]["unet"], rel=1e-6)
    assert double["flops_by_component"]["text_encoder"] == pytest.approx(
        single["flops_by_component"]["text_encoder"] / 2
    )
    assert double["metrics"]["flops_per_image"]["value"] < one


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_failing_case_is_recorded_and_does_not_raise(cache, cpu, monkeypatch):
    loaded = cache.get("tiny-sd", "auto", "fp32", cpu)

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(loaded.pipe.unet, "forward", boom)
    rec = run_case(Case("tiny-sd", "euler", steps=2), RunOptions(runs=2), cpu, cache=cache)
    assert rec["status"] == "failed" and rec["reason"].startswith("out of memory")


def test_nan_output_fails_the_case(cache, cpu, monkeypatch):
    loaded = cache.get("tiny-sd", "auto", "fp32", cpu)
    decode = loaded.pipe.vae.decode

    def nan_decode(*a, **k):
        out = decode(*a, **k)
        (out[0] if isinstance(out, tuple) else out.sample).fill_(float("nan"))
        return out

    monkeypatch.setattr(loaded.pipe.vae, "decode", nan_decode)
    rec = run_case(Case("tiny-sd", "euler", steps=2), RunOptions(runs=1, warmup=0, count_flops=False), cpu, cache=cache)
    assert rec["status"] == "failed" and "has_nan" in rec["reason"]


def test_unsupported_precision_is_skipped_with_reason(monkeypatch, cache):
    from sdsuite.measure import runner

    monkeypatch.setattr(runner, "precision_support", lambda device, p: "bf16 is not supported natively by TestGPU")
    rec = run_case(Case("tiny-sd", precision="bf16"), RunOptions(runs=1), torch.device("cpu"), cache=cache)
    assert rec["status"] == "skipped" and "bf16" in rec["reason"]
