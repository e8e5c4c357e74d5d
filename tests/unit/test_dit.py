"""The diffusion-transformer generation (SD 3/3.5, FLUX.1): the embedded tiny models, loading, stages, T5."""

import pytest
import torch

from sdsuite.measure.context import RunOptions
from sdsuite.measure.runner import run_case
from sdsuite.pipelines.build import build_in_code, load_pipeline
from sdsuite.pipelines.cache import PipelineCache
from sdsuite.pipelines.dit import initial_latents
from sdsuite.pipelines.registry import VARIANTS
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
