"""``sdsuite run``: measure one case or a grid and append the records to <out>/results.jsonl."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sdsuite.commands.common import add_case_arguments, grid_from_args, new_run_id, optimization_run_options, telemetry_options_from_args
from sdsuite.display import print_records
from sdsuite.engine import run_grid
from sdsuite.hardware import resolve_device
from sdsuite.pipelines.build import validate_weights
from sdsuite.results import check_writable_dir
from sdsuite.runner import RunOptions
from sdsuite.telemetry import TelemetrySetup, open_setup


def register(sub) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser("run", help="measure one case or a grid of cases", description=__doc__)
    add_case_arguments(p)
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    """Validate everything first (exit 2 before any work), then measure; exit 1 if any case failed."""
    grid = grid_from_args(args)
    device = resolve_device(args.device)
    validate_weights(args.weights)
    out = check_writable_dir(args.out)
    # Opens the telemetry device and resolves --freq against its supported clocks (exit 2 on bad input).
    telemetry = open_setup(telemetry_options_from_args(args), device.type, device.index or 0)
    try:
        return _run(args, dataclasses.replace(grid, freqs_mhz=telemetry.freqs_mhz).expand(), device, out, telemetry)
    finally:
        telemetry.close()


def _run(args: argparse.Namespace, cases: list, device, out, telemetry: TelemetrySetup) -> int:
    opts = RunOptions(
        runs=args.runs,
        warmup=args.warmup,
        device=str(device),
        weights=args.weights,
        count_flops=not args.no_flops,
        min_energy_window_s=args.min_energy_window,
        **optimization_run_options(args),
    )
    run_id = new_run_id()
    err = Console(stderr=True)
    show_progress = not args.no_progress and err.is_terminal
    total_runs = len(cases) * opts.runs
    records: list[dict] = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, disable=not show_progress
    ) as progress:
        task = progress.add_task("measuring", total=total_runs)
        run_grid(
            cases,
            opts,
            device,
            str(out),
            run_id,
            energy_meter=telemetry.meter,
            clock_session=telemetry.clock_session(),
            on_case_start=lambda c: progress.update(task, description=c.case_id),
            on_run=lambda i: progress.advance(task),
            on_record=records.append,
        )
    if args.format == "json":
        from sdsuite.cli import print_json

        print_json(records)
    else:
        out_console = Console() if sys.stdout.isatty() else Console(width=200)
        print_records(records, out_console)
        if args.compare_options:
            from rich.markup import escape

            from sdsuite.effects import effect_notes, effects_table

            out_console.print(effects_table(records))
            for note in effect_notes(records):
                out_console.print(f"[dim]note: {escape(note)}[/dim]")
        out_console.print(f"{len(records)} record(s) appended to {out / 'results.jsonl'} (run {run_id}, device {device})")
    failed = [r for r in records if r["status"] == "failed"]
    for r in failed:
        print(f"sdsuite: case {r['case_id']} failed: {r['reason']}", file=sys.stderr)
    if failed and all(r.get("error_type") for r in failed) and len(failed) == len(records):
        return 2  # nothing could run, and every failure was an input problem (e.g. missing weights)
    return 1 if failed else 0
