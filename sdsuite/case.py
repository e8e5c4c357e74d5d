"""A benchmark case: one point of variant x scheduler x precision x steps x resolution x batch x seed x frequency."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

from sdsuite.errors import UsageError
from sdsuite.pipelines.registry import DEFAULT_SCHEDULER, get_precision, get_scheduler, get_variant

DEFAULT_PROMPT = "a photograph of an astronaut riding a horse on the moon"


@dataclass(frozen=True)
class Case:
    """One measured configuration; ``None`` fields take the variant's defaults when resolved."""

    variant: str = "tiny-sd"
    scheduler: str = DEFAULT_SCHEDULER
    precision: str = "fp32"
    steps: int | None = None
    height: int | None = None
    width: int | None = None
    batch_size: int = 1
    seed: int = 0
    freq_mhz: int | None = None  # None: the GPU's default clock management
    guidance_scale: float | None = None
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str | None = None

    def resolved(self) -> Case:
        """Fill defaults from the variant and validate every field (raises UsageError)."""
        spec = get_variant(self.variant)
        get_scheduler(self.scheduler)
        get_precision(self.precision)
        case = replace(
            self,
            steps=spec.default_steps if self.steps is None else self.steps,
            height=spec.default_height if self.height is None else self.height,
            width=spec.default_width if self.width is None else self.width,
            guidance_scale=spec.default_guidance if self.guidance_scale is None else self.guidance_scale,
        )
        if case.steps < 1:
            raise UsageError(f"steps must be >= 1, got {case.steps}.")
        for dim in ("height", "width"):
            v = getattr(case, dim)
            if v < 8 or v % 8:
                raise UsageError(f"{dim} must be a positive multiple of 8 (the VAE downsamples by 8), got {v}.")
        if case.batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {case.batch_size}.")
        if case.seed < 0:
            raise UsageError(f"seed must be >= 0, got {case.seed}.")
        if case.freq_mhz is not None and case.freq_mhz <= 0:
            raise UsageError(f"frequency must be a positive number of MHz, got {case.freq_mhz}.")
        return case

    @property
    def case_id(self) -> str:
        """Stable, readable id, e.g. ``sd-v1.5/dpm++2m-karras/fp16/f1410/512x512/s50/b1``."""
        c = self.resolved() if self.steps is None or self.height is None or self.width is None else self
        freq = "fdefault" if c.freq_mhz is None else f"f{c.freq_mhz}"
        parts = [c.variant, c.scheduler, c.precision, freq, f"{c.width}x{c.height}", f"s{c.steps}", f"b{c.batch_size}"]
        if c.seed:
            parts.append(f"seed{c.seed}")
        return "/".join(parts)

    @property
    def param_id(self) -> str:
        """The case id in a form fit for pytest ids (no slashes)."""
        return self.case_id.replace("/", "-")

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        return asdict(self)


def parse_resolution(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (or ``N`` for square) into (height, width)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m:
        raise UsageError(f"resolution {text!r} is not WxH (e.g. 512x512) or a single size.")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) else w
    if w < 8 or h < 8 or w % 8 or h % 8:
        raise UsageError(f"resolution {text!r}: width and height must be positive multiples of 8 (the VAE downsamples by 8).")
    return h, w


def split_list(values: Iterable[str] | str | None) -> list[str]:
    """Flatten repeatable, comma-separated flag values: ``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        out.extend(x.strip() for x in str(v).split(",") if x.strip())
    return out


def parse_int_list(values: Iterable[str] | str | None, name: str) -> list[int]:
    """Comma/repeat list of integers with a clear error naming the flag."""
    out = []
    for x in split_list(values):
        try:
            out.append(int(x))
        except ValueError:
            raise UsageError(f"{name} must be an integer, got {x!r}.") from None
    return out


@dataclass(frozen=True)
class GridSpec:
    """Axis values as lists; ``expand`` makes the cartesian product of resolved cases."""

    variants: Sequence[str] = ("tiny-sd",)
    schedulers: Sequence[str] = (DEFAULT_SCHEDULER,)
    precisions: Sequence[str] = ("fp32",)
    steps: Sequence[int | None] = (None,)
    resolutions: Sequence[tuple[int, int] | None] = (None,)
    batch_sizes: Sequence[int] = (1,)
    seeds: Sequence[int] = (0,)
    freqs_mhz: Sequence[int | None] = (None,)
    guidance_scale: float | None = None
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str | None = None
    extra: dict = field(default_factory=dict)

    def expand(self) -> list[Case]:
        """All cases of the grid, validated, in a deterministic order, without duplicates."""
        cases: list[Case] = []
        seen = set()
        for v, s, p, st, res, b, seed, f in itertools.product(
            self.variants, self.schedulers, self.precisions, self.steps, self.resolutions, self.batch_sizes, self.seeds, self.freqs_mhz
        ):
            h, w = res if res is not None else (None, None)
            c = Case(v, s, p, st, h, w, b, seed, f, self.guidance_scale, self.prompt, self.negative_prompt).resolved()
            if c not in seen:
                seen.add(c)
                cases.append(c)
        return cases
