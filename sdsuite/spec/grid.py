"""The case grid from flag values: one builder for ``sdsuite run``/``sdsuite sweep`` and the pytest plugin.

Every function reads flags through ``get(dest)``, by the CLI's dest (``lambda d: getattr(args, d, None)``
for argparse, ``sdsuite.spec.flags.pytest_getter(config)`` for pytest, which answers the CLI default of a
flag pytest does not have). The two front ends differ only in their defaults: the CLI measures one case
(tiny-sd, the checkpoint's scheduler), the plugin's suite (``suite=True``) the quick grid of the embedded
models, plus the wider one with ``--full``.

The modules that check the axes (cases, tasks, prompt sets, optimization sets) are imported when a grid is
built, not when this module is (the CLI imports it to parse flags).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sdsuite.core.errors import UsageError
from sdsuite.core.limits import split_list
from sdsuite.pipelines.registry import DEFAULT_SCHEDULER, VARIANTS

if TYPE_CHECKING:
    from sdsuite.spec.case import Case, GridSpec

Getter = Callable[[str], Any]

# The plugin's suite: the quick grid (embedded tiny models, fast samplers) and what --full adds.
QUICK_SCHEDULERS = ("euler", "dpm++2m", "ddim")
QUICK_DIT_SCHEDULERS = ("default",)  # one flow-matching case per tiny DiT model: the quick selection is near 60 s
CORE_SCHEDULERS = (
    "ddim",
    "pndm",
    "lms",
    "euler",
    "euler-a",
    "heun",
    "dpm++2m",
    "dpm++2m-karras",
    "dpm++2m-sde-karras",
    "unipc",
)
FLOW_SCHEDULERS = ("default", "dpm++2m-flow", "unipc-flow")  # --full on the DiT variants (valid for SD 3 and FLUX)
TINY = tuple(n for n, v in VARIANTS.items() if v.embedded)
REAL = tuple(n for n, v in VARIANTS.items() if not v.embedded)

# Flags whose values make an explicit case grid (else the plugin runs its suite).
CASE_AXES = ("variant", "scheduler", "precision", "steps", "resolution")
# Flags of the optimization axis; any of them given makes fidelity ``all`` (sdsuite.cli.args).
OPTION_FLAGS = (
    "attention",
    "kv_cache",
    "vae_slicing",
    "vae_tiling",
    "offload",
    "compile",
    "channels_last",
    "fuse_qkv",
    "quantize",
    "recipe",
    "drop_t5",
)


def option_sets_from(get: Getter) -> list:
    """The optimization axis from flag values read by ``get(name)`` (argparse or pytest); UsageError when unknown."""
    from sdsuite.optimizations.sets import option_grid

    def axis(name: str) -> list[str] | None:
        return split_list(get(name)) or None

    return option_grid(
        attention=axis("attention"),
        kv_cache=axis("kv_cache"),
        recipes=axis("recipe"),
        offload=axis("offload"),
        compile_mode=axis("compile"),
        quantization=axis("quantize"),
        vae_slicing=bool(get("vae_slicing")),
        vae_tiling=bool(get("vae_tiling")),
        channels_last=bool(get("channels_last")),
        fused_qkv=bool(get("fuse_qkv")),
        drop_t5=bool(get("drop_t5")),
    )


def task_axes_from(get: Getter, large: bool = False) -> dict:
    """GridSpec fields of the task axes (tasks, strengths, images per prompt) from flag values."""
    from sdsuite.core.limits import STRENGTH, int_list
    from sdsuite.spec.tasks import TEXT_TO_IMAGE, validate_task

    tasks = [validate_task(t) for t in split_list(get("task"))] or [TEXT_TO_IMAGE]
    strengths: list[float | None] = [STRENGTH.parse(x, "--strength") for x in split_list(get("strength"))]
    if strengths and tasks == [TEXT_TO_IMAGE]:
        raise UsageError("--strength applies to --task image-to-image or inpainting.")
    ipp = int_list(get("images_per_prompt"), "images_per_prompt", large=large) or [1]
    return {"tasks": tasks, "strengths": strengths or [None], "images_per_prompt": ipp}


def prompt_axis_from(source: str | None, n: int | None, prompt: str | None) -> list[tuple[str, str]]:
    """(prompt id, text) pairs of ``--prompts``/``--num-prompts`` (empty without --prompts)."""
    from sdsuite.spec.prompts import load_prompt_set

    if source is None:
        if n is not None:
            raise UsageError("--num-prompts needs --prompts (builtin, a COCO captions .json or a text file).")
        return []
    if prompt:
        raise UsageError("--prompt and --prompts are exclusive: give one prompt or a prompt set.")
    if n is None and str(source).lower().endswith(".json"):
        raise UsageError(
            "a COCO captions file needs --num-prompts N (the seed-42 subset size; val2017 holds 5000 images)."
        )
    return load_prompt_set(source, n).items()


def with_reference(sets: list, compare: bool) -> list:
    """``--compare-options``: the reference set joins the axis (first), so every other set has one to compare with."""
    if not compare:
        return sets
    from sdsuite.quality.effects import REFERENCE

    return [REFERENCE, *(s for s in sets if s != REFERENCE)]


def options_given(get: Getter) -> bool:
    """Whether an optimization axis was asked for (``--compare-options`` or any option flag)."""
    return any(get(name) for name in OPTION_FLAGS) or bool(get("compare_options"))


def build_grids(get: Getter, *, suite: bool = False) -> tuple[list[GridSpec], bool]:
    """Build (and validate) the case grids from flag values; also whether case axes were given (``CASE_AXES``).

    ``suite=False`` (the CLI): one grid, by default the single case tiny-sd with the checkpoint's scheduler.
    ``suite=True`` (the pytest plugin): without case axes the quick grid of the embedded models (plus the wider
    one with ``--full``); with them, the embedded models and quick schedulers stand in for the axes not given.
    """
    from sdsuite.core import limits as validate
    from sdsuite.spec.case import DEFAULT_PROMPT, GridSpec, parse_resolution

    large = validate.allow_large(get("allow_large"))
    validate.check_flags(get, large=large, dests=("guidance_scale", "num_prompts"))
    prompt, negative = get("prompt"), get("negative_prompt")
    if prompt is not None and not prompt.strip():
        raise UsageError("--prompt is empty; give the prompt text, or leave the flag out for the default prompt.")
    if negative is not None and not negative.strip():
        raise UsageError("--negative-prompt is empty; give the text, or leave the flag out for none.")
    explicit = any(get(name) for name in CASE_AXES)
    steps = validate.int_list(get("steps"), "steps", large=large) or [None]
    resolutions = [parse_resolution(r) for r in split_list(get("resolution"))] or [None]
    for text, res in zip(split_list(get("resolution")), resolutions, strict=False):
        validate.check_resolution(*res, text, large=large)
    batch_sizes = validate.int_list(get("batch_size"), "batch_size", large=large) or [1]
    axes = task_axes_from(get, large=large)
    biggest = max((r[0] * r[1] for r in resolutions if r), default=0)
    if biggest:
        validate.check_pixels_per_call(
            biggest * max(batch_sizes) * max(axes["images_per_prompt"]), "the largest case", large=large
        )
    variants = split_list(get("variant")) or (list(TINY) if suite else ["tiny-sd"])
    quick = suite and all(v in TINY for v in variants)
    schedulers = split_list(get("scheduler"))
    grid = GridSpec(
        variants=variants,
        schedulers=schedulers or (list(QUICK_SCHEDULERS) if quick else [DEFAULT_SCHEDULER]),
        # Each variant's default: fp32 for the UNet generation and the tiny models, bf16 for the real DiT variants.
        precisions=split_list(get("precision")) or [None],
        steps=steps,
        resolutions=resolutions,
        batch_sizes=batch_sizes,
        seeds=validate.int_list(get("seed"), "seed") or [0],
        guidance_scale=get("guidance_scale"),
        prompt=prompt or DEFAULT_PROMPT,
        negative_prompt=negative,
        **axes,
        prompts=prompt_axis_from(get("prompts"), get("num_prompts"), prompt),
        options=with_reference(option_sets_from(get), bool(get("compare_options"))),
    )
    grids = [grid]
    if quick and not schedulers:
        # The quick samplers are UNet ones: the DiT variants run their flow-matching default instead.
        dits = [v for v in variants if VARIANTS[v].is_dit]
        if dits:
            unets = [v for v in variants if v not in dits]
            grids = [dataclasses.replace(grid, variants=unets)] if unets else []
            grids.append(dataclasses.replace(grid, variants=dits, schedulers=list(QUICK_DIT_SCHEDULERS)))
            grid = grids[0]
    if suite and not explicit and get("full"):
        tiny_unets = [v for v in TINY if not VARIANTS[v].is_dit]
        grids.append(
            dataclasses.replace(grid, variants=tiny_unets, schedulers=CORE_SCHEDULERS, precisions=["fp32", "bf16"])
        )
        tiny_dits = [v for v in TINY if VARIANTS[v].is_dit]
        grids.append(
            dataclasses.replace(grid, variants=tiny_dits, schedulers=FLOW_SCHEDULERS, precisions=["fp32", "bf16"])
        )
        real_unets = [v for v in REAL if not VARIANTS[v].is_dit]
        grids.append(
            dataclasses.replace(
                grid, variants=real_unets, schedulers=["default", "dpm++2m-karras"], precisions=["fp16"]
            )
        )
        grids.append(
            dataclasses.replace(
                grid, variants=[v for v in REAL if VARIANTS[v].is_dit], schedulers=list(FLOW_SCHEDULERS),
                precisions=["bf16"],
            )
        )  # fmt: skip
    return grids, explicit


def expand_grids(grids: list[GridSpec]) -> list[Case]:
    """The cases of all ``grids``, in order, each once."""
    seen: set = set()
    cases: list[Case] = []
    for grid in grids:
        for c in grid.expand():
            if c not in seen:
                seen.add(c)
                cases.append(c)
    return cases
