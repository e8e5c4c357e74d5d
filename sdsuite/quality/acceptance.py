"""acceptance: split out of sdsuite.quality (see the package docstring)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdsuite.core.errors import UsageError, unknown_choice


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
        "optsd",
        fid=Window(high=16.0),
        clip_score=Window(low=30.0),
        note="OptSD targets FID <= 16, CLIP >= 0.30 (cosine)",
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
        raise UsageError(
            f"acceptance windows {text_or_path!r} are neither a JSON object nor a readable JSON file ({exc})."
        ) from None
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
