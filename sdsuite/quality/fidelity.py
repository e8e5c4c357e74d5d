"""Image quality: fidelity of an optimized output to the baseline output, determinism, sanity, and
text-image / distribution metrics (CLIP score, FID, IS) with acceptance windows.

Images are torch tensors (N, 3, H, W) in 0..1, as ``CaseMeasurement.generate()`` returns them.
Metrics come back in the runner's metric-dict shape (``{"unit", "available", "value"}`` or
``{"unit", "available": False, "reason"}``): a metric that cannot be computed here is reported
unavailable with the reason, never estimated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sdsuite.core.errors import UsageError, unknown_choice
from sdsuite.core.metrics import unavailable_metric, value_metric


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise UsageError(
            f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}: run both with the same case."
        )
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
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
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
_LPIPS_BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


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
        "max_abs_diff": value_metric(max_abs_diff(candidate, reference), "1"),
        # JSON has no infinity: identical images report value None with infinite=True.
        "psnr_db": value_metric(None, "dB", infinite=True) if math.isinf(p) else value_metric(p, "dB"),
        "ssim": value_metric(ssim(candidate, reference), "1"),
    }
    if lpips is not None:
        out["lpips"] = value_metric(float(lpips(candidate, reference)), "1")
    else:
        out["lpips"] = unavailable_metric("1", lpips_reason or lpips_unavailable_reason() or "no LPIPS model was given")
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
    """The fidelity tolerance for an OptimizationSet: LOSSY with quantization, VAE tiling or without T5 (SD 3 encodes
    the prompt with CLIP alone: a different conditioning, not a rounding difference), else exact."""
    if opts.quantization or opts.vae_tiling or getattr(opts, "drop_t5", False):
        return LOSSY
    return EXACT_FP32 if precision == "fp32" else EXACT_HALF


# -- sanity and determinism --------------------------------------------------------------------


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
        kwargs = dict(
            call_kwargs, output_type="pt", callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents"]
        )
        images = pipe(**kwargs).images
    finally:
        if had_own:
            pipe.encode_prompt = inner
        else:
            del pipe.encode_prompt
    stages["image"] = images.detach().cpu()
    return stages


# -- distribution and text-image metrics -------------------------------------------------------
