"""``sdsuite run``: measure one case or a grid and append the records to <out>/results.jsonl.

With ``--gpus 0,1`` the cases are spread over local GPUs (one process each); with ``--launcher slurm``
they are submitted as a SLURM job array (or written as a script with ``--emit-sbatch``). A launched
run is resumable: a rerun (or ``--resume``) on the same --out runs only the cases not finished there.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from sdsuite.cli.args import add_case_arguments, grid_from_args, run_options_from_args, telemetry_options_from_args
from sdsuite.cli.commands import help_of
from sdsuite.core.console import console as make_console
from sdsuite.core.console import print_json
from sdsuite.core.errors import UsageError
from sdsuite.launch.scaleout import LaunchTarget, add_scaleout_arguments, launch, wants_launch
from sdsuite.launch.worker import launch_entry
from sdsuite.measure.context import new_run_id
from sdsuite.store.results import ResultsDir, check_writable_dir

if TYPE_CHECKING:
    from rich.console import Console

    from sdsuite.gpu.telemetry import TelemetrySetup

# Imported by the handler once the flags are valid (torch, rich's progress): sdsuite.measure.{engine,hardware,display},
# sdsuite.pipelines.build, sdsuite.gpu.telemetry.


def register(sub) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser("run", help=help_of("run"), description=__doc__)
    add_case_arguments(p)
    add_scaleout_arguments(p, "run")  # --gpus, --launcher slurm, --emit-sbatch (sdsuite.launch)
    p.set_defaults(handler=cmd_run)


@launch_entry
def cmd_run(args: argparse.Namespace) -> int:
    """Validate everything first (exit 2 before any work), then measure; exit 1 if any case failed."""
    if wants_launch(args):  # several GPUs or SLURM: the launcher plans through this command, then runs workers
        return launch(args, TARGET)
    if args.resume and not args.scaleout:
        raise UsageError(
            "--resume applies to a launched run (--gpus or --launcher slurm); a plain `sdsuite run` always measures "
            "(`sdsuite sweep` resumes by itself)."
        )
    grid = grid_from_args(args)
    grid.expand()  # every name of the grid checked against the registries (data) before torch is imported
    from sdsuite.measure.hardware import apply_threads, resolve_device
    from sdsuite.pipelines.build import validate_weights

    apply_threads(args.threads)
    device = resolve_device(args.device)
    validate_weights(args.weights)
    # Opens the telemetry device and resolves --freq and --power-limit against it (exit 2 on bad input), before
    # --out is created: a refused command leaves no empty results directory behind.
    from sdsuite.gpu.telemetry import open_setup

    telemetry = open_setup(telemetry_options_from_args(args), device.type, device.index or 0)
    try:
        out = check_writable_dir(args.out)
        ResultsDir(out).prepare()  # validated before anything is measured (a corrupt file: exit 2, untouched)
        keys = None
        if args.scaleout:  # planned by a launcher, or a launched worker's share of the cases
            plan = _plan(args, grid, device, out, telemetry)
            if plan is None:
                return 0  # the launcher took the plan
            keys = {p.case: p.key for p in plan.to_run}
            cases = list(keys)
        else:
            cases = dataclasses.replace(
                grid,
                freqs_mhz=telemetry.freqs_mhz,
                power_limits_w=telemetry.power_limits_w,
                mem_freqs_mhz=telemetry.mem_freqs_mhz,
            ).expand()
        return _run(args, cases, device, out, telemetry, keys)
    finally:
        telemetry.close()


def _plan(args: argparse.Namespace, grid, device, out, telemetry: TelemetrySetup):
    """The cases as scale-out points (identity keys; finished ones in --out marked done); None once a launcher took
    it."""
    from sdsuite.dvfs.sweep_engine import build_plan, device_identity
    from sdsuite.launch.scaleout import scaleout_identity, scaleout_plan

    topts = telemetry.options
    settings = {
        "command": "run",  # a run case and a sweep point with the same case are different measurements
        "runs": args.runs,
        "warmup": args.warmup,
        "weights": args.weights,
        "min_energy_window_s": args.min_energy_window,
        "energy_source": topts.energy_source,
        "mem_freq_mhz": None,  # a case field now (the memory-clock axis); kept so older point keys stay valid
        "settle_s": topts.settle_s,
        "cooldown": topts.cooldown,
    }
    identity = scaleout_identity(args, device_identity(telemetry.describe(), device))
    plan = build_plan(
        grid.expand(),
        telemetry.freqs_mhz,
        power_limits_w=telemetry.power_limits_w,
        mem_freqs_mhz=telemetry.mem_freqs_mhz,
        device=identity,
        settings=settings,
        existing=ResultsDir(out).records(),
    )
    return scaleout_plan(args, plan)


def print_launched(
    args: argparse.Namespace, out, chosen: list[dict], *, missing: int = 0, complete: bool = True
) -> None:
    """After a launched run: the record of every planned case (the latest finished one, else the failed one), printed as
    ``sdsuite run`` prints its own (table, effects with --compare-options, failure reasons; or JSON)."""
    from sdsuite.measure.display import print_records

    if args.format == "json":
        print_json(chosen)
    else:
        out_console = make_console()
        if chosen:
            print_records(chosen, out_console)
            if args.compare_options:
                _print_effects(chosen, out_console)
        out_console.print(f"{len(chosen)} case(s) in {out / 'results.jsonl'}")
    for r in chosen:
        if r.get("status") == "failed":
            print(f"sdsuite: case {r['case_id']} failed: {r.get('reason')}", file=sys.stderr)


def _print_effects(records: list[dict], console: Console) -> None:
    from sdsuite.quality.effects import effect_notes, effects_table

    console.print(effects_table(records))
    for note in effect_notes(records):
        console.print(f"note: {note}", style="dim")


def _run(
    args: argparse.Namespace, cases: list, device, out, telemetry: TelemetrySetup, keys: dict | None = None
) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sdsuite.measure.context import RunContext
    from sdsuite.measure.display import print_records
    from sdsuite.measure.engine import run_grid

    opts = run_options_from_args(args, device)
    run_id = new_run_id()
    err = make_console(stderr=True)
    show_progress = not args.no_progress and err.is_terminal
    total_runs = len(cases) * opts.runs
    records: list[dict] = []

    def on_record(rec: dict) -> None:
        """Keep the record; without a progress bar (piped, --no-progress) print one line per finished case on stderr."""
        records.append(rec)
        if not show_progress:
            from sdsuite.core.metrics import metric_center
            from sdsuite.measure.display import fmt_seconds

            status = rec["status"] if rec["status"] == "ok" else f"{rec['status']}: {rec.get('reason')}"
            lat = metric_center((rec.get("metrics") or {}).get("latency_s"))
            took = f", latency {fmt_seconds(lat)}" if lat is not None else ""
            err.print(f"[{len(records)}/{len(cases)}] {rec['case_id']}: {status}{took}")

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not show_progress,
    ) as progress:
        task = progress.add_task("measuring", total=total_runs)
        run_grid(
            cases,
            RunContext(opts, device, run_id, energy_meter=telemetry.meter, clock_session=telemetry.clock_session()),
            str(out),
            on_case_start=lambda c: progress.update(task, description=c.case_id),
            on_run=lambda i: progress.advance(task),
            on_record=on_record,
            annotate=_annotator(args, keys),
        )
    if args.format == "json":
        print_json(records)
    else:
        out_console = make_console()
        print_records(records, out_console)
        if args.compare_options:
            _print_effects(records, out_console)
        out_console.print(
            f"{len(records)} record(s) appended to {out / 'results.jsonl'} (run {run_id}, device {device})"
        )
    failed = [r for r in records if r["status"] == "failed"]
    for r in failed:
        print(f"sdsuite: case {r['case_id']} failed: {r['reason']}", file=sys.stderr)
    if failed and all(r.get("error_type") for r in failed) and len(failed) == len(records):
        return 2  # nothing could run, and every failure was an input problem (e.g. missing weights)
    return 1 if failed else 0


def _annotator(args: argparse.Namespace, keys: dict | None):
    """A launched worker tags each record with its point key, submission, task and GPU (merge and resume read them)."""
    if keys is None:
        return None
    from sdsuite.launch.scaleout import scaleout_annotation

    def annotate(case, rec: dict) -> None:
        rec["scaleout"] = scaleout_annotation(args, keys[case]) or {"point_key": keys[case]}

    return annotate


# What the launcher launches for ``sdsuite run --gpus/--launcher slurm/--emit-sbatch``.
TARGET = LaunchTarget("run", cmd_run, print_launched)
