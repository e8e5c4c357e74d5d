"""sanity: split out of sdsuite.quality (see the package docstring)."""

from __future__ import annotations

import torch

BLACK_MAX = 1.0 / 255.0  # every pixel below one 8-bit level: the image is black
CONSTANT_STD = 1e-4  # pixel standard deviation below this: the image is one flat colour


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
