"""Optimization/task axes wired into the engine: case ids, grid expansion, skip reasons, pipeline cache
keying and undo, fidelity/effects against the reference set, determinism, sanity, spans and traces."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.core.errors import UsageError
from sdsuite.measure.context import RunOptions
from sdsuite.measure.engine import order_for_loading
from sdsuite.measure.runner import run_case
from sdsuite.optimizations import apply as opt_apply
from sdsuite.optimizations import attention as opt_attention
from sdsuite.optimizations.attention import SdsuiteAttnProcessor
from sdsuite.optimizations.sets import (
    ATTENTION_KERNELS,
    DEFAULT,
    QUANTIZATIONS,
    OptimizationSet,
    UnsupportedOptimization,
    option_grid,
)
from sdsuite.pipelines.cache import PipelineCache
from sdsuite.quality.effects import REFERENCE, REFERENCES
from sdsuite.spec.case import Case, GridSpec

CPU = torch.device("cpu")
FAST = RunOptions(runs=2, warmup=0, count_flops=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _fresh_references():
    # The reference store is per process: keep tests (and other modules in this xdist worker) independent.
    REFERENCES.clear()
    yield
    REFERENCES.clear()


@pytest.fixture(scope="module")
def cache():
    c = PipelineCache()
    yield c
    c.release()


def tiny(**kw) -> Case:
    """A small, fast tiny-sd case (32x32, 2 steps)."""
    return Case("tiny-sd", "euler", steps=kw.pop("steps", 2), height=32, width=32, **kw)


# -- case ids and the grid ---------------------------------------------------------------------------

sets = st.builds(
    OptimizationSet,
    attention=st.sampled_from(ATTENTION_KERNELS),
    kv_cache=st.booleans(),
    vae_slicing=st.booleans(),
    vae_tiling=st.booleans(),
    channels_last=st.booleans(),
    fused_qkv=st.booleans(),
    quantization=st.sampled_from([None, *QUANTIZATIONS]),
)


@given(
    st.sampled_from(["tiny-sd", "tiny-sdxl", "sd-v1.5"]),
    st.sampled_from(["euler", "ddim", "default"]),
    st.integers(1, 60),
    st.integers(1, 8),
    st.integers(0, 3),
    st.one_of(st.none(), st.integers(100, 2000)),
)
def test_default_options_and_task_keep_todays_case_ids(variant, sched, steps, batch, seed, freq):
    before = Case(variant, sched, "fp32", steps, 64, 64, batch, seed, freq).resolved()
    explicit = Case(
        variant, sched, "fp32", steps, 64, 64, batch, seed, freq, options=DEFAULT, task="text-to-image"
    ).resolved()
    assert explicit == before and explicit.case_id == before.case_id
    parts = [variant, sched, "fp32", "fdefault" if freq is None else f"f{freq}", "64x64", f"s{steps}", f"b{batch}"]
    assert before.case_id == "/".join(parts + ([f"seed{seed}"] if seed else []))
    assert Case(variant, sched, options="attn=sdpa").resolved() == Case(variant, sched).resolved()


@given(sets, sets)
def test_non_default_options_append_their_id_and_keep_cases_apart(a, b):
    ca, cb = tiny(options=a).resolved(), tiny(options=b).resolved()
    base = tiny().resolved().case_id
    assert ca.case_id == (base if a == DEFAULT else f"{base}/{a.id}")
    assert (ca.case_id == cb.case_id) == (a == b)
    assert hash(ca) == hash(tiny(options=a.id).resolved())  # frozen, hashable, the id string parses back
    assert ca.to_dict()["options"] == a.id and json.dumps(ca.to_dict())


def test_case_stays_frozen_and_task_fields_validate():
    c = tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.options = REFERENCE  # type: ignore[misc]
    img2img = tiny(task="image-to-image", steps=4).resolved()
    assert img2img.strength == 0.75 and img2img.case_id.endswith("/b1/img2img")
    assert (
        tiny(task="inpainting", strength=0.5, steps=4, options="attn=eager")
        .resolved()
        .case_id.endswith("/inpaint-st0.5/attn=eager")
    )
    assert tiny(images_per_prompt=2, prompt_id="builtin3").resolved().case_id.endswith("/b1/ipp2/prompt-builtin3")
    for kwargs, msg in [
        ({"strength": 0.5}, "strength applies to image-to-image and inpainting"),
        ({"task": "image-to-image", "strength": 1.5}, r"strength must be in \(0, 1\]"),
        ({"task": "image-to-image", "strength": 0.2, "steps": 2}, "leaves none"),
        ({"task": "txt2img"}, "unknown task 'txt2img'; valid choices: text-to-image, image-to-image, inpainting"),
        ({"images_per_prompt": 0}, "images per prompt must be >= 1"),
    ]:
        with pytest.raises(UsageError, match=msg):
            tiny(**kwargs).resolved()
    with pytest.raises(UsageError, match="valid choices"):
        tiny(options="attn=flash")


@given(
    st.lists(st.sampled_from(ATTENTION_KERNELS), min_size=1, max_size=4, unique=True),
    st.lists(st.sampled_from(["on", "off"]), min_size=1, max_size=2, unique=True),
    st.lists(st.sampled_from(["text-to-image", "image-to-image", "inpainting"]), min_size=1, max_size=3, unique=True),
)
def test_grid_expands_options_fastest_with_unique_ids(attention, kv, tasks):
    options = option_grid(attention, kv)
    grid = GridSpec(variants=["tiny-sd"], schedulers=["euler", "ddim"], steps=[4], options=options, tasks=tasks)
    cases = grid.expand()
    assert len(cases) == 2 * len(tasks) * len(attention) * len(kv)
    assert len({c.case_id for c in cases}) == len(cases)
    assert [c.options for c in cases[: len(options)]] == options  # the sets of one case are neighbours


def test_loading_order_puts_the_reference_first_and_groups_weight_mutating_sets():
    cases = GridSpec(
        variants=["tiny-sd"], steps=[2], options=[OptimizationSet(quantization="int8wo"), DEFAULT, REFERENCE]
    ).expand()
    ordered = order_for_loading(cases)
    assert [c.options for c in ordered] == [REFERENCE, DEFAULT, OptimizationSet(quantization="int8wo")]


# -- skips, cache keying, undo -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, must_mention",
    [
        ("int4wo", "int4 weight-only kernels (tinygemm) need a CUDA GPU"),
        ("fp8wo", "fp8 needs a GPU with compute capability >= 8.9"),
        ("model-offload", "needs a CUDA device"),
        ("attn=xformers", "xformers"),
        ("compile=reduce-overhead", "CUDA graphs"),
        ("compile+kv-cache", "torch.compile with kv-cache"),
    ],
)
def test_what_cannot_run_here_is_a_skipped_record_with_the_reason_and_loads_nothing(options, must_mention):
    cache = PipelineCache()
    rec = run_case(tiny(options=options), FAST, CPU, cache=cache)
    assert rec["status"] == "skipped" and must_mention in rec["reason"]
    assert len(cache) == 0 and rec["options"]["id"] == OptimizationSet.parse(options).id


def test_a_skip_found_only_when_applying_is_a_skip_and_nothing_is_cached(monkeypatch):
    def refuse(pipe, opts, device=None):
        raise UnsupportedOptimization(
            "quantization int8wo: torchao left every nn.Linear of the UNet unquantized on cpu"
        )

    monkeypatch.setattr(opt_apply, "apply_optimizations", refuse)
    cache = PipelineCache()
    rec = run_case(
        tiny(options="int8wo"), RunOptions(runs=1, warmup=0, count_flops=False, fidelity="off"), CPU, cache=cache
    )
    assert rec["status"] == "skipped" and "unquantized" in rec["reason"]
    assert len(cache) == 0  # the half-mutated pipeline was never cached


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_weight_mutating_sets_get_their_own_pipeline_and_reversible_ones_are_undone(cache):
    plain = cache.get("tiny-sd", "auto", "fp32", CPU)
    stock = {k: type(v) for k, v in plain.pipe.unet.attn_processors.items()}
    for options in ("attn=sliced+kv-cache+vae-slicing", "attn=eager+channels-last"):
        rec = run_case(tiny(options=options), FAST, CPU, cache=cache)
        assert rec["status"] == "ok", rec["reason"]
        assert cache.get("tiny-sd", "auto", "fp32", CPU) is plain  # same cached object, shared
        assert {k: type(v) for k, v in plain.pipe.unet.attn_processors.items()} == stock  # undone
        assert not plain.pipe.vae.use_slicing
    quant = cache.get("tiny-sd", "auto", "fp32", CPU, options=OptimizationSet(quantization="int8wo", attention="eager"))
    assert quant is not plain and quant.key.weight_key == "int8wo" and quant.applied.quantized_layers[0] > 0
    # The reversible part of a set is not in the key: another attention kernel reuses the quantized pipeline.
    assert (
        cache.get("tiny-sd", "auto", "fp32", CPU, options=OptimizationSet(quantization="int8wo", kv_cache=True))
        is quant
    )
    rec = run_case(tiny(options="attn=sliced+int8wo"), FAST, CPU, cache=cache)
    assert rec["status"] == "ok" and rec["options"]["weight_setup_cached"] is True
    assert rec["options"]["quantized_linear_layers"]["quantized"] > 0
    assert all(
        isinstance(p, type(next(iter(quant.pipe.unet.attn_processors.values()))))
        for p in quant.pipe.unet.attn_processors.values()
    )
    assert not any(isinstance(p, SdsuiteAttnProcessor) for p in quant.pipe.unet.attn_processors.values())


# -- effects, fidelity, determinism, sanity ------------------------------------------------------------


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_effects_against_a_measured_reference_and_kv_cache_fidelity(cache):
    ref = run_case(tiny(options=REFERENCE), FAST, CPU, cache=cache)
    assert ref["status"] == "ok" and ref["fidelity"]["checked"] is False
    rec = run_case(tiny(options="attn=sdpa+kv-cache"), FAST, CPU, cache=cache)
    assert rec["status"] == "ok", rec["reason"]
    eff, fid = rec["effects"], rec["fidelity"]
    assert (
        eff["reference_record_id"] == ref["record_id"] and eff["speedup"]["available"] and eff["speedup"]["value"] > 0
    )
    assert eff["peak_memory_reduction"]["available"]
    assert not eff["energy_change"]["available"] and "energy" in eff["energy_change"]["reason"]
    assert fid["checked"] and fid["passed"] and fid["metrics"]["max_abs_diff"]["value"] < 1e-4
    assert rec["options"]["kv_cache_stats"]["hits"] > 0  # the cache really served K/V
    # The default set is compared too once the reference is at hand (auto mode).
    assert run_case(tiny(), FAST, CPU, cache=cache)["fidelity"]["checked"]


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_without_a_measured_reference_fidelity_still_runs_and_speed_is_unavailable_with_the_reason(cache):
    rec = run_case(tiny(options="attn=sliced"), FAST, CPU, cache=cache)
    assert (
        rec["status"] == "ok"
        and rec["fidelity"]["checked"]
        and rec["fidelity"]["metrics"]["max_abs_diff"]["value"] == 0.0
    )
    assert (
        not rec["effects"]["speedup"]["available"]
        and "was not measured in this process" in rec["effects"]["speedup"]["reason"]
    )
    # Reference images at hand (even untimed ones) are used for the default set too.
    assert run_case(tiny(), FAST, CPU, cache=cache)["fidelity"]["checked"]


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_the_default_set_alone_is_not_compared_unless_asked(cache):
    rec = run_case(tiny(), FAST, CPU, cache=cache)
    assert rec["status"] == "ok" and rec["effects"] is None
    assert rec["fidelity"] == {
        "checked": False,
        "reason": (
            "the default set is compared with attn=eager only when that case ran earlier in this process "
            "or with fidelity 'all'"
        ),
    }
    assert run_case(tiny(), dataclasses.replace(FAST, fidelity="all"), CPU, cache=cache)["fidelity"]["passed"]


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_an_option_that_ruins_images_fails_the_case_with_the_reason(cache, monkeypatch):
    def ruined(q, k, v, mask, attn, slice_size):  # an injected broken kernel: attention output replaced by noise
        return torch.randn(q.shape, generator=torch.Generator().manual_seed(0), dtype=q.dtype) * 3

    monkeypatch.setattr(opt_attention, "_sliced_attention", ruined)
    rec = run_case(tiny(options="attn=sliced"), FAST, CPU, cache=cache)
    assert rec["status"] == "failed"
    assert rec["reason"].startswith("fidelity vs attn=eager: output differs from the baseline beyond tolerance:")
    assert rec["fidelity"]["passed"] is False and "PSNR" in rec["fidelity"]["violation"]
    off = run_case(tiny(options="attn=sliced"), dataclasses.replace(FAST, fidelity="off"), CPU, cache=cache)
    assert off["status"] == "ok" and off["fidelity"] == {"checked": False, "reason": "fidelity checks are switched off"}


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_nondeterminism_fails_naming_the_first_differing_stage(cache, monkeypatch):
    loaded = cache.get("tiny-sd", "auto", "fp32", CPU)
    decode = loaded.pipe.vae.decode

    def noisy_decode(*a, **k):
        out = decode(*a, **k)
        sample = out[0] if isinstance(out, tuple) else out.sample
        sample.add_(torch.rand_like(sample) * 0.01)  # different on every call
        return out

    monkeypatch.setattr(loaded.pipe.vae, "decode", noisy_decode)
    rec = run_case(tiny(), dataclasses.replace(FAST, fidelity="off"), CPU, cache=cache)
    assert rec["status"] == "failed" and rec["reason"].startswith("nondeterministic output")
    assert rec["image"]["first_differing_stage"]["stage"] == "image" and "first differ at image" in rec["reason"]


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_black_output_fails_with_the_sanity_reason(cache, monkeypatch):
    loaded = cache.get("tiny-sd", "auto", "fp32", CPU)
    decode = loaded.pipe.vae.decode

    def black(*a, **k):
        out = decode(*a, **k)
        (out[0] if isinstance(out, tuple) else out.sample).fill_(-1.0)  # -1 in VAE space is black
        return out

    monkeypatch.setattr(loaded.pipe.vae, "decode", black)
    rec = run_case(tiny(), FAST, CPU, cache=cache)
    assert (
        rec["status"] == "failed"
        and rec["reason"] == "output images are invalid: blank: output images are all black (every pixel below 1/255)"
    )


# -- tasks, batch shapes, spans, trace ------------------------------------------------------------------


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
@pytest.mark.parametrize("task", ["image-to-image", "inpainting"])
def test_tasks_run_offline_deterministic_and_sane(cache, task):
    rec = run_case(tiny(task=task, steps=4), FAST, CPU, cache=cache)
    assert rec["status"] == "ok", rec["reason"]
    assert rec["image"]["deterministic"] and not rec["image"]["blank"]
    assert (
        rec["task"]["pipeline"]
        == {"image-to-image": "StableDiffusionImg2ImgPipeline", "inpainting": "StableDiffusionInpaintPipeline"}[task]
    )
    assert rec["case"]["strength"] == 0.75 and rec["metrics"]["step_latency_s"]["per_run_steps"] == 3  # int(4 x 0.75)


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_images_per_prompt_multiplies_the_images(cache):
    rec = run_case(tiny(batch_size=2, images_per_prompt=2), FAST, CPU, cache=cache)
    assert rec["status"] == "ok" and rec["image"]["shape"] == [4, 3, 32, 32]
    assert rec["case_id"].endswith("/b2/ipp2")


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_spans_and_trace_are_recorded(cache, tmp_path):
    rec = run_case(
        tiny(options="attn=eager+vae-slicing"), dataclasses.replace(FAST, trace_dir=str(tmp_path)), CPU, cache=cache
    )
    assert rec["status"] == "ok"
    names = [s["name"] for s in rec["spans"]["spans"]]
    assert {"text_encode", "denoise", "decode", "setup:attention_eager", "setup:vae_slicing"} <= set(names)
    assert all(
        s["memory_peak_bytes"] for s in rec["spans"]["spans"] if s["name"] in ("text_encode", "denoise", "decode")
    )
    trace = json.loads(open(rec["trace"]).read())
    assert rec["trace"].startswith(str(tmp_path)) and "attn=eager+vae-slicing" in rec["trace"]
    assert any(e.get("name") == "denoise" for e in trace["traceEvents"])
    no_spans = run_case(tiny(), dataclasses.replace(FAST, spans=False), CPU, cache=cache)
    assert no_spans["spans"] is None and "trace" not in no_spans


@given(
    st.floats(1e-3, 10.0),
    st.floats(1e-3, 10.0),
    st.floats(1e6, 1e10),
    st.floats(1e6, 1e10),
    st.floats(0.1, 100.0),
    st.floats(0.1, 100.0),
)
def test_effect_ratios_are_formed_from_the_medians(lat, ref_lat, mem, ref_mem, energy, ref_energy):
    from sdsuite.quality.effects import ReferenceResult, speed_memory_energy

    def m(lat, mem, energy):
        return {
            "latency_s": {"available": True, "median": lat},
            "peak_memory_bytes": {"available": True, "median": mem},
            "energy_per_image_j": {"available": True, "median": energy},
        }

    eff = speed_memory_energy(m(lat, mem, energy), ReferenceResult("ref", None, "rid", m(ref_lat, ref_mem, ref_energy)))
    assert eff["speedup"]["value"] == pytest.approx(ref_lat / lat)
    assert eff["peak_memory_reduction"]["value"] == pytest.approx(1 - mem / ref_mem)
    assert eff["energy_change"]["value"] == pytest.approx(energy / ref_energy - 1)
    no_meter = m(lat, mem, energy) | {"energy_per_image_j": {"available": False, "reason": "no GPU energy counter"}}
    unavailable = speed_memory_energy(no_meter, ReferenceResult("ref", None, "rid", m(ref_lat, ref_mem, ref_energy)))[
        "energy_change"
    ]
    assert unavailable == {
        "unit": "1",
        "available": False,
        "reason": "energy per image unavailable: no GPU energy counter",
    }
