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
    add_telemetry_arguments(p)


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
    )


def new_run_id() -> str:
    """Sortable, unique run id: UTC timestamp plus a short random suffix."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
