"""Image quality: fidelity metrics against known values, sanity, determinism stages, FID/IS/CLIP code paths, windows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdsuite.core.errors import InputFileError, UsageError
from sdsuite.optimizations.sets import OptimizationSet
from sdsuite.pipelines.build import build_in_code, tiny_tokenizer
from sdsuite.pipelines.registry import get_variant
from sdsuite.quality.acceptance import Window, acceptance_from_json, get_acceptance
from sdsuite.quality.distribution import (
    clip_score,
    feature_stats,
    fid_against_reference,
    frechet_distance,
    inception_score,
    inception_score_from_logits,
    load_inception,
    load_reference_stats,
)
from sdsuite.quality.fidelity import (
    EXACT_FP32,
    EXACT_HALF,
    LOSSY,
    FidelityTolerance,
    capture_stages,
    compare_images,
    default_tolerance,
    first_differing_stage,
    load_lpips,
    lpips_unavailable_reason,
    max_abs_diff,
    psnr,
    ssim,
)
from sdsuite.quality.sanity import sanity_check

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _images(seed: int, shape=(2, 3, 32, 32)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# -- fidelity metrics ----------------------------------------------------------------------------


def test_psnr_and_max_abs_diff_known_values():
    a = torch.zeros(1, 3, 8, 8)
    b = torch.full((1, 3, 8, 8), 0.1)
    assert max_abs_diff(a, b) == pytest.approx(0.1)
    assert psnr(a, b) == pytest.approx(20.0)  # MSE 0.01 -> 10 log10(1 / 0.01)
    assert psnr(a, a) == math.inf
    b[0, 0, 0, 0] = 1.0
    assert max_abs_diff(a, b) == pytest.approx(1.0)


@pytest.mark.parametrize(("x", "y"), [(0.2, 0.4), (0.5, 0.5), (0.0, 1.0)])
def test_ssim_of_flat_images_has_the_closed_form(x, y):
    # No variance: SSIM reduces to the luminance term (2xy + C1) / (x^2 + y^2 + C1).
    c1 = 0.01**2
    got = ssim(torch.full((1, 3, 16, 16), x), torch.full((1, 3, 16, 16), y))
    assert got == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1), rel=1e-9)


@given(st.integers(0, 2**16), st.floats(0.01, 0.5))
@settings(max_examples=max(5, settings().max_examples * 3 // 4))  # SSIM of images: 3/4 of the profile's
def test_ssim_is_one_for_identical_symmetric_and_drops_with_noise(seed, noise):
    a = _images(seed, (1, 3, 24, 24))
    b = (a + noise * torch.randn(a.shape, generator=torch.Generator().manual_seed(seed + 1))).clamp(0, 1)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)
    assert ssim(a, b) < 1.0
    worse = (a + 2 * noise * torch.randn(a.shape, generator=torch.Generator().manual_seed(seed + 1))).clamp(0, 1)
    assert ssim(a, worse) < ssim(a, b)


def _scipy_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Independent reference in scikit-image's style: scipy Gaussian filter (sigma 1.5, radius 5), borders cropped."""
    from scipy.ndimage import gaussian_filter

    c1, c2, pad = 0.01**2, 0.03**2, 5
    vals = []
    for x, y in zip(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), strict=True):
        f = lambda z: gaussian_filter(z, sigma=1.5, truncate=3.5)  # noqa: E731
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(vals))


def test_ssim_equals_an_independent_scipy_reference():
    a = _images(3, (2, 3, 40, 36)).double()
    b = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)).clamp(0, 1)
    assert ssim(a, b) == pytest.approx(_scipy_ssim(a.numpy(), b.numpy()), abs=1e-9)


def test_mismatched_shapes_are_a_clear_error():
    with pytest.raises(UsageError, match="same case"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 16, 16))


def test_compare_images_reports_every_metric_and_lpips_honestly():
    a = _images(0)
    same = compare_images(a, a.clone())
    assert same["max_abs_diff"]["value"] == 0.0
    assert same["psnr_db"]["value"] is None and same["psnr_db"]["infinite"] is True
    json.dumps(same)  # JSON-ready: no bare infinity
    if lpips_unavailable_reason() is not None:
        assert same["lpips"]["available"] is False and "LPIPS" in same["lpips"]["reason"]
    with_fn = compare_images(a, _images(1), lpips=lambda x, y: torch.tensor(0.25))
    assert with_fn["lpips"] == {"unit": "1", "available": True, "value": 0.25}
    assert with_fn["psnr_db"]["value"] < 20


def test_lpips_without_local_weights_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reason = lpips_unavailable_reason("alex")
    assert reason is not None
    fn, why = load_lpips("alex")
    assert fn is None and why == reason
    with pytest.raises(UsageError, match="alex"):
        lpips_unavailable_reason("resnet")


def test_tolerance_names_each_violation():
    metrics = compare_images(_images(0), _images(1))
    reason = FidelityTolerance(max_abs_diff=1e-3, min_psnr_db=40, min_ssim=0.99).check(metrics)
    assert reason.startswith("output differs from the baseline beyond tolerance")
    assert "max abs diff" in reason and "PSNR" in reason and "SSIM" in reason
    assert FidelityTolerance(max_abs_diff=1.0, min_psnr_db=0.0).check(metrics) is None
    identical = compare_images(_images(0), _images(0))
    assert EXACT_FP32.check(identical) is None  # infinite PSNR passes any minimum


def test_default_tolerance_per_option():
    assert default_tolerance(OptimizationSet(attention="eager", kv_cache=True)) is EXACT_FP32
    assert default_tolerance(OptimizationSet(attention="eager"), "fp16") is EXACT_HALF
    assert default_tolerance(OptimizationSet(quantization="int8wo")) is LOSSY
    assert default_tolerance(OptimizationSet(vae_tiling=True)) is LOSSY


# -- sanity --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda x: x.index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), "NaN"),
        (lambda x: x.index_put_((torch.tensor([0]),), torch.tensor(float("inf"))), "inf"),
        (lambda x: x.zero_(), "all black"),
        (lambda x: x.fill_(0.5), "constant"),
        (lambda x: x[1].fill_(0.7), "image(s) [1]"),
    ],
)
def test_sanity_check_reasons(make, expected):
    images = _images(5)
    make(images)
    reason = sanity_check(images)
    assert reason is not None and expected in reason


def test_sanity_check_passes_normal_images():
    assert sanity_check(_images(6)) is None


# -- determinism ---------------------------------------------------------------------------------


def _stages(seed=0, **changes):
    g = torch.Generator().manual_seed(seed)
    s = {
        "text_embeddings": torch.randn(10, generator=g),
        "latents_step_1": torch.randn(4, generator=g),
        "latents_step_2": torch.randn(4, generator=g),
        "image": torch.rand(3, 4, 4, generator=g),
    }
    s.update(changes)
    return s


def test_first_differing_stage_names_the_stage():
    a = _stages()
    assert first_differing_stage(a, _stages()) is None
    b = _stages(latents_step_2=a["latents_step_2"] + 1e-3, image=a["image"] + 1.0)
    diff = first_differing_stage(a, b)
    assert diff.stage == "latents_step_2" and diff.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    assert "latents_step_2" in diff.reason
    assert first_differing_stage(a, b, atol=1e-2).stage == "image"
    assert first_differing_stage(a, _stages(image=torch.rand(3, 8, 8))).reason.startswith("image: shapes differ")
    nan = torch.full((10,), float("nan"))
    assert (
        first_differing_stage(_stages(text_embeddings=nan), _stages(text_embeddings=nan.clone())) is None
    )  # NaN in both: same
    assert "NaN in one run only" in first_differing_stage(_stages(text_embeddings=nan), a).reason


@pytest.fixture(scope="module")
def tiny_sd():
    return build_in_code(get_variant("tiny-sd"))


def _kwargs(prompt="a red bicycle", seed=0):
    latents = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(seed))
    return dict(
        prompt=prompt,
        height=SIZE,
        width=SIZE,
        num_inference_steps=2,
        latents=latents,
        generator=torch.Generator().manual_seed(0),
    )


def test_capture_stages_on_a_real_pipeline_names_the_first_divergence(tiny_sd):
    a = capture_stages(tiny_sd, **_kwargs())
    assert list(a)[0] == "text_embeddings" and list(a)[-1] == "image"
    assert sum(k.startswith("latents_step_") for k in a) >= 2
    assert first_differing_stage(a, capture_stages(tiny_sd, **_kwargs())) is None
    assert first_differing_stage(a, capture_stages(tiny_sd, **_kwargs(seed=1))).stage == "latents_step_1"
    assert first_differing_stage(a, capture_stages(tiny_sd, **_kwargs(prompt="a blue boat"))).stage == "text_embeddings"
    assert "encode_prompt" not in vars(tiny_sd)  # the wrapper is removed


# -- Frechet distance, FID, IS -------------------------------------------------------------------


def _psd(seed: int, d: int, rank_deficit: bool = False) -> torch.Tensor:
    x = torch.randn(
        d, max(d - 1, 1) if rank_deficit else d + 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return x @ x.T / x.shape[1]


@given(st.integers(1, 12), st.integers(0, 2**16), st.floats(0.0, 3.0))
def test_frechet_distance_matches_scipy_sqrtm(d, seed, shift):
    s1, s2 = _psd(seed, d), _psd(seed + 1, d)
    mu1 = torch.randn(d, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    mu2 = mu1 + shift
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy())
    expected = float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * np.trace(covmean).real)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-8)
    assert got >= -1e-9
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_singular_covariances_stays_real_and_symmetric():
    s1, s2 = _psd(0, 6, rank_deficit=True), _psd(1, 6, rank_deficit=True)
    mu = torch.zeros(6, dtype=torch.float64)
    d12, d21 = frechet_distance(mu, s1, mu, s2), frechet_distance(mu, s2, mu, s1)
    assert math.isfinite(d12) and d12 == pytest.approx(d21, rel=1e-8)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(UsageError, match="matching shapes"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


class _TinyFeatures(torch.nn.Module):
    """A fixed random conv net standing in for Inception (the code path, not the numbers)."""

    def __init__(self, out: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, out, 5, stride=4)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_fid_against_synthetic_reference_statistics(tmp_path):
    extractor = _TinyFeatures().eval()
    real, fake = _images(10, (24, 3, 32, 32)), _images(11, (24, 3, 32, 32)) * 0.5
    with torch.no_grad():
        ref_stats = feature_stats(extractor(real))
    path = tmp_path / "ref.npz"
    np.savez(path, mu=ref_stats.mu.numpy(), sigma=ref_stats.sigma.numpy())
    loaded = load_reference_stats(path)
    torch.testing.assert_close(loaded.sigma, ref_stats.sigma)
    fid = fid_against_reference(fake, loaded, extractor, batch_size=5)
    with torch.no_grad():
        gen = feature_stats(extractor(fake))
    assert fid == pytest.approx(frechet_distance(gen.mu, gen.sigma, ref_stats.mu, ref_stats.sigma))
    assert fid > fid_against_reference(real, loaded, extractor)  # darker images are further away
    assert fid_against_reference(real, loaded, extractor) == pytest.approx(0.0, abs=1e-8)


def test_reference_statistics_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="missing.npz"):
        load_reference_stats(tmp_path / "missing.npz")
    np.savez(tmp_path / "nomu.npz", sigma=np.eye(2))
    with pytest.raises(InputFileError, match="'mu'"):
        load_reference_stats(tmp_path / "nomu.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(2))
    with pytest.raises(InputFileError, match=r"shape.npz.*expected \(D,\)"):
        load_reference_stats(tmp_path / "shape.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip file")
    with pytest.raises(InputFileError, match="corrupt.npz"):
        load_reference_stats(tmp_path / "corrupt.npz")


def test_inception_score_known_values():
    uniform = torch.zeros(20, 10)
    assert inception_score_from_logits(uniform, splits=2) == pytest.approx((1.0, 0.0))
    # Confident, evenly spread over 4 classes: IS = number of classes.
    confident = torch.full((40, 4), -1e4)
    confident[torch.arange(40), torch.arange(40) % 4] = 1e4
    mean, std = inception_score_from_logits(confident, splits=2)  # each split holds 5 of each class
    assert mean == pytest.approx(4.0) and std == pytest.approx(0.0, abs=1e-9)
    classifier = _TinyFeatures(out=5).eval()
    mean, _ = inception_score(_images(12, (10, 3, 32, 32)), classifier, splits=2)
    assert 1.0 <= mean <= 5.0
    with pytest.raises(UsageError, match="at least 10 images"):
        inception_score_from_logits(torch.zeros(5, 3), splits=10)


def test_inception_without_local_weights_is_unavailable(tmp_path):
    assert load_inception(None)[1].startswith("no Inception weights")
    fn, reason = load_inception(tmp_path / "pt_inception.pth")
    assert fn is None and "do not exist" in reason


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    text = dict(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tiny_tokenizer(),
    )
    d = tmp_path_factory.mktemp("tiny_clip")
    model.save_pretrained(d)
    processor.save_pretrained(d)
    return d


def test_clip_score_with_a_tiny_local_model(tiny_clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    images = _images(13, (2, 3, 32, 32))
    prompts = ["a cat on a sofa", "a red car"]
    result = clip_score(images, prompts, tiny_clip_dir)
    assert result["available"] and 0.0 <= result["value"] <= 100.0
    # Independent computation: 100 x max(cosine of the projected embeddings, 0), averaged.
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    proc = CLIPProcessor.from_pretrained(tiny_clip_dir)
    pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    with torch.no_grad():
        inputs = proc(text=prompts, images=list(pixels), return_tensors="pt", padding=True)
        img = model.get_image_features(pixel_values=inputs["pixel_values"])
        txt = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    assert result["per_image"] == pytest.approx((100 * cos.clamp(min=0)).tolist(), abs=1e-3)
    with pytest.raises(UsageError, match="one prompt per image"):
        clip_score(images, prompts[:1], tiny_clip_dir)


def test_clip_score_without_local_weights_is_unavailable(tmp_path):
    assert clip_score(_images(0), ["a", "b"], None)["available"] is False
    result = clip_score(_images(0), ["a", "b"], tmp_path)
    assert result == {"unit": "1", "available": False, "reason": f"CLIP model directory {tmp_path} has no config.json"}


# -- acceptance windows --------------------------------------------------------------------------


def test_mlperf_sdxl_windows():
    mlperf = get_acceptance("mlperf-sdxl")
    assert (mlperf.fid.low, mlperf.fid.high) == (23.01085758, 23.95007626)
    assert (mlperf.clip_score.low, mlperf.clip_score.high) == (31.68631873, 31.81331801)
    assert mlperf.check({"fid": 23.5, "clip_score": 31.7}) == {
        "preset": "mlperf-sdxl",
        "accepted": True,
        "violations": [],
        "unchecked": [],
    }
    bad = mlperf.check({"fid": 24.1, "clip_score": 31.7})
    assert bad["accepted"] is False and "fid 24.1 is above the accepted maximum 23.95007626" in bad["violations"][0]
    partial = mlperf.check({"fid": 23.5})
    assert partial["accepted"] is None and partial["unchecked"] == ["clip_score"]


def test_custom_windows_from_json(tmp_path):
    w = acceptance_from_json('{"fid": [null, 16], "clip_score": [30, null]}')
    assert w.check({"fid": 15.0, "clip_score": 31.0})["accepted"] is True
    assert w.check({"fid": 17.0, "clip_score": 31.0})["accepted"] is False
    f = tmp_path / "w.json"
    f.write_text(json.dumps({"inception_score": [5, 10]}))
    assert acceptance_from_json(str(f)).inception_score == Window(5, 10)
    with pytest.raises(UsageError, match="clip_score"):
        acceptance_from_json('{"clip": [1, 2]}')
    with pytest.raises(UsageError, match=r"\[low, high\]"):
        acceptance_from_json('{"fid": 3}')
    with pytest.raises(UsageError, match="mlperf-sdxl"):
        get_acceptance("mlperf")
