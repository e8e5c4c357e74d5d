"""Flags shared by the commands that run cases (run, and later sweep)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sdsuite.core.errors import UsageError
from sdsuite.spec.flags import FORMATS as FORMATS  # re-exported: --format's choices
from sdsuite.spec.flags import add_argparse_flags
from sdsuite.spec.grid import OPTION_FLAGS as OPTION_FLAGS  # re-exported
from sdsuite.spec.grid import options_given

if TYPE_CHECKING:
    from sdsuite.measure.context import RunOptions
    from sdsuite.spec.case import GridSpec


def add_case_arguments(p: argparse.ArgumentParser) -> None:
    """Case axes: repeatable or comma-separated flags make a grid (the flags are declared in sdsuite.spec.flags)."""
    add_argparse_flags(p, "case", "measurement")
    add_optimization_arguments(p)
    add_telemetry_arguments(p)


def add_optimization_arguments(p: argparse.ArgumentParser) -> None:
    """Optimization, task, prompt-set and profiling axes (docs/optimizations.md); comma lists make a grid."""
    add_argparse_flags(p, "optimizations", "task", "profiling")


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
    given = options_given(lambda name: getattr(args, name, None))
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
    from sdsuite.gpu.telemetry import telemetry_options_from

    return telemetry_options_from(lambda name: getattr(args, name))


def run_options_from_args(args: argparse.Namespace, device) -> RunOptions:
    """RunOptions of ``sdsuite run``/``sdsuite sweep`` from parsed flags."""
    from sdsuite.measure.context import RunOptions

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
    """Build (and validate) the case grid from parsed flags (sdsuite.spec.grid.build_grids)."""
    from sdsuite.core.limits import allow_large, check_flags
    from sdsuite.spec.grid import build_grids

    check_flags(
        lambda name: getattr(args, name),
        large=allow_large(getattr(args, "allow_large", False)),
        dests=("runs", "warmup"),
    )
    grids, _ = build_grids(lambda name: getattr(args, name, None))
    return grids[0]
