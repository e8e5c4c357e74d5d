"""Optimization options: parsing and ids, skip reasons, attention kernels, the cross-attention K/V cache, undo."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.core.errors import UsageError
from sdsuite.measure.meters.flops import count_flops, cross_attention_kv_flops
from sdsuite.optimizations import support
from sdsuite.optimizations.apply import apply_optimizations
from sdsuite.optimizations.attention import KVCache, SdsuiteAttnProcessor
from sdsuite.optimizations.sets import (
    ATTENTION_KERNELS,
    COMPILE_MODES,
    OFFLOAD_MODES,
    PRESETS,
    QUANTIZATIONS,
    OptimizationSet,
    UnsupportedOptimization,
    option_grid,
    parse_optimization_set,
    parse_optimization_sets,
)
from sdsuite.optimizations.support import supported
from sdsuite.pipelines.build import build_in_code
from sdsuite.pipelines.registry import get_variant

SIZE = 32  # 4x4 latents: the smallest size the tiny UNets and VAEs take
STEPS = 2
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _generate(pipe, prompt="a red bicycle", guidance=7.5, seed=0, latents=None):
    gen = torch.Generator("cpu").manual_seed(seed)
    if latents is None:
        latents = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator("cpu").manual_seed(seed))
    return pipe(
        prompt,
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        latents=latents,
        generator=gen,
        output_type="pt",
    ).images


@pytest.fixture(scope="module")
def tiny_sd():
    return build_in_code(get_variant("tiny-sd"))


@pytest.fixture(scope="module")
def tiny_sdxl():
    return build_in_code(get_variant("tiny-sdxl"))


@pytest.fixture(scope="module")
def pipes(tiny_sd, tiny_sdxl):
    return {"tiny-sd": tiny_sd, "tiny-sdxl": tiny_sdxl}


# -- ids and parsing -----------------------------------------------------------------------------

option_sets = st.builds(
    OptimizationSet,
    attention=st.sampled_from(ATTENTION_KERNELS),
    kv_cache=st.booleans(),
    vae_slicing=st.booleans(),
    vae_tiling=st.booleans(),
    offload=st.sampled_from((None, *OFFLOAD_MODES)),
    compile_mode=st.sampled_from((None, *COMPILE_MODES)),
    channels_last=st.booleans(),
    fused_qkv=st.booleans(),
    quantization=st.sampled_from((None, *QUANTIZATIONS)),
)


@given(option_sets)
def test_id_parses_back_to_the_same_set(s):
    assert parse_optimization_set(s.id) == s
    assert s.id.startswith("attn=") and " " not in s.id and "," not in s.id and "/" not in s.id


@given(option_sets)
def test_weight_key_names_exactly_the_weight_mutating_options(s):
    mutating = bool(s.quantization or s.fused_qkv or s.offload)
    assert s.mutates_weights == mutating
    # Sets that differ only in reversible options share one loaded pipeline.
    assert s.replace(attention="eager", kv_cache=not s.kv_cache, vae_tiling=not s.vae_tiling).weight_key == s.weight_key


def test_id_examples_read_as_documented():
    assert OptimizationSet().id == "attn=sdpa"
    assert parse_optimization_set("attn=eager+vae-tiling+int8wo").id == "attn=eager+vae-tiling+int8wo"
    assert parse_optimization_set("int8wo+vae-tiling+attn=eager").id == "attn=eager+vae-tiling+int8wo"
    assert parse_optimization_set("kv-cache=off+attn=sliced") == OptimizationSet(attention="sliced")
    assert parse_optimization_set("compile=max-autotune").compile_mode == "max-autotune"
    assert parse_optimization_set("quant=int4wo").quantization == "int4wo"


def test_presets_expand_and_later_tokens_override():
    assert parse_optimization_set("baseline") == OptimizationSet(attention="eager")
    fast = parse_optimization_set("fast")
    assert (fast.fused_qkv, fast.channels_last, fast.compile_mode, fast.quantization) == (
        True,
        True,
        "max-autotune",
        "int8dq",
    )
    assert parse_optimization_set("fast+attn=eager+compile=off").attention == "eager"
    assert parse_optimization_set("fast+compile=off").compile_mode is None
    assert parse_optimization_set("memory-saver+model-offload").offload == "model"
    assert set(PRESETS) == {"baseline", "memory-saver", "fast"}


@pytest.mark.parametrize(
    ("text", "must_mention"),
    [
        ("attn=flash", ["attention", "'flash'", "sdpa", "eager", "sliced", "xformers"]),
        ("turbo", ["'turbo'", "baseline", "memory-saver", "fast", "kv-cache"]),
        ("kv-cache=maybe", ["on or off", "'maybe'"]),
        ("compile=fastest", ["torch.compile mode", "reduce-overhead"]),
        ("quant=int2", ["quantization", "int8wo", "int4wo"]),
        ("", ["empty optimization set"]),
    ],
)
def test_bad_strings_fail_with_the_valid_choices(text, must_mention):
    with pytest.raises(UsageError) as err:
        parse_optimization_set(text)
    for word in must_mention:
        assert word in str(err.value)


def test_direct_construction_is_validated():
    with pytest.raises(UsageError, match="valid choices"):
        OptimizationSet(attention="flash")
    with pytest.raises(UsageError, match="int8wo"):
        OptimizationSet(quantization="int3")


def test_comma_lists_make_sets_without_duplicates():
    sets = parse_optimization_sets(["baseline,fast", "attn=eager"])
    assert [s.id for s in sets] == [PRESETS["baseline"].id, PRESETS["fast"].id]
    assert parse_optimization_sets(None) == [OptimizationSet()]


def test_attention_by_kv_cache_grid():
    grid = option_grid(attention=["eager", "sdpa", "sliced"], kv_cache=["on", "off"])
    assert len(grid) == 6
    assert {(s.attention, s.kv_cache) for s in grid} == {
        (a, k) for a in ("eager", "sdpa", "sliced") for k in (True, False)
    }
    # A recipe keeps its own attention unless the attention axis is given.
    assert [s.attention for s in option_grid(recipes=["memory-saver"])] == ["sliced"]
    assert [s.attention for s in option_grid(attention=["eager"], recipes=["memory-saver"])] == ["eager"]
    with pytest.raises(UsageError, match="on, off"):
        option_grid(kv_cache=["sometimes"])


# -- skip reasons ------------------------------------------------------------------------------


def test_plain_options_run_on_the_cpu():
    for text in ("attn=sdpa", "baseline", "memory-saver", "attn=sliced+kv-cache+channels-last+fused-qkv", "compile"):
        assert supported(parse_optimization_set(text), CPU) is None, text


@pytest.mark.parametrize(
    ("text", "must_mention"),
    [
        ("model-offload", ["CUDA", "cpu"]),
        ("sequential-offload", ["CUDA"]),
        ("int4wo", ["int4", "CUDA"]),
        ("fp8wo", ["fp8", "8.9"]),
        ("fp8dq", ["fp8", "8.9"]),
        ("compile=reduce-overhead", ["CUDA graphs", "compile=default"]),
        ("compile+kv-cache", ["kv-cache", "recompile"]),
        ("fast", ["quantization", "int8dq"])
        if importlib.util.find_spec("torchao") is None
        else ("fast+compile=reduce-overhead", ["CUDA graphs"]),
    ],
)
def test_what_cannot_run_here_says_why(text, must_mention):
    reason = supported(parse_optimization_set(text), CPU)
    assert reason is not None
    if text in ("int4wo", "fp8wo", "fp8dq") and importlib.util.find_spec("torchao") is None:
        must_mention = ["torchao is not installed", "sdsuite[quant]"]  # the first missing piece is named
    for word in must_mention:
        assert word in reason


def test_xformers_skip_reason_names_the_missing_piece():
    reason = supported(OptimizationSet(attention="xformers"), CPU)
    assert reason is not None
    assert ("not installed" in reason) if importlib.util.find_spec("xformers") is None else ("CUDA" in reason)


def test_missing_packages_are_skip_reasons(monkeypatch):
    monkeypatch.setattr(support, "_has", lambda name: False)
    assert "sdsuite[quant]" in supported(OptimizationSet(quantization="int8wo"), CPU)
    assert "accelerate" in supported(OptimizationSet(offload="model"), CPU)
    assert "xformers is not installed" in supported(OptimizationSet(attention="xformers"), CPU)
    monkeypatch.setattr(support, "_cxx_compiler", lambda: None)
    assert "C++ compiler" in supported(OptimizationSet(compile_mode="default"), CPU)


def test_applying_an_unsupported_set_raises_the_skip_reason_before_touching_the_pipeline(tiny_sd):
    before = dict(tiny_sd.unet.attn_processors)
    with pytest.raises(UnsupportedOptimization, match="CUDA"):
        apply_optimizations(tiny_sd, OptimizationSet(attention="eager", offload="model"), CPU)
    assert tiny_sd.unet.attn_processors == before


# -- attention kernels at the module level -----------------------------------------------------


def _attention_module(cross: bool, fused: bool):
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=24 if cross else None, heads=4, dim_head=8).eval()
    if fused:
        attn.fuse_projections(fuse=True)
    return attn


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_kernels_match_diffusers_reference_processors(cross, masked):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, SlicedAttnProcessor

    attn = _attention_module(cross, fused=False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 32, generator=g)
    ctx = torch.randn(2, 7, 24, generator=g) if cross else None
    mask = None
    if masked:
        mask = torch.zeros(2, 1, 7 if cross else 16)
        mask[:, :, -2:] = -10000.0  # the last two tokens are padding
    with torch.no_grad():
        ref = {
            "sdpa": AttnProcessor2_0()(attn, x, ctx, mask),
            "eager": AttnProcessor()(attn, x, ctx, mask),
            "sliced": SlicedAttnProcessor(2)(attn, x, ctx, mask),
        }
        for kernel, expected in ref.items():
            got = SdsuiteAttnProcessor(kernel, slice_size=2)(attn, x, ctx, mask)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=f"{kernel} differs from diffusers")
        got = SdsuiteAttnProcessor("sdpa", kv_cache=KVCache())(attn, x, ctx, mask)
        torch.testing.assert_close(got, ref["sdpa"], rtol=0, atol=0)


@pytest.mark.parametrize("cross", [False, True])
def test_fused_projections_give_the_unfused_result(cross):
    from diffusers.models.attention_processor import AttnProcessor2_0

    attn = _attention_module(cross, fused=False)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 9, 32, generator=g)
    ctx = torch.randn(1, 5, 24, generator=g) if cross else None
    with torch.no_grad():
        expected = AttnProcessor2_0()(attn, x, ctx)
        attn.fuse_projections(fuse=True)
        for kernel in ("sdpa", "eager"):
            torch.testing.assert_close(
                SdsuiteAttnProcessor(kernel, KVCache())(attn, x, ctx), expected, rtol=1e-5, atol=1e-5
            )


# -- the K/V cache -------------------------------------------------------------------------------


def test_kv_cache_reuses_only_the_same_unmodified_tensor():
    cache = KVCache()
    layer = torch.nn.Identity()
    calls = []

    def compute(t):
        calls.append(1)
        return t * 2, t * 3

    ctx = torch.ones(1, 3, 4)
    k1, _ = cache.get(layer, ctx, lambda: compute(ctx))
    k2, _ = cache.get(layer, ctx, lambda: compute(ctx))
    assert k1 is k2 and len(calls) == 1
    ctx.add_(1.0)  # in-place change: the version counter moves, the entry is stale
    k3, _ = cache.get(layer, ctx, lambda: compute(ctx))
    assert len(calls) == 2 and torch.equal(k3, ctx * 2)
    other = ctx.clone()  # equal values, different tensor: a new generation, recompute
    cache.get(layer, other, lambda: compute(other))
    assert len(calls) == 3
    assert cache.stats() == {"hits": 1, "misses": 3, "hit_rate": 0.25, "entries": 1}
    cache.clear()
    assert len(cache) == 0


def _unet_calls(pipe, fn):
    count = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, a: count.append(1))
    try:
        fn()
    finally:
        handle.remove()
    return len(count)


def _cross_attention_layers(pipe):
    from diffusers.models.attention_processor import Attention

    return sum(1 for m in pipe.unet.modules() if isinstance(m, Attention) and m.is_cross_attention)


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
@pytest.mark.parametrize("variant", ["tiny-sd", "tiny-sdxl"])
@pytest.mark.parametrize("guidance", [7.5, 1.0], ids=["cfg", "no-cfg"])
def test_attention_by_kv_cache_matrix_matches_the_uncached_output(pipes, variant, guidance):
    pipe = pipes[variant]
    reference = _generate(pipe, guidance=guidance)
    other_prompt_reference = _generate(pipe, prompt="a lighthouse at night", guidance=guidance)
    assert not torch.equal(reference, other_prompt_reference)
    layers = _cross_attention_layers(pipe)
    for kernel in ("eager", "sdpa", "sliced"):
        outputs = {}
        for kv in (False, True):
            applied = apply_optimizations(pipe, OptimizationSet(attention=kernel, kv_cache=kv), CPU)
            try:
                images = []
                evals = _unet_calls(pipe, lambda images=images: images.append(_generate(pipe, guidance=guidance)))
                outputs[kv] = images[0]
                if kv:
                    # Every cross-attention layer misses once per generation and hits on every later step.
                    assert applied.kv_cache.stats()["misses"] == layers
                    assert applied.kv_cache.stats()["hits"] == layers * (evals - 1)
                    # A new prompt in the next generation is never served stale K/V.
                    torch.testing.assert_close(
                        _generate(pipe, prompt="a lighthouse at night", guidance=guidance),
                        other_prompt_reference,
                        rtol=0,
                        atol=1e-5,
                    )
            finally:
                applied.undo()
        torch.testing.assert_close(
            outputs[True], outputs[False], rtol=0, atol=1e-6, msg=f"{variant} {kernel}: K/V cache changed the output"
        )
        torch.testing.assert_close(
            outputs[False], reference, rtol=0, atol=1e-5, msg=f"{variant} {kernel}: kernel drifted from SDPA"
        )
    assert torch.equal(_generate(pipe, guidance=guidance), reference), "undo did not restore the default processors"


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_kv_cache_saves_exactly_the_cross_attention_projection_flops(tiny_sd):
    flops = {}
    evals = _unet_calls(tiny_sd, lambda: _generate(tiny_sd))
    for kv in (False, True):
        applied = apply_optimizations(tiny_sd, OptimizationSet(kv_cache=kv), CPU)
        try:
            flops[kv] = count_flops(lambda: _generate(tiny_sd))
        finally:
            applied.undo()
    text_tokens = tiny_sd.tokenizer.model_max_length
    per_eval = cross_attention_kv_flops(tiny_sd.unet, batch=2, text_tokens=text_tokens)  # CFG doubles the UNet batch
    assert per_eval > 0
    assert flops[False] - flops[True] == (evals - 1) * per_eval


# -- applying and undoing ------------------------------------------------------------------------


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_reversible_options_are_applied_recorded_and_undone(tiny_sd):
    reference = _generate(tiny_sd)
    conv = next(m for m in tiny_sd.unet.modules() if isinstance(m, torch.nn.Conv2d))
    s = OptimizationSet(attention="eager", kv_cache=True, vae_slicing=True, vae_tiling=True, channels_last=True)
    applied = apply_optimizations(tiny_sd, s, CPU)
    assert tiny_sd.vae.use_slicing and tiny_sd.vae.use_tiling
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert {type(p) for p in tiny_sd.unet.attn_processors.values()} == {SdsuiteAttnProcessor}
    out = _generate(tiny_sd)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    rec = applied.to_record()
    assert rec["id"] == s.id and rec["weight_key"] == ""
    assert set(rec["setup_s"]) == {"attention_eager_kv_cache", "vae_slicing", "vae_tiling", "channels_last"}
    assert rec["kv_cache_stats"]["hits"] > 0
    assert not applied.needs_fresh_pipeline
    applied.undo()
    applied.undo()  # idempotent
    assert not tiny_sd.vae.use_slicing and not tiny_sd.vae.use_tiling and conv.weight.is_contiguous()
    assert torch.equal(_generate(tiny_sd), reference)


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)  # raised by importing dynamo
def test_compile_wraps_the_unet_lazily_and_undo_restores_it(tiny_sd):
    original = tiny_sd.unet
    applied = apply_optimizations(tiny_sd, OptimizationSet(compile_mode="default"), CPU)
    try:
        assert tiny_sd.unet is not original and getattr(tiny_sd.unet, "_orig_mod", None) is original
        assert "compile_unet" in applied.setup_s
    finally:
        applied.undo()
    assert tiny_sd.unet is original


@pytest.fixture
def fresh_tiny_sd():
    return build_in_code(get_variant("tiny-sd"))


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_fused_qkv_mutates_structure_and_refuses_undo(fresh_tiny_sd, tiny_sd):
    reference = _generate(tiny_sd)
    applied = apply_optimizations(fresh_tiny_sd, OptimizationSet(fused_qkv=True, kv_cache=True, attention="eager"), CPU)
    torch.testing.assert_close(_generate(fresh_tiny_sd), reference, rtol=0, atol=1e-5)
    assert applied.needs_fresh_pipeline and applied.options.weight_key == "fused-qkv"
    with pytest.raises(UsageError, match="load a fresh pipeline"):
        applied.undo()


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed (extra: quant)")
@pytest.mark.parametrize("scheme", ["int8wo", "int8dq"])
def test_int8_quantization_replaces_every_unet_linear_and_stays_close(fresh_tiny_sd, tiny_sd, scheme):
    from sdsuite.quality.fidelity import psnr

    reference = _generate(tiny_sd)
    applied = apply_optimizations(fresh_tiny_sd, OptimizationSet(quantization=scheme), CPU)
    quantized, total = applied.quantized_layers
    assert total > 0 and quantized == total
    out = _generate(fresh_tiny_sd)
    assert not torch.equal(out, reference), "quantization had no effect on the output"
    assert psnr(out, reference) > 30.0
    assert applied.to_record()["quantized_linear_layers"] == {"quantized": total, "total": total}


def test_a_failing_step_rolls_back_what_was_applied(tiny_sd, monkeypatch):
    before = dict(tiny_sd.unet.attn_processors)

    def broken():
        raise RuntimeError("tiling exploded")

    monkeypatch.setattr(tiny_sd.vae, "enable_tiling", broken)
    with pytest.raises(RuntimeError, match="tiling exploded"):
        apply_optimizations(tiny_sd, OptimizationSet(attention="eager", vae_slicing=True, vae_tiling=True), CPU)
    assert tiny_sd.unet.attn_processors == before and not tiny_sd.vae.use_slicing
