"""A benchmark case: one point of variant x scheduler x precision x steps x resolution x batch x seed x frequency
(x optimization set x task x images per prompt x prompt, whose defaults leave the case id unchanged)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

from sdsuite.core.errors import UsageError
from sdsuite.core.limits import split_list
from sdsuite.optimizations.sets import DEFAULT as DEFAULT_OPTIONS
from sdsuite.optimizations.sets import OptimizationSet, parse_optimization_set
from sdsuite.pipelines.registry import DEFAULT_SCHEDULER, check_scheduler_for, get_precision, get_variant
from sdsuite.spec.tasks import DEFAULT_STRENGTH, TEXT_TO_IMAGE, validate_task

# Short task names for case ids (text-to-image, the default, adds nothing).
TASK_IDS = {"image-to-image": "img2img", "inpainting": "inpaint"}

DEFAULT_PROMPT = "a photograph of an astronaut riding a horse on the moon"


@dataclass(frozen=True)
class Case:
    """One measured configuration; ``None`` fields take the variant's defaults when resolved."""

    variant: str = "tiny-sd"
    scheduler: str = DEFAULT_SCHEDULER
    precision: str | None = "fp32"  # None: the variant's default (bf16 for the real DiT variants)
    steps: int | None = None
    height: int | None = None
    width: int | None = None
    batch_size: int = 1
    seed: int = 0
    freq_mhz: int | None = None  # None: the GPU's default clock management
    guidance_scale: float | None = None
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str | None = None
    # New axes go last (positional construction stays valid); their defaults add nothing to the id.
    options: OptimizationSet = DEFAULT_OPTIONS  # also accepts the id syntax as a string ("attn=eager+kv-cache")
    task: str = TEXT_TO_IMAGE
    strength: float | None = None  # image-to-image / inpainting only; None: DEFAULT_STRENGTH
    images_per_prompt: int = 1
    prompt_id: str | None = None  # set for prompts of a prompt set, so cases with different prompts get different ids
    power_limit_w: int | None = None  # None: the GPU's own power limit, untouched
    mem_freq_mhz: int | None = None  # None: the memory clock left alone; else locked with the SM clock

    def __post_init__(self) -> None:
        if isinstance(self.options, str):  # frozen: set through object.__setattr__, once, at construction
            object.__setattr__(self, "options", parse_optimization_set(self.options))

    @property
    def num_images(self) -> int:
        """Images per pipeline call: prompts (batch size) x images per prompt."""
        return self.batch_size * self.images_per_prompt

    def resolved(self) -> Case:
        """Fill defaults from the variant and validate every field (raises UsageError)."""
        spec = get_variant(self.variant)
        check_scheduler_for(spec, self.scheduler)
        precision = spec.default_precision if self.precision is None else self.precision
        get_precision(precision)
        case = replace(
            self,
            precision=precision,
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
            if spec.is_dit and v % 16:  # the pipelines would round it down and measure a smaller image
                raise UsageError(
                    f"{dim} must be a multiple of 16 for {spec.name} (a diffusion transformer: the VAE downsamples "
                    f"by 8, then the latents are cut in 2x2 patches), got {v}; use {v - v % 16} or {v - v % 16 + 16}."
                )
        if case.batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {case.batch_size}.")
        if case.seed < 0:
            raise UsageError(f"seed must be >= 0, got {case.seed}.")
        if case.freq_mhz is not None and case.freq_mhz <= 0:
            raise UsageError(f"frequency must be a positive number of MHz, got {case.freq_mhz}.")
        if case.mem_freq_mhz is not None and case.mem_freq_mhz <= 0:
            raise UsageError(f"memory clock must be a positive number of MHz, got {case.mem_freq_mhz}.")
        if case.power_limit_w is not None and case.power_limit_w <= 0:
            raise UsageError(f"power limit must be a positive number of W, got {case.power_limit_w}.")
        if case.images_per_prompt < 1:
            raise UsageError(f"images per prompt must be >= 1, got {case.images_per_prompt}.")
        if validate_task(case.task) == TEXT_TO_IMAGE:
            if case.strength is not None:
                raise UsageError("strength applies to image-to-image and inpainting only (the task is text-to-image).")
        else:
            case = replace(case, strength=DEFAULT_STRENGTH if case.strength is None else float(case.strength))
            if not 0.0 < case.strength <= 1.0:
                raise UsageError(f"strength must be in (0, 1], got {case.strength:g}.")
            if int(case.steps * case.strength) < 1:
                raise UsageError(
                    f"{case.task} runs int(steps x strength) denoising steps: {case.steps} x {case.strength:g} "
                    f"leaves none; raise --steps or --strength."
                )
        return case

    @property
    def case_id(self) -> str:
        """Stable, readable id, e.g. ``sd-v1.5/dpm++2m-karras/fp16/f1410/512x512/s50/b1`` (``.../b1/pl250w`` under a
        power cap)."""
        c = self if None not in (self.steps, self.height, self.width, self.precision) else self.resolved()
        freq = "fdefault" if c.freq_mhz is None else f"f{c.freq_mhz}"
        parts = [c.variant, c.scheduler, c.precision, freq, f"{c.width}x{c.height}", f"s{c.steps}", f"b{c.batch_size}"]
        if c.seed:
            parts.append(f"seed{c.seed}")
        if c.images_per_prompt != 1:
            parts.append(f"ipp{c.images_per_prompt}")
        if c.task != TEXT_TO_IMAGE:
            strength = DEFAULT_STRENGTH if c.strength is None else c.strength
            parts.append(TASK_IDS.get(c.task, c.task) + ("" if strength == DEFAULT_STRENGTH else f"-st{strength:g}"))
        if c.prompt_id is not None:
            parts.append(f"prompt-{c.prompt_id}")
        if not c.options.is_default:
            parts.append(c.options.id)
        if c.mem_freq_mhz is not None:
            parts.append(f"m{c.mem_freq_mhz}")
        if c.power_limit_w is not None:
            parts.append(f"pl{c.power_limit_w}w")
        return "/".join(parts)

    @property
    def param_id(self) -> str:
        """The case id in a form fit for pytest ids (no slashes)."""
        return self.case_id.replace("/", "-")

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields (``options`` as its id string, which parses back to the same set)."""
        return {**asdict(self), "options": self.options.id}


def parse_resolution(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (or ``N`` for square) into (height, width)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m:
        raise UsageError(f"resolution {text!r} is not WxH (e.g. 512x512) or a single size.")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) else w
    if w < 8 or h < 8 or w % 8 or h % 8:
        raise UsageError(
            f"resolution {text!r}: width and height must be positive multiples of 8 (the VAE downsamples by 8)."
        )
    return h, w


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
    precisions: Sequence[str | None] = ("fp32",)  # None: each variant's default precision
    steps: Sequence[int | None] = (None,)
    resolutions: Sequence[tuple[int, int] | None] = (None,)
    batch_sizes: Sequence[int] = (1,)
    seeds: Sequence[int] = (0,)
    freqs_mhz: Sequence[int | None] = (None,)
    guidance_scale: float | None = None
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str | None = None
    extra: dict = field(default_factory=dict)
    # Optimization/task axes; options vary fastest so the sets of one case are neighbours.
    tasks: Sequence[str] = (TEXT_TO_IMAGE,)
    strengths: Sequence[float | None] = (None,)  # used by image-to-image / inpainting only
    images_per_prompt: Sequence[int] = (1,)
    prompts: Sequence[tuple[str, str]] = ()  # (prompt_id, text) pairs of a prompt set; empty: ``prompt``
    options: Sequence[OptimizationSet] = (DEFAULT_OPTIONS,)
    power_limits_w: Sequence[int | None] = (None,)  # the power-limit axis, after the frequency
    mem_freqs_mhz: Sequence[int | None] = (None,)  # the memory-clock axis, outside the SM clock

    def expand(self) -> list[Case]:
        """All cases of the grid, validated, in a deterministic order, without duplicates."""
        cases: list[Case] = []
        seen = set()
        prompts = list(self.prompts) or [(None, self.prompt)]
        for v, s, p, st, res, b, seed, m, f, pl, (pid, text), task, strength, ipp, opts in itertools.product(
            self.variants, self.schedulers, self.precisions, self.steps, self.resolutions, self.batch_sizes, self.seeds,
            self.mem_freqs_mhz, self.freqs_mhz, self.power_limits_w, prompts, self.tasks, self.strengths,
            self.images_per_prompt, self.options,
        ):  # fmt: skip
            h, w = res if res is not None else (None, None)
            c = Case(
                v, s, p, st, h, w, b, seed, f, self.guidance_scale, text, self.negative_prompt,
                options=opts, task=task, strength=None if task == TEXT_TO_IMAGE else strength, images_per_prompt=ipp,
                prompt_id=pid, power_limit_w=pl, mem_freq_mhz=m,
            ).resolved()  # fmt: skip
            if c not in seen:
                seen.add(c)
                cases.append(c)
        return cases
