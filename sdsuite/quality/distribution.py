"""distribution: split out of sdsuite.quality (see the package docstring)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sdsuite.core.errors import InputFileError, UsageError
from sdsuite.core.metrics import unavailable_metric, value_metric


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
            f"Frechet distance needs matching shapes: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, "
            f"sigma {tuple(s1.shape)}/{tuple(s2.shape)}."
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
        raise InputFileError(
            f"FID reference statistics {p} do not exist; pass an .npz file with 'mu' and 'sigma' arrays."
        )
    try:
        with np.load(p) as data:
            mu, sigma = data["mu"], data["sigma"]
    except KeyError as exc:
        raise InputFileError(
            f"FID reference statistics {p} lack the array {exc}; the file needs 'mu' and 'sigma'."
        ) from None
    except (OSError, ValueError) as exc:
        raise InputFileError(
            f"FID reference statistics {p} could not be read ({exc}); pass an .npz file with 'mu' and 'sigma'."
        ) from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputFileError(
            f"FID reference statistics {p}: mu has shape {mu.shape} and sigma {sigma.shape}; expected (D,) and (D, D)."
        )
    return FeatureStats(torch.from_numpy(mu).double(), torch.from_numpy(sigma).double())


FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def _batched(fn: FeatureFn, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [
                fn(images[i : i + batch_size]).detach().double().cpu().flatten(1)
                for i in range(0, images.shape[0], batch_size)
            ]
        )


def fid_against_reference(
    images: torch.Tensor, reference: FeatureStats, extractor: FeatureFn, batch_size: int = 32
) -> float:
    """FID of generated ``images`` (0..1) against reference statistics, features from ``extractor``."""
    gen = feature_stats(_batched(extractor, images, batch_size))
    if gen.mu.shape != reference.mu.shape:
        raise UsageError(
            f"the feature extractor gives {gen.mu.numel()} features "
            f"but the reference statistics have {reference.mu.numel()}."
        )
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


def inception_score(
    images: torch.Tensor, classifier: FeatureFn, splits: int = 10, batch_size: int = 32
) -> tuple[float, float]:
    """Inception score of ``images`` with a classifier returning logits (N, classes)."""
    return inception_score_from_logits(_batched(classifier, images, batch_size), splits)


def load_inception(
    weights_path: str | os.PathLike | None, feature: str = "2048"
) -> tuple[FeatureFn | None, str | None]:
    """torchmetrics' FID Inception (torch-fidelity) from LOCAL weights: (extractor, None) or (None, reason).

    ``feature``: ``"2048"`` pool features for FID, ``"logits_unbiased"`` for the Inception score.
    """
    import importlib.util

    if weights_path is None:
        return (
            None,
            "no Inception weights were given (pass the local pt_inception-2015-12-05 .pth file); nothing is downloaded",
        )
    if not Path(weights_path).is_file():
        return None, f"Inception weights {weights_path} do not exist"
    for pkg in ("torchmetrics", "torch_fidelity"):
        if importlib.util.find_spec(pkg) is None:
            return None, f"FID/IS Inception needs {pkg} (pip install 'sdsuite[quality]' torch-fidelity)"
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=[feature], feature_extractor_weights_path=str(weights_path)
    )

    def fn(images: torch.Tensor) -> torch.Tensor:
        return net((images.clamp(0, 1) * 255).round().to(torch.uint8))

    return fn, None


def clip_model_unavailable_reason(model_dir: str | os.PathLike | None) -> str | None:
    """None when a local transformers CLIP directory (config + weights + processor) is usable, else why not."""
    if model_dir is None:
        return (
            "no local CLIP model was given "
            "(a transformers CLIP directory, e.g. a copy of openai/clip-vit-base-patch32); nothing is downloaded"
        )
    d = Path(model_dir)
    if not d.exists():
        return f"no local CLIP weights at {d} (a transformers CLIP directory is expected; nothing is downloaded)"
    if not (d / "config.json").is_file():
        return f"CLIP model directory {d} has no config.json"
    return None


def clip_score(
    images: torch.Tensor, prompts: Sequence[str], model_dir: str | os.PathLike | None, batch_size: int = 32
) -> dict:
    """CLIP score with a LOCAL transformers CLIP model: mean over images of 100 x max(cos(image, text), 0).

    The definition of torchmetrics' CLIPScore; computed here directly because torchmetrics 1.9's
    CLIPScore breaks on transformers 5 (``get_image_features`` returns a model output there).
    Images are quantized to 8 bits first, as a saved PNG would be.
    """
    reason = clip_model_unavailable_reason(model_dir)
    if reason:
        return unavailable_metric("1", reason)
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
    return value_metric(
        float(scores.mean()),
        "1",
        per_image=[float(x) for x in scores],
        model=str(model_dir),
        scale="100 x cosine similarity",
    )


# -- acceptance windows ------------------------------------------------------------------------
