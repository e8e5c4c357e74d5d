"""Flags shared by the commands that run cases (run, and later sweep)."""

from __future__ import annotations

import argparse
import datetime as _dt
import uuid
from typing import TYPE_CHECKING

from sdsuite.core.errors import UsageError
from sdsuite.core.limits import split_list
from sdsuite.pipelines.registry import DEFAULT_SCHEDULER
from sdsuite.spec.case import GridSpec, parse_resolution
from sdsuite.spec.flags import FORMATS as FORMATS  # re-exported: --format's choices
from sdsuite.spec.flags import add_argparse_flags

if TYPE_CHECKING:
    from sdsuite.measure.runner import RunOptions


def add_case_arguments(p: argparse.ArgumentParser) -> None:
    """Case axes: repeatable or comma-separated flags make a grid (the flags are declared in sdsuite.spec.flags)."""
    add_argparse_flags(p, "case", "measurement")
    add_optimization_arguments(p)
    add_telemetry_arguments(p)


def add_optimization_arguments(p: argparse.ArgumentParser) -> None:
    """Optimization, task, prompt-set and profiling axes (docs/optimizations.md); comma lists make a grid."""
    add_argparse_flags(p, "optimizations", "task", "profiling")


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
)


def option_sets_from(get) -> list:
    """The optimization axis from flag values, ``get(name)`` reading a flag (argparse or pytest); UsageError when unknown."""
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
    )


def task_axes_from(get, large: bool = False) -> dict:
    """GridSpec fields of the task axes (tasks, strengths, images per prompt) from flag values."""
    from sdsuite.spec.tasks import TEXT_TO_IMAGE, validate_task

    tasks = [validate_task(t) for t in split_list(get("task"))] or [TEXT_TO_IMAGE]
    from sdsuite.core.limits import STRENGTH, int_list

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


def optimization_run_options(args: argparse.Namespace) -> dict:
    """RunOptions fields from the optimization/profiling flags (fidelity ``all`` when an option axis was given)."""
    trace = args.trace
    if trace is not None:
        import os
        from pathlib import Path

        trace = str(Path(trace or Path(args.out) / "traces"))
        try:
            Path(trace).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot write traces to --trace {trace!r}: {exc.strerror or exc}. Choose a writable directory."
            ) from None
        if not os.access(trace, os.W_OK):
            raise UsageError(
                f"cannot write traces to --trace {trace!r}: permission denied. Choose a writable directory."
            )
    given = any(getattr(args, name, None) for name in OPTION_FLAGS) or args.compare_options
    return {
        "spans": not args.no_spans,
        "trace_dir": trace,
        "fidelity": "off" if args.no_fidelity else ("all" if given else "auto"),
    }


def add_telemetry_arguments(p: argparse.ArgumentParser) -> None:
    """GPU telemetry, energy windows and clock control (see sdsuite.gpu.telemetry, sdsuite.gpu.clocks)."""
    add_argparse_flags(p, "telemetry")


def telemetry_options_from_args(args: argparse.Namespace):
    """TelemetryOptions from parsed flags (validated later by sdsuite.gpu.telemetry.open_setup)."""
    return telemetry_options_from(lambda name: getattr(args, name))


def telemetry_options_from(get, flag_of=lambda name: "--" + name.replace("_", "-")):
    """TelemetryOptions from flag values, ``get(dest)`` reading a flag by its CLI dest (argparse, or the pytest plugin
    through sdsuite.spec.flags.pytest_getter); ``flag_of(dest)`` names the flag in an error message."""
    from sdsuite.core.limits import check_flags
    from sdsuite.gpu.telemetry import TelemetryOptions

    check_flags(
        get,
        flag_of,
        dests=("freq_floor", "mem_freq", "clock_settle", "poll_interval_ms", "min_energy_window", "idle_baseline"),
    )
    return TelemetryOptions(
        backend=get("telemetry"),
        gpu_model=get("gpu_model"),
        sim_faults=tuple(get("sim_fault") or ()),
        freq=get("freq"),
        freq_floor_mhz=get("freq_floor"),
        mem_freq_mhz=get("mem_freq"),
        allow_clock_control=get("allow_clock_control"),
        settle_s=get("clock_settle"),
        energy_source=get("energy_source"),
        poll_interval_ms=get("poll_interval_ms"),
        power_trace=get("power_trace"),
        idle_baseline_s=get("idle_baseline"),
        cooldown=get("cooldown"),
    )


def run_options_from_args(args: argparse.Namespace, device) -> RunOptions:
    """RunOptions of ``sdsuite run``/``sdsuite sweep`` from parsed flags."""
    from sdsuite.measure.runner import RunOptions

    return RunOptions(
        runs=args.runs,
        warmup=args.warmup,
        device=str(device),
        weights=args.weights,
        count_flops=not args.no_flops,
        min_energy_window_s=args.min_energy_window,
        **optimization_run_options(args),
    )


def grid_from_args(args: argparse.Namespace) -> GridSpec:
    """Build (and validate) the case grid from parsed flags."""
    from sdsuite.core import limits as validate
    from sdsuite.spec.case import DEFAULT_PROMPT

    large = validate.allow_large(getattr(args, "allow_large", False))
    validate.check_flags(
        lambda name: getattr(args, name), large=large, dests=("runs", "warmup", "guidance_scale", "num_prompts")
    )
    if args.prompt is not None and not args.prompt.strip():
        raise UsageError("--prompt is empty; give the prompt text, or leave the flag out for the default prompt.")
    if args.negative_prompt is not None and not args.negative_prompt.strip():
        raise UsageError("--negative-prompt is empty; give the text, or leave the flag out for none.")
    steps = validate.int_list(args.steps, "steps", large=large) or [None]
    resolutions = [parse_resolution(r) for r in split_list(args.resolution)] or [None]
    for text, res in zip(split_list(args.resolution), resolutions, strict=False):
        validate.check_resolution(*res, text, large=large)
    batch_sizes = validate.int_list(args.batch_size, "batch_size", large=large) or [1]
    axes = task_axes_from(lambda name: getattr(args, name, None), large=large)
    biggest = max((r[0] * r[1] for r in resolutions if r), default=0)
    if biggest:
        validate.check_pixels_per_call(
            biggest * max(batch_sizes) * max(axes["images_per_prompt"]), "the largest case", large=large
        )
    return GridSpec(
        variants=split_list(args.variant) or ["tiny-sd"],
        schedulers=split_list(args.scheduler) or [DEFAULT_SCHEDULER],
        precisions=split_list(args.precision) or ["fp32"],
        steps=steps,
        resolutions=resolutions,
        batch_sizes=batch_sizes,
        seeds=validate.int_list(args.seed, "seed") or [0],
        guidance_scale=args.guidance_scale,
        prompt=args.prompt or DEFAULT_PROMPT,
        negative_prompt=args.negative_prompt,
        **axes,
        prompts=prompt_axis_from(getattr(args, "prompts", None), getattr(args, "num_prompts", None), args.prompt),
        options=_with_reference(
            option_sets_from(lambda name: getattr(args, name, None)), getattr(args, "compare_options", False)
        ),
    )


def _with_reference(sets: list, compare: bool) -> list:
    """``--compare-options``: the reference set joins the axis (first), so every other set has something to compare with."""
    if not compare:
        return sets
    from sdsuite.quality.effects import REFERENCE  # imports torch: only with --compare-options

    return [REFERENCE, *(s for s in sets if s != REFERENCE)]


def new_run_id() -> str:
    """Sortable, unique run id: UTC timestamp plus a short random suffix."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
