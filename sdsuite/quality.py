"""Image quality: fidelity of an optimized output to the baseline output, determinism, sanity, and
text-image / distribution metrics (CLIP score, FID, IS) with acceptance windows.

Images are torch tensors (N, 3, H, W) in 0..1, as ``CaseMeasurement.generate()`` returns them.
Metrics come back in the runner's metric-dict shape (``{"unit", "available", "value"}`` or
``{"unit", "available": False, "reason"}``): a metric that cannot be computed here is reported
unavailable with the reason, never estimated.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sdsuite.errors import InputFileError, UsageError, unknown_choice

BLACK_MAX = 1.0 / 255.0  # every pixel below one 8-bit level: the image is black
CONSTANT_STD = 1e-4  # pixel standard deviation below this: the image is one flat colour


def _value(value: float | int | None, unit: str, **extra: Any) -> dict:
    return {"unit": unit, "available": True, "value": value, **extra}


def _unavailable(unit: str, reason: str) -> dict:
    return {"unit": unit, "available": False, "reason": reason}


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise UsageError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}: run both with the same case.")
    if a.dim() == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.dim() != 4:
        raise UsageError(f"images must be (N, C, H, W) or (C, H, W), got shape {tuple(a.shape)}.")
    return a.detach().double().cpu(), b.detach().double().cpu()


# -- fidelity ----------------------------------------------------------------------------------


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute pixel difference."""
    a, b = _check_pair(a, b)
    return float((a - b).abs().max())


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch; ``inf`` for identical images."""
    a, b = _check_pair(a, b)
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03
) -> float:
    """Mean structural similarity (Wang et al. 2004): Gaussian window 11/1.5, K1=0.01, K2=0.03, valid region only.

    Borders where the window does not fit are excluded, as in the reference MATLAB code and
    scikit-image; torchmetrics also averages reflect-padded borders, so it reads slightly differently
    on small images. Images smaller than the window use a window as large as the image.
    """
    a, b = _check_pair(a, b)
    n, c, h, w = a.shape
    size = min(window, h, w)
    kernel = _gaussian_window(size, sigma).expand(c, 1, size, size)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


LpipsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_LPIPS_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def lpips_unavailable_reason(net: str = "alex") -> str | None:
    """None when LPIPS can be computed offline (torchmetrics + torchvision + cached backbone weights), else why not."""
    if net not in _LPIPS_BACKBONE_FILES:
        raise unknown_choice("LPIPS network", net, _LPIPS_BACKBONE_FILES)
    import importlib.util

    for pkg, extra in (("torchmetrics", "quality"), ("torchvision", "quality")):
        if importlib.util.find_spec(pkg) is None:
            return f"LPIPS needs {pkg} (pip install 'sdsuite[{extra}]' plus a torchvision build matching your torch)"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / _LPIPS_BACKBONE_FILES[net]
    if not weights.is_file():
        return f"LPIPS backbone weights are not available locally ({weights} is missing) and nothing is downloaded"
    return None


def load_lpips(net: str = "alex") -> tuple[LpipsFn | None, str | None]:
    """(callable(a, b) -> per-image distance, None), or (None, reason) when its weights are not local."""
    reason = lpips_unavailable_reason(net)
    if reason:
        return None, reason
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True, reduction="mean")

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        metric.reset()
        return metric(a.float().cpu(), b.float().cpu())

    return fn, None


def compare_images(
    candidate: torch.Tensor, reference: torch.Tensor, *, lpips: LpipsFn | None = None, lpips_reason: str | None = None
) -> dict[str, dict]:
    """Fidelity metrics of ``candidate`` against ``reference`` (the baseline option's images of the same case)."""
    p = psnr(candidate, reference)
    out = {
        "max_abs_diff": _value(max_abs_diff(candidate, reference), "1"),
        # JSON has no infinity: identical images report value None with infinite=True.
        "psnr_db": _value(None, "dB", infinite=True) if math.isinf(p) else _value(p, "dB"),
        "ssim": _value(ssim(candidate, reference), "1"),
    }
    if lpips is not None:
        out["lpips"] = _value(float(lpips(candidate, reference)), "1")
    else:
        out["lpips"] = _unavailable("1", lpips_reason or lpips_unavailable_reason() or "no LPIPS model was given")
    return out


@dataclass(frozen=True)
class FidelityTolerance:
    """How far an optimized output may drift from the baseline; None disables a bound."""

    max_abs_diff: float | None = None
    min_psnr_db: float | None = None
    min_ssim: float | None = None
    max_lpips: float | None = None

    def check(self, metrics: Mapping[str, dict]) -> str | None:
        """None when every available metric is within bounds, else one sentence naming each violation."""
        bad = []

        def val(name: str) -> float | None:
            m = metrics.get(name) or {}
            if not m.get("available"):
                return None
            return math.inf if m.get("infinite") else m.get("value")

        v = val("max_abs_diff")
        if self.max_abs_diff is not None and v is not None and v > self.max_abs_diff:
            bad.append(f"max abs diff {v:.3g} > {self.max_abs_diff:.3g}")
        v = val("psnr_db")
        if self.min_psnr_db is not None and v is not None and v < self.min_psnr_db:
            bad.append(f"PSNR {v:.2f} dB < {self.min_psnr_db:.2f} dB")
        v = val("ssim")
        if self.min_ssim is not None and v is not None and v < self.min_ssim:
            bad.append(f"SSIM {v:.4f} < {self.min_ssim:.4f}")
        v = val("lpips")
        if self.max_lpips is not None and v is not None and v > self.max_lpips:
            bad.append(f"LPIPS {v:.4f} > {self.max_lpips:.4f}")
        return ("output differs from the baseline beyond tolerance: " + "; ".join(bad)) if bad else None


# Starting points, not validated on real weights: math-preserving options must match closely, lossy
# ones (quantization, VAE tiling, compiled kernels with other reduction orders) must stay similar.
EXACT_FP32 = FidelityTolerance(max_abs_diff=1e-3, min_psnr_db=50.0, min_ssim=0.999)
EXACT_HALF = FidelityTolerance(min_psnr_db=30.0, min_ssim=0.95)
LOSSY = FidelityTolerance(min_psnr_db=18.0, min_ssim=0.7, max_lpips=0.3)


def default_tolerance(opts, precision: str = "fp32") -> FidelityTolerance:
    """The fidelity tolerance for an OptimizationSet: LOSSY with quantization or VAE tiling, else exact."""
    if opts.quantization or opts.vae_tiling:
        return LOSSY
    return EXACT_FP32 if precision == "fp32" else EXACT_HALF


# -- sanity and determinism --------------------------------------------------------------------


def sanity_check(images: torch.Tensor) -> str | None:
    """None for usable images, else why they are not: NaN, inf, all black, or constant."""
    x = images.detach().float().cpu()
    if x.numel() == 0:
        return "output images are empty"
    nan = int(torch.isnan(x).sum())
    if nan:
        return f"output images contain NaN ({nan} of {x.numel()} values)"
    inf = int(torch.isinf(x).sum())
    if inf:
        return f"output images contain inf ({inf} of {x.numel()} values)"
    if float(x.abs().max()) < BLACK_MAX:
        return "output images are all black (every pixel below 1/255)"
    flat = x.flatten(1) if x.dim() > 1 else x[None]
    stds = flat.std(dim=1) if flat.shape[1] > 1 else torch.zeros(flat.shape[0])
    if bool((stds < CONSTANT_STD).any()):
        idx = [int(i) for i in torch.nonzero(stds < CONSTANT_STD).flatten()]
        return f"output image(s) {idx} are one constant colour (pixel std < {CONSTANT_STD:g})"
    return None


@dataclass(frozen=True)
class StageDifference:
    """The first pipeline stage where two runs of the same case diverged."""

    stage: str
    max_abs_diff: float | None  # None when the shapes differ
    reason: str

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)


def first_differing_stage(
    run_a: Mapping[str, torch.Tensor], run_b: Mapping[str, torch.Tensor], atol: float = 0.0
) -> StageDifference | None:
    """Compare per-stage tensors of two runs in stage order; None when all match within ``atol``."""
    for stage, a in run_a.items():
        if stage not in run_b:
            return StageDifference(stage, None, f"stage {stage!r} is missing from the second run")
        b = run_b[stage]
        if a.shape != b.shape:
            return StageDifference(stage, None, f"{stage}: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
        a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
        nan_a, nan_b = torch.isnan(a64), torch.isnan(b64)
        if not torch.equal(nan_a, nan_b):
            return StageDifference(stage, None, f"{stage}: NaN in one run only")
        d = (a64 - b64).abs().masked_fill(nan_a, 0.0)
        worst = float(d.max()) if d.numel() else 0.0
        if worst > atol or (atol == 0.0 and not torch.equal(a64.masked_fill(nan_a, 0), b64.masked_fill(nan_b, 0))):
            return StageDifference(stage, worst, f"runs first differ at {stage} (max abs diff {worst:.3g} > {atol:g})")
    extra = [s for s in run_b if s not in run_a]
    if extra:
        return StageDifference(extra[0], None, f"stage {extra[0]!r} is missing from the first run")
    return None


def capture_stages(pipe, **call_kwargs: Any) -> dict[str, torch.Tensor]:
    """Run ``pipe`` once and return its stages in order: ``text_embeddings``, ``latents_step_1..N``, ``image``.

    Latents are those after each denoising step (``callback_on_step_end``); the image is the output
    (``output_type='pt'`` is forced). Any wrapper already installed on ``encode_prompt`` (the runner's
    timing wrapper) is kept and restored.
    """
    stages: dict[str, torch.Tensor] = {}
    had_own = "encode_prompt" in vars(pipe)
    inner = pipe.encode_prompt

    def encode(*a, **k):
        out = inner(*a, **k)
        tensors = [t for t in (out if isinstance(out, tuple) else (out,)) if isinstance(t, torch.Tensor)]
        stages["text_embeddings"] = torch.cat([t.detach().flatten().cpu().double() for t in tensors])
        return out

    def on_step(p, i, t, kw):
        stages[f"latents_step_{i + 1}"] = kw["latents"].detach().cpu().clone()
        return kw

    pipe.encode_prompt = encode
    try:
        kwargs = dict(call_kwargs, output_type="pt", callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"])
        images = pipe(**kwargs).images
    finally:
        if had_own:
            pipe.encode_prompt = inner
        else:
            del pipe.encode_prompt
    stages["image"] = images.detach().cpu()
    return stages


# -- distribution and text-image metrics -------------------------------------------------------


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of image features (e.g. Inception pool3), as in FID reference files."""

    mu: torch.Tensor
    sigma: torch.Tensor
    n: int | None = None


def feature_stats(features: torch.Tensor) -> FeatureStats:
    """Mean and unbiased covariance (float64) of (N, D) features; needs N >= 2."""
    x = features.detach().double().cpu().flatten(1)
    if x.shape[0] < 2:
        raise UsageError(f"feature statistics need at least 2 images, got {x.shape[0]}.")
    return FeatureStats(x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1]), x.shape[0])


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Frechet distance of two Gaussians: |mu1-mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    The trace of the matrix square root is computed as tr((S1^1/2 S2 S1^1/2)^1/2) with symmetric
    eigendecompositions in float64: the same value as scipy.linalg.sqrtm(S1 @ S2) for PSD inputs,
    without its complex round-off.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).flatten() for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise UsageError(
            f"Frechet distance needs matching shapes: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, sigma {tuple(s1.shape)}/{tuple(s2.shape)}."
        )
    r1 = _psd_sqrt(s1)
    inner = r1 @ s2 @ r1
    tr_covmean = float(torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum())
    return float(((mu1 - mu2) ** 2).sum()) + float(s1.trace()) + float(s2.trace()) - 2.0 * tr_covmean


def load_reference_stats(path: str | os.PathLike) -> FeatureStats:
    """Read FID reference statistics from an ``.npz`` with ``mu`` and ``sigma`` (MLPerf's val2014.npz format)."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"FID reference statistics {p} do not exist; pass an .npz file with 'mu' and 'sigma' arrays.")
    try:
        with np.load(p) as data:
            mu, sigma = data["mu"], data["sigma"]
    except KeyError as exc:
        raise InputFileError(f"FID reference statistics {p} lack the array {exc}; the file needs 'mu' and 'sigma'.") from None
    except (OSError, ValueError) as exc:
        raise InputFileError(f"FID reference statistics {p} could not be read ({exc}); pass an .npz file with 'mu' and 'sigma'.") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputFileError(f"FID reference statistics {p}: mu has shape {mu.shape} and sigma {sigma.shape}; expected (D,) and (D, D).")
    return FeatureStats(torch.from_numpy(mu).double(), torch.from_numpy(sigma).double())


FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def _batched(fn: FeatureFn, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(images[i : i + batch_size]).detach().double().cpu().flatten(1) for i in range(0, images.shape[0], batch_size)])


def fid_against_reference(images: torch.Tensor, reference: FeatureStats, extractor: FeatureFn, batch_size: int = 32) -> float:
    """FID of generated ``images`` (0..1) against reference statistics, features from ``extractor``."""
    gen = feature_stats(_batched(extractor, images, batch_size))
    if gen.mu.shape != reference.mu.shape:
        raise UsageError(f"the feature extractor gives {gen.mu.numel()} features but the reference statistics have {reference.mu.numel()}.")
    return frechet_distance(gen.mu, gen.sigma, reference.mu, reference.sigma)


def inception_score_from_logits(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception score exp(E_x KL(p(y|x) || p(y))): mean and std over ``splits`` equal chunks."""
    logits = logits.detach().double().cpu()
    n = logits.shape[0]
    if n < splits:
        raise UsageError(f"Inception score with {splits} splits needs at least {splits} images, got {n}.")
    log_p = torch.log_softmax(logits, dim=1)
    scores = []
    for chunk in torch.tensor_split(log_p, splits):
        log_py = torch.logsumexp(chunk, dim=0) - math.log(chunk.shape[0])
        kl = (chunk.exp() * (chunk - log_py)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    t = torch.tensor(scores, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False)) if splits > 1 else 0.0


def inception_score(images: torch.Tensor, classifier: FeatureFn, splits: int = 10, batch_size: int = 32) -> tuple[float, float]:
    """Inception score of ``images`` with a classifier returning logits (N, classes)."""
    return inception_score_from_logits(_batched(classifier, images, batch_size), splits)


def load_inception(weights_path: str | os.PathLike | None, feature: str = "2048") -> tuple[FeatureFn | None, str | None]:
    """torchmetrics' FID Inception (torch-fidelity) from LOCAL weights: (extractor, None) or (None, reason).

    ``feature``: ``"2048"`` pool features for FID, ``"logits_unbiased"`` for the Inception score.
    """
    import importlib.util

    if weights_path is None:
        return None, "no Inception weights were given (pass the local pt_inception-2015-12-05 .pth file); nothing is downloaded"
    if not Path(weights_path).is_file():
        return None, f"Inception weights {weights_path} do not exist"
    for pkg in ("torchmetrics", "torch_fidelity"):
        if importlib.util.find_spec(pkg) is None:
            return None, f"FID/IS Inception needs {pkg} (pip install 'sdsuite[quality]' torch-fidelity)"
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[feature], feature_extractor_weights_path=str(weights_path))

    def fn(images: torch.Tensor) -> torch.Tensor:
        return net((images.clamp(0, 1) * 255).round().to(torch.uint8))

    return fn, None


def clip_model_unavailable_reason(model_dir: str | os.PathLike | None) -> str | None:
    """None when a local transformers CLIP directory (config + weights + processor) is usable, else why not."""
    if model_dir is None:
        return "no local CLIP model was given (a transformers CLIP directory, e.g. a copy of openai/clip-vit-base-patch32); nothing is downloaded"
    d = Path(model_dir)
    if not d.exists():
        return f"no local CLIP weights at {d} (a transformers CLIP directory is expected; nothing is downloaded)"
    if not (d / "config.json").is_file():
        return f"CLIP model directory {d} has no config.json"
    return None


def clip_score(images: torch.Tensor, prompts: Sequence[str], model_dir: str | os.PathLike | None, batch_size: int = 32) -> dict:
    """CLIP score with a LOCAL transformers CLIP model: mean over images of 100 x max(cos(image, text), 0).

    The definition of torchmetrics' CLIPScore; computed here directly because torchmetrics 1.9's
    CLIPScore breaks on transformers 5 (``get_image_features`` returns a model output there).
    Images are quantized to 8 bits first, as a saved PNG would be.
    """
    reason = clip_model_unavailable_reason(model_dir)
    if reason:
        return _unavailable("1", reason)
    if len(prompts) != images.shape[0]:
        raise UsageError(f"CLIP score needs one prompt per image: {images.shape[0]} images, {len(prompts)} prompts.")
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(str(model_dir), local_files_only=True)
    pixels = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    cos = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            inputs = processor(
                text=list(prompts[i : i + batch_size]),
                images=list(pixels[i : i + batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
            )
            out = model(**inputs)
            # CLIPModel returns L2-normalized projections: the row-wise dot product is the cosine.
            cos.append((out.image_embeds * out.text_embeds).sum(dim=-1))
    scores = 100.0 * torch.cat(cos).clamp(min=0)
    return _value(float(scores.mean()), "1", per_image=[float(x) for x in scores], model=str(model_dir), scale="100 x cosine similarity")


# -- acceptance windows ------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Closed interval [low, high]; None leaves a side open."""

    low: float | None = None
    high: float | None = None

    def violation(self, name: str, value: float) -> str | None:
        """None inside the window, else a sentence with the value and the bound."""
        if self.low is not None and value < self.low:
            return f"{name} {value:.6g} is below the accepted minimum {self.low:.10g}"
        if self.high is not None and value > self.high:
            return f"{name} {value:.6g} is above the accepted maximum {self.high:.10g}"
        return None


@dataclass(frozen=True)
class AcceptanceWindows:
    """Accepted ranges of dataset-level quality metrics (CLIP score on the 100 x cosine scale)."""

    name: str
    fid: Window | None = None
    clip_score: Window | None = None
    inception_score: Window | None = None
    note: str = ""

    def check(self, values: Mapping[str, float | None]) -> dict[str, Any]:
        """Judge each metric with a window: ``{"accepted": bool | None, "violations": [...], "unchecked": [...]}``.

        A metric with a window but no value is unchecked (accepted is then None, never True).
        """
        violations, unchecked = [], []
        for name in ("fid", "clip_score", "inception_score"):
            window = getattr(self, name)
            if window is None:
                continue
            v = values.get(name)
            if v is None:
                unchecked.append(name)
            elif (msg := window.violation(name, float(v))) is not None:
                violations.append(msg)
        accepted = False if violations else (None if unchecked else True)
        return {"preset": self.name, "accepted": accepted, "violations": violations, "unchecked": unchecked}


ACCEPTANCE_PRESETS: dict[str, AcceptanceWindows] = {
    "mlperf-sdxl": AcceptanceWindows(
        "mlperf-sdxl",
        fid=Window(23.01085758, 23.95007626),
        clip_score=Window(31.68631873, 31.81331801),
        note="MLPerf Inference SDXL: 5000 COCO-2014 captions, EulerDiscrete 20 steps, guidance 8.0, 1024px; "
        "CLIP is open_clip ViT-B/32 x100 there: other CLIP models are not comparable with this window",
    ),
    "optsd": AcceptanceWindows(
        "optsd", fid=Window(high=16.0), clip_score=Window(low=30.0), note="OptSD targets FID <= 16, CLIP >= 0.30 (cosine)"
    ),
}


def get_acceptance(name: str) -> AcceptanceWindows:
    """An acceptance preset by name (UsageError listing the presets otherwise)."""
    try:
        return ACCEPTANCE_PRESETS[name]
    except KeyError:
        raise unknown_choice("acceptance preset", name, ACCEPTANCE_PRESETS) from None


def acceptance_from_json(text_or_path: str) -> AcceptanceWindows:
    """Custom windows from JSON (inline or a file): ``{"fid": [lo, hi], "clip_score": [lo, null]}``."""
    p = Path(text_or_path)
    try:
        raw = json.loads(p.read_text() if not text_or_path.lstrip().startswith("{") and p.is_file() else text_or_path)
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"acceptance windows {text_or_path!r} are neither a JSON object nor a readable JSON file ({exc}).") from None
    if not isinstance(raw, dict):
        raise UsageError(f"acceptance windows must be a JSON object, got {type(raw).__name__}.")
    known = ("fid", "clip_score", "inception_score")
    windows: dict[str, Window] = {}
    for k, v in raw.items():
        if k not in known:
            raise unknown_choice("acceptance metric", k, known)
        if not (isinstance(v, list) and len(v) == 2 and all(x is None or isinstance(x, (int, float)) for x in v)):
            raise UsageError(f"acceptance window {k!r} must be [low, high] with numbers or null, got {v!r}.")
        windows[k] = Window(v[0], v[1])
    return AcceptanceWindows("custom", **windows)
