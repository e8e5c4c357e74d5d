"""The diffusion-transformer generation (SD 3/3.5, FLUX.1): the embedded tiny models, loading, stages, T5."""

import pytest
import torch

from sdsuite.measure.context import RunOptions
from sdsuite.measure.runner import run_case
from sdsuite.pipelines.build import build_in_code, load_pipeline
from sdsuite.pipelines.cache import PipelineCache
from sdsuite.pipelines.dit import initial_latents
from sdsuite.pipelines.registry import VARIANTS, schedulers_for
from sdsuite.pipelines.tiny_tokenizers import tiny_t5_tokenizer
from sdsuite.spec.case import Case

DIT_TINY = ["tiny-sd3", "tiny-flux"]


@pytest.fixture(scope="module")
def tiny_dit_pipes():
    """Fresh tiny-sd3 and tiny-flux pipelines on the CPU (not the shared cache)."""
    return {v: build_in_code(VARIANTS[v]) for v in DIT_TINY}


def _call(pipe, variant, steps=2):
    lat = initial_latents(pipe, 1, 64, 64, seed=0)
    kw = dict(prompt="a red fox in the snow", num_inference_steps=steps, height=64, width=64, latents=lat)
    return pipe(**kw, output_type="pt", max_sequence_length=VARIANTS[variant].max_sequence_length).images


def test_the_shipped_t5_tokenizer_is_small_and_t5_shaped():
    tok = tiny_t5_tokenizer()
    ids = tok("a photograph of an astronaut riding a horse, Zebra 42!").input_ids
    assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0  # T5's conventions: </s> appended, pad 0
    assert tok.unk_token_id not in ids  # every printable ASCII character is a piece: nothing unknown
    assert len(tok) <= VARIANTS["tiny-sd3"].t5["vocab_size"]  # every id fits the tiny T5 embedding
    padded = tok(["hi"], padding="max_length", max_length=8, truncation=True).input_ids[0]
    assert len(padded) == 8 and padded[-1] == 0


@pytest.mark.parametrize("variant", DIT_TINY)
def test_tiny_dit_pipelines_have_the_real_component_structure(tiny_dit_pipes, variant):
    pipe = tiny_dit_pipes[variant]
    assert type(pipe).__name__ == VARIANTS[variant].pipeline_class
    assert pipe.vae.config.latent_channels == 16 and type(pipe.scheduler).__name__.startswith("FlowMatch")
    t5 = pipe.text_encoder_3 if variant == "tiny-sd3" else pipe.text_encoder_2
    assert type(t5).__name__ == "T5EncoderModel"
    if variant == "tiny-flux":
        assert pipe.transformer.config.guidance_embeds and pipe.transformer.config.num_single_layers > 0
    else:
        assert pipe.transformer.config.dual_attention_layers  # an MMDiT-X block, as in SD 3.5 medium


@pytest.mark.parametrize("variant", DIT_TINY)
def test_tiny_dit_generation_is_deterministic_and_not_blank(tiny_dit_pipes, variant):
    pipe = tiny_dit_pipes[variant]
    a, b = _call(pipe, variant), _call(pipe, variant)
    assert a.shape == (1, 3, 64, 64) and torch.equal(a, b)
    assert bool(torch.isfinite(a).all()) and float(a.std()) > 1e-3


def test_flux_latents_are_packed_and_sd3_latents_are_not(tiny_dit_pipes):
    assert initial_latents(tiny_dit_pipes["tiny-flux"], 2, 64, 64, seed=1).shape == (2, 16, 64)  # (64/16)^2, 16*4
    assert initial_latents(tiny_dit_pipes["tiny-sd3"], 2, 64, 64, seed=1).shape == (2, 16, 8, 8)


@pytest.mark.slow  # writes and reads back seven components, then a measured run (~0.4-0.8 s each)
@pytest.mark.parametrize("variant", DIT_TINY)
def test_saved_dit_pipeline_loads_back_offline_and_gives_the_same_image(tmp_path, tiny_dit_pipes, variant, cpu):
    pipe = tiny_dit_pipes[variant]
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").exists()
    loaded = load_pipeline(VARIANTS[variant], str(tmp_path), torch.float32)
    assert type(loaded) is type(pipe)
    assert torch.equal(_call(loaded, variant), _call(pipe, variant))
    rec = run_case(
        Case(variant, steps=2),
        RunOptions(runs=1, warmup=0, weights=str(tmp_path), count_flops=False, spans=False),
        cpu,
        cache=PipelineCache(),
    )
    assert rec["status"] == "ok", rec["reason"]
    assert rec["weights"] == {"source": str(tmp_path), "kind": "path"}


def test_sd3_without_t5_loads_and_runs_with_clip_alone(tmp_path, tiny_dit_pipes):
    tiny_dit_pipes["tiny-sd3"].save_pretrained(tmp_path)
    pipe = load_pipeline(VARIANTS["tiny-sd3"], str(tmp_path), torch.float32, with_t5=False)
    assert pipe.text_encoder_3 is None
    out = _call(pipe, "tiny-sd3")
    assert bool(torch.isfinite(out).all()) and not torch.equal(out, _call(tiny_dit_pipes["tiny-sd3"], "tiny-sd3"))


@pytest.mark.parametrize("variant", DIT_TINY)
def test_a_dit_record_times_clip_and_t5_apart(variant, cpu):
    rec = run_case(Case(variant, steps=2), RunOptions(runs=2, warmup=0, count_flops=False, spans=False), cpu)
    assert rec["status"] == "ok", rec["reason"]
    m = rec["metrics"]
    clip, t5, text = (m[k]["median"] for k in ("text_encode_clip_s", "text_encode_t5_s", "text_encode_s"))
    assert 0 < clip and 0 < t5 and clip + t5 <= text  # both encoders ran inside the text-encoding stage
    assert m["denoise_s"]["available"] and m["vae_decode_s"]["available"]
    assert len(m["step_latency_s"]["samples"]) == 2 * 2


# -- FLOPs: the counter against an analytic count (2 FLOPs per multiply-add of every matmul, conv and attention) --


def t5_encoder_flops(cfg: dict, tokens: int) -> int:
    """One T5 encoder pass over ``tokens`` tokens: QKVO projections, QK^T and AV, the gated FFN, per layer."""
    d, inner, dff, n = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"], tokens
    per_layer = 4 * 2 * n * d * inner + 2 * 2 * n * n * inner + 2 * 2 * n * d * dff + 2 * n * dff * d
    return cfg["num_layers"] * per_layer


def sd3_transformer_flops(cfg: dict, img_tokens: int, txt_tokens: int) -> int:
    """One SD3Transformer2DModel evaluation of one sample (MMDiT joint attention, MMDiT-X dual blocks)."""
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    p, c = cfg["patch_size"], cfg["in_channels"]
    n_i, n_t = img_tokens, txt_tokens
    n = n_i + n_t
    total = 2 * n_i * c * p * p * dim  # patch embedding
    total += 2 * (256 * dim + dim * dim) + 2 * (cfg["pooled_projection_dim"] * dim + dim * dim)  # timestep, pooled
    total += 2 * n_t * cfg["joint_attention_dim"] * cfg["caption_projection_dim"]  # context embedder
    for i in range(cfg["num_layers"]):
        last = i == cfg["num_layers"] - 1  # context_pre_only: the text stream ends after feeding the attention
        dual = i in cfg.get("dual_attention_layers", ())
        total += 2 * dim * (9 if dual else 6) * dim + 2 * dim * (2 if last else 6) * dim  # adaLN modulations
        total += 3 * 2 * n * dim * dim + 4 * n * n * dim + 2 * n_i * dim * dim  # joint QKV, QK^T + AV, image out
        if not last:
            total += 2 * n_t * dim * dim + 16 * n_t * dim * dim  # text out projection, text MLP (4x)
        if dual:
            total += 4 * 2 * n_i * dim * dim + 4 * n_i * n_i * dim  # the image-only second attention
        total += 16 * n_i * dim * dim  # image MLP (4x)
    return total + 2 * dim * 2 * dim + 2 * n_i * dim * p * p * cfg["out_channels"]  # output modulation, projection


def flux_transformer_flops(cfg: dict, img_tokens: int, txt_tokens: int) -> int:
    """One FluxTransformer2DModel evaluation of one sample (double-stream blocks, then single-stream blocks)."""
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    n_i, n_t = img_tokens, txt_tokens
    n = n_i + n_t
    total = 2 * n_i * cfg["in_channels"] * dim + 2 * n_t * cfg["joint_attention_dim"] * dim  # image, text embedders
    timestep = 2 * (256 * dim + dim * dim)  # the guidance embedding (dev) is a second timestep MLP
    total += timestep * (2 if cfg["guidance_embeds"] else 1) + 2 * (cfg["pooled_projection_dim"] * dim + dim * dim)
    for _ in range(cfg["num_layers"]):  # double stream: image and text with their own weights, joint attention
        total += 2 * 2 * dim * 6 * dim  # two adaLN-Zero modulations
        total += 3 * 2 * n * dim * dim + 4 * n * n * dim + 2 * n * dim * dim  # QKV, QK^T + AV, out projections
        total += 16 * n * dim * dim  # the two MLPs (4x)
    for _ in range(cfg["num_single_layers"]):  # single stream: one sequence, attention and MLP in parallel
        total += 2 * dim * 3 * dim + 2 * n * dim * 4 * dim + 3 * 2 * n * dim * dim + 4 * n * n * dim
        total += 2 * n * 5 * dim * dim  # the output projection of [attention, MLP]
    return total + 2 * dim * 2 * dim + 2 * n_i * dim * cfg["in_channels"]  # output modulation, projection


def test_counted_flux_transformer_flops_match_the_analytic_count(tiny_dit_pipes):
    from sdsuite.measure.meters.flops import count_flops_by_module

    spec, pipe = VARIANTS["tiny-flux"], tiny_dit_pipes["tiny-flux"]
    for height, width, steps in ((64, 64, 2), (128, 64, 1)):
        _, by = count_flops_by_module(
            lambda h=height, w=width, s=steps: pipe(
                prompt="a fox", height=h, width=w, num_inference_steps=s, max_sequence_length=32, output_type="pt"
            ),
            {"transformer": pipe.transformer, "t5": pipe.text_encoder_2},
        )
        img_tokens = (height // 16) * (width // 16)  # 2x2 latent patches packed into tokens
        # FLUX has no classifier-free guidance batch (guidance is embedded) and attends to the T5 tokens only.
        assert by["transformer"] == steps * flux_transformer_flops(spec.transformer, img_tokens, 32)
        assert by["t5"] == t5_encoder_flops(spec.t5, 32)


@pytest.mark.parametrize("height, width, steps", [(64, 64, 2), (128, 64, 1)])
def test_counted_transformer_and_t5_flops_match_the_analytic_count(tiny_dit_pipes, height, width, steps):
    from sdsuite.measure.meters.flops import count_flops_by_module

    spec, pipe = VARIANTS["tiny-sd3"], tiny_dit_pipes["tiny-sd3"]
    parts = {"transformer": pipe.transformer, "t5": pipe.text_encoder_3}
    total, by = count_flops_by_module(
        lambda: pipe(
            prompt="a fox", height=height, width=width, num_inference_steps=steps, guidance_scale=7.0,
            max_sequence_length=spec.max_sequence_length, output_type="pt",
        ),
        parts,
    )  # fmt: skip
    cfg = spec.transformer
    img_tokens = (height // 8 // cfg["patch_size"]) * (width // 8 // cfg["patch_size"])
    txt_tokens = 77 + spec.max_sequence_length  # CLIP's 77 tokens beside T5's
    cfg_batch = 2  # classifier-free guidance: the prompt and the (empty) negative prompt
    assert by["transformer"] == steps * cfg_batch * sd3_transformer_flops(cfg, img_tokens, txt_tokens)
    assert by["t5"] == cfg_batch * t5_encoder_flops(spec.t5, spec.max_sequence_length)
    assert total > by["transformer"] + by["t5"]  # CLIP and the VAE decoder on top


# -- optimizations on the DiT generation --


@pytest.mark.parametrize(
    "token, variant, reason",
    [
        ("kv-cache", "tiny-sd3", "K/V cache is UNet-only"),
        ("attn=sliced", "tiny-flux", "keeps diffusers' own processors"),
        ("channels-last", "tiny-sd3", "no 4-D convolutions"),
        ("no-t5", "tiny-flux", "FLUX.1 needs T5"),
        ("no-t5", "tiny-sdxl", "has no T5 encoder"),
    ],
)
def test_options_a_family_cannot_run_are_skipped_with_the_reason(token, variant, reason, cpu):
    from sdsuite.optimizations.sets import parse_optimization_set
    from sdsuite.optimizations.support import supported

    assert reason in supported(parse_optimization_set(token), cpu, "float32", family=VARIANTS[variant].family)
    rec = run_case(Case(variant, steps=1, options=token), RunOptions(runs=1, warmup=0), cpu, cache=PipelineCache())
    assert rec["status"] == "skipped" and reason in rec["reason"]


def test_no_t5_builds_sd3_without_its_t5_and_reports_it(cpu):
    cache = PipelineCache()
    rec = run_case(
        Case("tiny-sd3", steps=2, options="no-t5"), RunOptions(runs=1, warmup=0, spans=False), cpu, cache=cache
    )
    assert rec["status"] == "ok", rec["reason"]
    assert "text_encoder_3" not in rec["params"] and "text_encoder_2" in rec["params"]
    t5 = rec["metrics"]["text_encode_t5_s"]
    assert not t5["available"] and "dropped" in t5["reason"]
    assert "text_encoder_3" not in rec["flops_by_component"]


def test_eager_attention_on_a_dit_runs_plain_math_sdpa_and_is_undone(tiny_dit_pipes):
    from sdsuite.optimizations.apply import apply_optimizations
    from sdsuite.optimizations.sets import parse_optimization_set

    pipe = tiny_dit_pipes["tiny-flux"]
    sdpa = _call(pipe, "tiny-flux")
    applied = apply_optimizations(pipe, parse_optimization_set("attn=eager"), "cpu")
    assert "forward" in vars(pipe.transformer)  # the math-kernel wrapper is installed
    eager = _call(pipe, "tiny-flux")
    applied.undo()
    assert "forward" not in vars(pipe.transformer)
    assert torch.allclose(eager, sdpa, atol=1e-4) and torch.equal(_call(pipe, "tiny-flux"), sdpa)


@pytest.mark.parametrize("variant, task", [("tiny-sd3", "image-to-image"), ("tiny-flux", "inpainting")])
def test_dit_image_tasks_run_on_the_diffusers_task_pipelines(variant, task, cpu):
    from sdsuite.spec.tasks import task_pipeline

    case = Case(variant, steps=2, task=task, strength=0.5)
    rec = run_case(case, RunOptions(runs=1, warmup=0, count_flops=False, spans=False), cpu)
    assert rec["status"] == "ok", rec["reason"]
    expected = {"image-to-image": "Img2ImgPipeline", "inpainting": "InpaintPipeline"}[task]
    pipe = task_pipeline(build_in_code(VARIANTS[variant]), task)
    assert type(pipe).__name__ == VARIANTS[variant].pipeline_class.replace("Pipeline", expected)


def test_the_table_shows_the_stage_medians_with_the_clip_t5_split():
    from sdsuite.measure.display import fmt_stages

    def m(v):
        return {"available": True, "median": v, "n": 3}

    dit = {"text_encode_s": m(51.2), "text_encode_clip_s": m(2.88), "text_encode_t5_s": m(48.3)}
    dit |= {"denoise_s": m(23.1), "vae_decode_s": m(0.0033)}
    assert fmt_stages(dit) == "51.200 s [clip 2.880 s + t5 48.300 s] · 23.100 s · 3.3 ms"
    dropped = dit | {"text_encode_t5_s": {"available": False, "reason": "dropped"}}
    assert "[clip 2.880 s + no t5]" in fmt_stages(dropped)
    unet = {k: v for k, v in dit.items() if "clip" not in k and "t5" not in k}
    assert fmt_stages(unet) == "51.200 s · 23.100 s · 3.3 ms" and fmt_stages({}) == "n/a"


def test_each_variant_gets_its_default_precision_and_the_quick_suite_its_flow_default():
    from sdsuite.spec.grid import build_grids, expand_grids

    flags = {"variant": "sd3.5-large,tiny-flux,sdxl"}
    (grid,), _ = build_grids(flags.get)
    assert [(c.variant, c.precision) for c in grid.expand()] == [
        ("sd3.5-large", "bf16"), ("tiny-flux", "fp32"), ("sdxl", "fp32"),
    ]  # fmt: skip
    assert build_grids({"variant": "sd3.5-large", "precision": "fp16"}.get)[0][0].expand()[0].precision == "fp16"
    suite = expand_grids(build_grids({}.get, suite=True)[0])  # the plugin's quick grid
    assert {(c.variant, c.scheduler) for c in suite if VARIANTS[c.variant].is_dit} == {
        ("tiny-sd3", "default"), ("tiny-flux", "default"),
    }  # fmt: skip
    assert {c.scheduler for c in suite if c.variant == "tiny-sd"} == {"euler", "dpm++2m", "ddim"}


@pytest.mark.parametrize(
    "variant, scheduler",
    [(v, s) for v in DIT_TINY for s in schedulers_for(VARIANTS[v]) if s != "default"],
)
def test_every_flow_scheduler_offered_for_a_family_runs_on_it(tiny_dit_pipes, variant, scheduler):
    import diffusers

    from sdsuite.pipelines.registry import get_scheduler

    pipe = tiny_dit_pipes[variant]
    base = pipe.scheduler
    spec = get_scheduler(scheduler)
    try:
        pipe.scheduler = getattr(diffusers, spec.class_name).from_config(base.config, **spec.overrides)
        images = _call(pipe, variant)
    finally:
        pipe.scheduler = base
    assert bool(torch.isfinite(images).all()) and float(images.std()) > 1e-3


@pytest.mark.slow  # four batch sizes, simulated energy windows of >= 0.1 s, CLI imports: ~3-7 s
def test_energy_per_image_is_the_whole_call_window_over_its_images_at_batch_1_to_8(tmp_path):
    """ML.ENERGY's method: one window around whole generation calls, divided by the images generated in it."""
    import json

    from sdsuite.cli.main import main

    out = tmp_path / "r"
    args = ["run", "--variant", "tiny-flux", "--batch-size", "1,2,4,8", "--telemetry", "sim", "--gpu-model", "h100"]
    args += ["--runs", "2", "--warmup", "0", "--steps", "2", "--no-flops", "--no-spans", "--no-progress"]
    assert main([*args, "--min-energy-window", "0.1", "--out", str(out)]) == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["case"]["batch_size"] for r in recs] == [1, 2, 4, 8]
    for r in recs:
        windows, b = r["energy_windows"], r["case"]["batch_size"]
        expected = [w["energy_j"] / w["generations"] / b for w in windows]  # whole calls, every image in the window
        assert r["metrics"]["energy_per_image_j"]["samples"] == pytest.approx(expected)
        assert r["simulated"] is True and r["metrics"]["latency_s"]["n"] == 2


@pytest.mark.slow  # importing dynamo for torch.compile (~0.7 s), as the UNet's compile test
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # dynamo's import
def test_compile_wraps_the_transformer_and_undo_restores_it(tiny_dit_pipes):
    from sdsuite.optimizations.apply import apply_optimizations
    from sdsuite.optimizations.sets import parse_optimization_set
    from sdsuite.optimizations.support import supported

    opts = parse_optimization_set("compile")
    if reason := supported(opts, "cpu", "float32", family="sd3"):
        pytest.skip(reason)
    pipe = tiny_dit_pipes["tiny-sd3"]
    original = pipe.transformer
    applied = apply_optimizations(pipe, opts, "cpu")  # lazy: nothing compiles until the first call
    assert pipe.transformer is not original and pipe.transformer._orig_mod is original
    assert "compile_transformer" in applied.setup_s
    applied.undo()
    assert pipe.transformer is original


@pytest.mark.parametrize("variant", ["tiny-sd3", "tiny-flux", "flux.1-dev"])
def test_a_dit_side_that_is_not_a_multiple_of_16_is_refused_naming_the_nearest(variant):
    # The pipelines would round it down and measure a smaller image under the asked size's name.
    from sdsuite.core.errors import UsageError

    with pytest.raises(UsageError, match=r"height must be a multiple of 16 for .* got 72; use 64 or 80"):
        Case(variant, "default", height=72, width=64).resolved()
    assert Case(variant, "default", height=80, width=64).resolved().height == 80
