"""Flags shared by the commands that run cases (run, and later sweep)."""

from __future__ import annotations

import argparse
import datetime as _dt
import uuid

from sdsuite.case import GridSpec, parse_int_list, parse_resolution, split_list
from sdsuite.errors import UsageError
from sdsuite.pipelines.registry import DEFAULT_SCHEDULER

FORMATS = ("table", "json")


def add_case_arguments(p: argparse.ArgumentParser) -> None:
    """Case axes: repeatable or comma-separated flags make a grid."""
    g = p.add_argument_group("case (repeat a flag or give a comma list to make a grid)")
    g.add_argument("--variant", action="append", metavar="NAME", help="model variant (default: tiny-sd); see `sdsuite list variants`")
    g.add_argument("--scheduler", action="append", metavar="NAME", help=f"sampler (default: {DEFAULT_SCHEDULER} = the checkpoint's own)")
    g.add_argument("--precision", action="append", metavar="P", help="fp32 (default), fp16, bf16")
    g.add_argument("--steps", action="append", metavar="N", help="denoising steps (default: the variant's)")
    g.add_argument("--resolution", action="append", metavar="WxH", help="image size, e.g. 512x512 (default: the variant's)")
    g.add_argument("--batch-size", action="append", metavar="N", help="images per call (default: 1)")
    g.add_argument("--seed", action="append", metavar="N", help="seed of the fixed latents (default: 0)")
    g.add_argument("--prompt", default=None, help="prompt text")
    g.add_argument("--negative-prompt", default=None, help="negative prompt text")
    g.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default: the variant's)")
    m = p.add_argument_group("measurement")
    m.add_argument("--runs", type=int, default=5, help="measured runs per case (default: 5)")
    m.add_argument("--warmup", type=int, default=1, help="warm-up runs per case, not measured (default: 1)")
    m.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:<i>")
    m.add_argument("--weights", default="auto", help="auto (local path / HF cache, offline), random (real architecture), or PATH")
    m.add_argument("--no-flops", action="store_true", help="skip the extra FLOP-counting generation")
    m.add_argument("--out", default="sdsuite-results", help="results directory (default: sdsuite-results)")
    m.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_optimization_arguments(p)
    add_telemetry_arguments(p)


def add_optimization_arguments(p: argparse.ArgumentParser) -> None:
    """Optimization, task, prompt-set and profiling axes (docs/optimizations.md); comma lists make a grid."""
    o = p.add_argument_group("optimizations (comma lists make a grid; `sdsuite options` lists them and what runs here)")
    o.add_argument("--attention", action="append", metavar="K", help="attention kernel: sdpa (default), eager, sliced, xformers")
    o.add_argument("--kv-cache", action="append", metavar="on|off", help="cross-attention K/V cache computed once per generation")
    o.add_argument("--vae-slicing", action="store_true", help="decode one image at a time")
    o.add_argument("--vae-tiling", action="store_true", help="decode in tiles")
    o.add_argument("--offload", action="append", metavar="MODE", help="CPU offload (needs a GPU): model, sequential, none")
    o.add_argument(
        "--compile", action="append", nargs="?", const="default", metavar="MODE",
        help="torch.compile the UNet: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs, none",
    )  # fmt: skip
    o.add_argument("--channels-last", action="store_true", help="UNet and VAE in channels_last memory format")
    o.add_argument("--fuse-qkv", action="store_true", help="fused QKV projections (a separate cached pipeline)")
    o.add_argument("--quantize", action="append", metavar="Q", help="torchao: int8wo, int8dq, int4wo, fp8 (= fp8dq), fp8wo, none")
    o.add_argument("--recipe", "--opt", dest="recipe", action="append", metavar="SET", help="baseline, memory-saver, fast, or a set like fast+attn=eager")
    o.add_argument("--compare-options", action="store_true", help="also run the reference set (baseline) and print every set's effect against it")
    o.add_argument("--no-fidelity", action="store_true", help="skip the output comparison with the reference set")
    t = p.add_argument_group("task and prompts")
    t.add_argument("--task", action="append", metavar="T", help="text-to-image (default), image-to-image, inpainting")
    t.add_argument("--strength", action="append", metavar="S", help="image-to-image / inpainting strength in (0, 1] (default 0.75)")
    t.add_argument("--images-per-prompt", action="append", metavar="N", help="images per prompt (default 1)")
    t.add_argument("--prompts", default=None, metavar="builtin|PATH", help="prompt set, one case per prompt: builtin, a COCO captions .json or a text file")
    t.add_argument("--num-prompts", type=int, default=None, metavar="N", help="prompts taken from --prompts (COCO: a seed-42 subset)")
    f = p.add_argument_group("profiling")
    f.add_argument("--trace", nargs="?", const="", default=None, metavar="DIR", help="torch.profiler trace per case into DIR (default: <out>/traces)")
    f.add_argument("--no-spans", action="store_true", help="skip the profiled generation (load/encode/denoise/decode spans)")


OPTION_FLAGS = ("attention", "kv_cache", "vae_slicing", "vae_tiling", "offload", "compile", "channels_last", "fuse_qkv", "quantize", "recipe")


def option_sets_from(get) -> list:
    """The optimization axis from flag values, ``get(name)`` reading a flag (argparse or pytest); UsageError when unknown."""
    from sdsuite.optimizations import option_grid

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


def task_axes_from(get) -> dict:
    """GridSpec fields of the task axes (tasks, strengths, images per prompt) from flag values."""
    from sdsuite.tasks import TEXT_TO_IMAGE, validate_task

    tasks = [validate_task(t) for t in split_list(get("task"))] or [TEXT_TO_IMAGE]
    strengths: list[float | None] = []
    for x in split_list(get("strength")):
        try:
            strengths.append(float(x))
        except ValueError:
            raise UsageError(f"--strength must be a number in (0, 1], got {x!r}.") from None
    if strengths and tasks == [TEXT_TO_IMAGE]:
        raise UsageError("--strength applies to --task image-to-image or inpainting.")
    ipp = parse_int_list(get("images_per_prompt"), "--images-per-prompt") or [1]
    return {"tasks": tasks, "strengths": strengths or [None], "images_per_prompt": ipp}


def prompt_axis_from(source: str | None, n: int | None, prompt: str | None) -> list[tuple[str, str]]:
    """(prompt id, text) pairs of ``--prompts``/``--num-prompts`` (empty without --prompts)."""
    from sdsuite.prompts import load_prompt_set

    if source is None:
        if n is not None:
            raise UsageError("--num-prompts needs --prompts (builtin, a COCO captions .json or a text file).")
        return []
    if prompt:
        raise UsageError("--prompt and --prompts are exclusive: give one prompt or a prompt set.")
    if n is None and str(source).lower().endswith(".json"):
        raise UsageError("a COCO captions file needs --num-prompts N (the seed-42 subset size; val2017 holds 5000 images).")
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
            raise UsageError(f"cannot write traces to --trace {trace!r}: {exc.strerror or exc}. Choose a writable directory.") from None
        if not os.access(trace, os.W_OK):
            raise UsageError(f"cannot write traces to --trace {trace!r}: permission denied. Choose a writable directory.")
    given = any(getattr(args, name, None) for name in OPTION_FLAGS) or args.compare_options
    return {"spans": not args.no_spans, "trace_dir": trace, "fidelity": "off" if args.no_fidelity else ("all" if given else "auto")}


def add_telemetry_arguments(p: argparse.ArgumentParser) -> None:
    """GPU telemetry, energy windows and clock control (see sdsuite.telemetry, sdsuite.clocks)."""
    from sdsuite.freqspec import DEFAULT_FLOOR_MHZ, SPEC_HELP
    from sdsuite.telemetry import BACKENDS
    from sdsuite.telemetry.meter import ENERGY_SOURCES
    from sdsuite.telemetry.sim import SIM_MODELS

    t = p.add_argument_group("GPU telemetry and clocks")
    t.add_argument("--telemetry", choices=BACKENDS, default="auto", help="auto (NVML when a GPU and driver are present, else none), nvml, sim, none")
    t.add_argument("--gpu-model", choices=SIM_MODELS, default=None, help="simulated GPU for --telemetry sim (default: a100)")
    t.add_argument("--sim-fault", action="append", metavar="FAULT", help="inject into the simulated GPU: permission-denied, gpu-lost[:N], no-counter")
    t.add_argument("--freq", default="default", metavar="SPEC", help=f"SM clock axis: {SPEC_HELP} (default: default, no lock)")
    t.add_argument("--freq-floor", type=int, default=DEFAULT_FLOOR_MHZ, metavar="MHZ", help=f"lowest clock for all/step/sample (default: {DEFAULT_FLOOR_MHZ})")
    t.add_argument("--mem-freq", type=int, default=None, metavar="MHZ", help="also lock the memory clock (default: leave it)")
    t.add_argument("--allow-clock-control", action="store_true", help="allow changing GPU clocks (or SDSUITE_ALLOW_CLOCK_CONTROL=1); always restored")
    t.add_argument("--clock-settle", type=float, default=None, metavar="S", help="wait after a clock change (default: 2 s real GPU, 0 simulated)")
    t.add_argument("--energy-source", choices=ENERGY_SOURCES, default="auto", help="auto (counter where supported, else polled power), counter, poll")
    t.add_argument("--poll-interval-ms", type=float, default=20.0, metavar="MS", help="power polling interval (default: 20)")
    t.add_argument("--min-energy-window", type=float, default=1.0, metavar="S", help="repeat generations inside an energy window until it lasts S seconds (default: 1; 0: never)")
    t.add_argument("--power-trace", action="store_true", help="save the polled power trace with each record")
    t.add_argument("--idle-baseline", type=float, default=0.0, metavar="S", help="measure idle power for S seconds at each frequency point (default: 0, off)")
    t.add_argument("--cooldown", default=None, metavar="SPEC", help="between frequency points: SECONDS, or temp:CELSIUS (until cooler)")


def telemetry_options_from_args(args: argparse.Namespace):
    """TelemetryOptions from parsed flags (validated later by sdsuite.telemetry.open_setup)."""
    from sdsuite.telemetry import TelemetryOptions

    if args.min_energy_window < 0:
        raise UsageError(f"--min-energy-window must be >= 0 seconds, got {args.min_energy_window:g}.")
    return TelemetryOptions(
        backend=args.telemetry,
        gpu_model=args.gpu_model,
        sim_faults=tuple(args.sim_fault or ()),
        freq=args.freq,
        freq_floor_mhz=args.freq_floor,
        mem_freq_mhz=args.mem_freq,
        allow_clock_control=args.allow_clock_control,
        settle_s=args.clock_settle,
        energy_source=args.energy_source,
        poll_interval_ms=args.poll_interval_ms,
        power_trace=args.power_trace,
        idle_baseline_s=args.idle_baseline,
        cooldown=args.cooldown,
    )


def grid_from_args(args: argparse.Namespace) -> GridSpec:
    """Build (and validate) the case grid from parsed flags."""
    from sdsuite.case import DEFAULT_PROMPT

    if args.runs < 1:
        raise UsageError(f"--runs must be >= 1, got {args.runs}.")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {args.warmup}.")
    steps = parse_int_list(args.steps, "--steps") or [None]
    for s in steps:
        if s is not None and s < 1:
            raise UsageError(f"--steps must be >= 1, got {s}.")
    return GridSpec(
        variants=split_list(args.variant) or ["tiny-sd"],
        schedulers=split_list(args.scheduler) or [DEFAULT_SCHEDULER],
        precisions=split_list(args.precision) or ["fp32"],
        steps=steps,
        resolutions=[parse_resolution(r) for r in split_list(args.resolution)] or [None],
        batch_sizes=parse_int_list(args.batch_size, "--batch-size") or [1],
        seeds=parse_int_list(args.seed, "--seed") or [0],
        guidance_scale=args.guidance_scale,
        prompt=args.prompt or DEFAULT_PROMPT,
        negative_prompt=args.negative_prompt,
        **task_axes_from(lambda name: getattr(args, name, None)),
        prompts=prompt_axis_from(getattr(args, "prompts", None), getattr(args, "num_prompts", None), args.prompt),
        options=_with_reference(option_sets_from(lambda name: getattr(args, name, None)), getattr(args, "compare_options", False)),
    )


def _with_reference(sets: list, compare: bool) -> list:
    """``--compare-options``: the reference set joins the axis (first), so every other set has something to compare with."""
    from sdsuite.effects import REFERENCE

    return [REFERENCE, *(s for s in sets if s != REFERENCE)] if compare else sets


def new_run_id() -> str:
    """Sortable, unique run id: UTC timestamp plus a short random suffix."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
