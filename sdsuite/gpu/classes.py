"""GPU classes: a product name (``NVIDIA A100-SXM4-80GB``) to the class the pytest markers gate on (``a100``)."""

from __future__ import annotations

import re

GPU_CLASSES = ("v100", "a100", "h100", "h200", "l40s", "l4", "a10", "t4", "other")
_PATTERNS = [(c, re.compile(rf"\b{c}\b", re.I)) for c in GPU_CLASSES if c != "other"]


def gpu_class(name: str | None) -> str | None:
    """Map a GPU product name (``NVIDIA A100-SXM4-80GB``) to its class (``a100``); None for no GPU."""
    if not name:
        return None
    normalized = re.sub(r"[-_]", " ", name)
    for cls, pat in _PATTERNS:
        if pat.search(normalized):
            return cls
    return "other"
