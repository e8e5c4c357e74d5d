"""The real architectures built from sdsuite's configs match the published parameter counts."""

import pytest
import torch

from sdsuite.pipelines import build, random_init
from sdsuite.pipelines.registry import VARIANTS

# ../shared/REFERENCE.md section 1 (millions of parameters).
UNET_M = {"sd-v1.5": 859.5, "sd-v2.1": 866.0, "sdxl": 2570.0}
VAE_M = 83.7
TEXT_M = {"sd-v1.5": [123.0], "sd-v2.1": [340.0], "sdxl": [123.0, 695.0]}


def _count(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
@pytest.mark.parametrize("variant", sorted(UNET_M))
def test_parameter_counts_match_reference(variant):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = VARIANTS[variant]
    with torch.device("meta"):  # shapes only: no memory, no init time
        unet = UNet2DConditionModel(**spec.unet)
        vae = AutoencoderKL(**spec.vae)
        texts = [
            (CLIPTextModelWithProjection if i == 1 else CLIPTextModel)(CLIPTextConfig(**cfg))
            for i, cfg in enumerate(spec.text_encoders)
        ]
    assert _count(unet) == pytest.approx(UNET_M[variant], rel=0.005)
    assert _count(vae) == pytest.approx(VAE_M, rel=0.005)
    assert [_count(t) for t in texts] == pytest.approx(TEXT_M[variant], rel=0.005)


@pytest.mark.parametrize("variant", ["sd-v1.4", "sd-v2.0", "sd-turbo", "sdxl-turbo"])
def test_sibling_variants_share_their_family_architecture(variant):
    family = {"sd-v1.4": "sd-v1.5", "sd-v2.0": "sd-v2.1", "sd-turbo": "sd-v2.1", "sdxl-turbo": "sdxl"}[variant]
    a, b = VARIANTS[variant], VARIANTS[family]
    keys = ("block_out_channels", "cross_attention_dim", "attention_head_dim", "down_block_types")
    assert {k: a.unet.get(k) for k in keys} == {k: b.unet.get(k) for k in keys}
    assert a.text_encoders == b.text_encoders


def test_fast_random_fill_is_deterministic_and_sane():
    lin1, lin2 = (
        torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.LayerNorm(32)),
        torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.LayerNorm(32)),
    )
    random_init.fill_random_(lin1, seed=3)
    random_init.fill_random_(lin2, seed=3)
    for p, q in zip(lin1.parameters(), lin2.parameters(), strict=True):
        assert torch.equal(p, q)
    w = lin1[0].weight.detach()
    assert abs(float(w.std()) - 64**-0.5) < 0.02  # fan-in scaled
    assert torch.all(lin1[0].bias == 0) and torch.all(lin1[1].weight == 1)


def test_skip_weight_init_restores_torch_init():
    original = torch.nn.init.kaiming_uniform_
    with random_init.skip_weight_init():
        assert torch.nn.init.kaiming_uniform_ is not original
    assert torch.nn.init.kaiming_uniform_ is original


@pytest.mark.slow  # several seconds: kept out of `pytest -m quick`
def test_random_weights_build_of_a_real_family_runs(monkeypatch):
    """--weights random goes through the fast path; shrink the UNet so this stays a unit test."""
    spec = VARIANTS["sd-v1.5"]
    small = {**spec.unet, "block_out_channels": [32, 32, 64, 64], "norm_num_groups": 8, "attention_head_dim": 4}
    import dataclasses

    spec = dataclasses.replace(
        spec, unet=small, vae={**spec.vae, "block_out_channels": [8, 8, 16, 16], "norm_num_groups": 4}
    )
    pipe = build.build_in_code(spec)
    assert pipe.text_encoder.config.hidden_size == 768  # the real CLIP ViT-L text tower
    lat = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    img = pipe("a cat", num_inference_steps=1, height=64, width=64, latents=lat, output_type="pt").images
    assert torch.isfinite(img).all() and float(img.std()) > 0


# Published sizes (billions): the SD 3.5 model cards (large 8.1B, medium 2.5B), the FLUX.1 model cards (12B), T5-XXL's
# encoder ~4.7B. The SD 3 checkpoints store the sin-cos position table (pos_embed, a buffer of
# pos_embed_max_size^2 x width) beside the weights; the published figures count it: medium 2.24B + 0.23B.
# Each figure is rounded to its last digit, so the tolerance is half a unit of that digit.
DIT_B = {
    "sd3.5-large": (8.1, 0.05), "sd3.5-medium": (2.5, 0.05), "sd3-medium": (2.0, 0.1),
    "flux.1-dev": (12.0, 0.5), "flux.1-schnell": (12.0, 0.5),
}  # fmt: skip


def _count_with_buffers(module) -> float:
    return (sum(p.numel() for p in module.parameters()) + sum(b.numel() for b in module.buffers())) / 1e9


@pytest.mark.parametrize("variant", sorted(DIT_B))
def test_dit_transformer_sizes_match_the_published_figures(variant):
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    spec = VARIANTS[variant]
    with torch.device("meta"):
        net = (FluxTransformer2DModel if spec.family == "flux" else SD3Transformer2DModel)(**spec.transformer)
    published, half_unit = DIT_B[variant]
    assert _count_with_buffers(net) == pytest.approx(published, abs=half_unit)


def test_dit_text_encoders_and_vae_match_the_published_figures():
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    spec = VARIANTS["sd3.5-large"]
    with torch.device("meta"):
        t5 = T5EncoderModel(T5Config(**spec.t5))
        clips = [CLIPTextModelWithProjection(CLIPTextConfig(**cfg)) for cfg in spec.text_encoders]
        vae = AutoencoderKL(**spec.vae)
    assert _count(t5) / 1e3 == pytest.approx(4.76, rel=0.01)  # T5-XXL encoder (4.7B)
    assert [_count(c) for c in clips] == pytest.approx([123.0, 695.0], rel=0.01)  # CLIP-L, OpenCLIP bigG
    assert _count(vae) == pytest.approx(VAE_M, rel=0.005) and vae.config.latent_channels == 16
    assert VARIANTS["flux.1-dev"].t5 == spec.t5 and VARIANTS["flux.1-dev"].vae["latent_channels"] == 16


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_random_dit_weights_are_allocated_in_the_target_dtype(precision):
    """--weights random builds a DiT in its dtype directly (no fp32 copy), filled deterministically and finite."""
    import dataclasses

    from sdsuite.pipelines.registry import get_precision

    dtype = getattr(torch, get_precision(precision))
    spec = dataclasses.replace(VARIANTS["tiny-sd3"], embedded=False)  # the real-variant path on a tiny config
    pipe = build.build_in_code(spec, dtype=dtype)
    for name in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"):
        params = list(getattr(pipe, name).parameters())
        assert {p.dtype for p in params} == {dtype}, name
        assert all(bool(torch.isfinite(p).all()) for p in params)
    t5 = pipe.text_encoder_3
    assert t5.shared.weight is t5.encoder.embed_tokens.weight  # tied, as built normally and as checkpoints store it
    assert sum(p.numel() for p in t5.parameters()) == sum(
        p.numel() for p in build.build_in_code(VARIANTS["tiny-sd3"]).text_encoder_3.parameters()
    )
    again = build.build_in_code(spec, dtype=dtype)
    assert torch.equal(pipe.transformer.proj_out.weight, again.transformer.proj_out.weight)
    assert torch.get_default_dtype() == torch.float32  # the default dtype is restored
    no_t5 = build.build_in_code(spec, dtype=dtype, with_t5=False)
    assert no_t5.text_encoder_3 is None and no_t5.tokenizer_3 is None
