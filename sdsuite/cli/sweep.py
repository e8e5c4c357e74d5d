"""``sdsuite sweep``: measure each case at each SM clock (DVFS), resumable, then report the optima.

Each point: lock the clock, settle, one warm-up run (dropped), N measured runs with energy windows;
the clocks are restored at the end, on Ctrl-C and on any error. Records are appended as each point
finishes; running the same command again on the same --out skips the finished points.
--freq defaults to ``all`` here (every supported clock >= --freq-floor), or to ``default`` when --power-limit
sweeps power limits (give both for a frequency x power-limit grid). On ``--telemetry sim`` the
device runs on a virtual clock by default (--sim-clock): settle and cooldown cost no real time, the
time of the work follows a model of the clock, and --min-energy-window defaults to 0 (1 s otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sdsuite.cli.args import add_case_arguments, grid_from_args, run_options_from_args, telemetry_options_from_args
from sdsuite.cli.commands import help_of
from sdsuite.cli.report import add_analysis_arguments
from sdsuite.core.console import console as make_console
from sdsuite.core.console import print_json, readable
from sdsuite.core.errors import UsageError
from sdsuite.dvfs.plan_text import plan_lines
from sdsuite.dvfs.points import DEFAULT_MAX_THROTTLE_PCT, ORDERS
from sdsuite.dvfs.simtime import SIM_CLOCKS, SimTimeModel, reopen_simulated
from sdsuite.gpu.telemetry import TelemetrySetup, open_setup
from sdsuite.launch.scaleout import (
    LaunchTarget,
    add_scaleout_arguments,
    launch,
    scaleout_annotation,
    scaleout_identity,
    scaleout_plan,
    wants_launch,
)
from sdsuite.launch.worker import launch_entry
from sdsuite.measure.context import new_run_id
from sdsuite.measure.display import fmt_seconds
from sdsuite.store.image_files import IMAGE_MODES
from sdsuite.store.results import ResultsDir, check_writable_dir, exclusive_sweep

if TYPE_CHECKING:  # the measuring modules import torch: the handlers import them once the flags are valid
    from sdsuite.dvfs.sweep_engine import PointDone


def register(sub) -> None:
    """Add the ``sweep`` subcommand."""
    p = sub.add_parser("sweep", help=help_of("sweep"), description=__doc__)
    add_case_arguments(p)
    s = p.add_argument_group("sweep")
    s.add_argument(
        "--settle",
        dest="clock_settle",
        type=float,
        default=None,
        metavar="S",
        help="wait after each clock change (default: 2 s; virtual on the simulated device)",
    )
    s.add_argument("--order", choices=ORDERS, default="descending", help="order of the clocks (default: descending)")
    s.add_argument("--shuffle-seed", type=int, default=0, metavar="N", help="seed of --order shuffled (default: 0)")
    s.add_argument(
        "--save-images",
        choices=IMAGE_MODES,
        default="sample",
        help="PNGs to keep: none, sample (lowest/middle/highest clock; default), all",
    )
    s.add_argument(
        "--max-throttle",
        type=float,
        default=DEFAULT_MAX_THROTTLE_PCT,
        metavar="PCT",
        help="fail a point whose observed SM clock is off the lock by more than PCT%% (default: 5)",
    )
    add_analysis_arguments(s)
    s.add_argument("--no-report", action="store_true", help="do not write <out>/report after the sweep")
    s.add_argument("--plan-only", action="store_true", help="print the plan and exit")
    sim = p.add_argument_group("simulated device (--telemetry sim)")
    sim.add_argument(
        "--sim-clock",
        choices=SIM_CLOCKS,
        default=None,
        help="virtual (default: modelled time, instant settle) or real (wall clock, CPU time)",
    )
    sim.add_argument(
        "--sim-beta",
        type=float,
        default=SimTimeModel.beta,
        metavar="B",
        help=f"share of the work that scales with the clock in the time model (default: {SimTimeModel.beta})",
    )
    sim.add_argument(
        "--sim-state-file",
        default=None,
        metavar="PATH",
        help="write the simulated GPU's clock settings to PATH on every change (to check restores)",
    )
    add_scaleout_arguments(p, "sweep")  # --gpus, --launcher slurm, --emit-sbatch (sdsuite.launch)
    p.set_defaults(handler=cmd_sweep, freq=None, out="sdsuite-sweep", min_energy_window=None)


def _sim_clock(args: argparse.Namespace) -> str | None:
    if args.telemetry != "sim":
        if args.sim_clock is not None or args.sim_state_file:
            raise UsageError("--sim-clock and --sim-state-file apply to the simulated device; add --telemetry sim.")
        return None
    if not 0.0 <= args.sim_beta <= 1.0:
        raise UsageError(f"--sim-beta must be in [0, 1] (1: all work scales with the clock), got {args.sim_beta:g}.")
    return args.sim_clock or "virtual"


@launch_entry
def cmd_sweep(args: argparse.Namespace) -> int:
    """Validate everything (exit 2 before any work), print the plan, sweep, then report."""
    from sdsuite.core.limits import check_flags

    check_flags(
        lambda name: getattr(args, name),
        lambda dest: "--settle/--clock-settle" if dest == "clock_settle" else "--" + dest.replace("_", "-"),
        dests=("max_throttle", "max_slowdown", "sim_beta", "shuffle_seed", "clock_settle"),
    )
    if args.freq is None:  # no --freq: every clock, unless the sweep is over power limits (then the clocks are left)
        args.freq = "all" if str(args.power_limit or "default").strip().lower() in ("", "default") else "default"
    if wants_launch(args):  # several GPUs or SLURM: the launcher plans through this command, then runs workers
        return launch(args, TARGET)
    grid = grid_from_args(args)
    cases = grid.expand()  # every name of the grid checked against the registries (data) before torch is imported
    from sdsuite.measure.hardware import apply_threads, resolve_device
    from sdsuite.pipelines.build import require_weights, validate_weights

    apply_threads(args.threads)
    device = resolve_device(args.device)
    validate_weights(args.weights)
    require_weights(grid.variants, args.weights)  # absent weights: refused before measuring, one message, exit 2
    sim_clock = _sim_clock(args)
    virtual = sim_clock == "virtual"
    if args.min_energy_window is None:
        # On the virtual clock the energy is integrated exactly; repeating generations buys nothing.
        args.min_energy_window = 0.0 if virtual else 1.0
    topts = telemetry_options_from_args(args)
    if virtual and topts.settle_s is None:
        topts = dataclasses.replace(topts, settle_s=2.0)  # the methodology's ~2 s, at no real cost
    # Resolves --freq, --power-limit and --mem-freq against the device (exit 2 on bad input) before --out is created:
    # a refused sweep leaves no empty results directory behind.
    setup = open_setup(topts, device.type, device.index or 0)
    try:
        out = check_writable_dir(args.out)
        vclock = None
        if setup.simulated:
            setup, vclock = reopen_simulated(setup, clock=sim_clock, state_path=args.sim_state_file)
        return _sweep(args, cases, device, out, setup, sim_clock, vclock)
    finally:
        setup.close()


def _sweep(
    args: argparse.Namespace, cases: list, device, out: Path, setup: TelemetrySetup, sim_clock: str | None, vclock
) -> int:
    # The lock is taken before planning: a second sweep on this --out must not plan points the first is measuring.
    with contextlib.nullcontext() if args.plan_only else exclusive_sweep(out):
        return _plan_and_execute(args, cases, device, out, setup, sim_clock, vclock)


def _plan_and_execute(
    args: argparse.Namespace, cases: list, device, out: Path, setup: TelemetrySetup, sim_clock: str | None, vclock
) -> int:
    from sdsuite.dvfs.sweep_engine import (
        build_plan,
        check_free_disk,
        device_identity,
        estimate_sweep,
        sweep_images,
        sweep_settings,
    )

    opts = run_options_from_args(args, device)
    model = SimTimeModel(beta=args.sim_beta)
    run_id = new_run_id()
    results = ResultsDir(out)
    if args.plan_only:
        existing = results.records()  # a corrupt file stops here (exit 2), untouched
    else:
        results.prepare()  # temp files of older versions removed, a torn last line repaired, every record validated
        existing = results.records()
    settings = sweep_settings(setup, opts, sim_clock, model)
    identity = scaleout_identity(args, device_identity(setup.describe(), device))
    plan = build_plan(
        cases,
        setup.freqs_mhz,
        power_limits_w=setup.power_limits_w,
        mem_freqs_mhz=setup.mem_freqs_mhz,
        device=identity,
        settings=settings,
        order=args.order,
        seed=args.shuffle_seed,
        existing=existing,
    )
    plan = scaleout_plan(args, plan)  # a launcher takes the plan here; a worker keeps only its points
    if plan is None:
        return 0
    saver = sweep_images(plan, args.save_images, out, run_id=run_id, setup=setup, device=device)
    est = estimate_sweep(plan, opts, setup=setup, sim_clock=sim_clock, saver=saver, out=out, existing=existing)
    info = make_console(stderr=args.format == "json")
    for line in plan_lines(plan, est, setup=setup, sim_clock=sim_clock, out=out, saver=saver, opts=opts):
        info.print(line)
    check_free_disk(est, existing, out)  # exit 2 after the plan is printed, before any work
    if args.plan_only:
        return 0
    return _execute(
        args, plan, opts, device, out, results, run_id, setup, sim_clock, vclock, model, saver, info, settings
    )


def _execute(args, plan, opts, device, out, results, run_id, setup, sim_clock, vclock, model, saver, info, settings):
    """The sweep with its progress bar (a line per point without a terminal), then the table and the report."""
    from sdsuite.dvfs.sweep_engine import execute_sweep

    err = make_console(stderr=True)
    show = not args.no_progress and err.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not show,
    )
    with progress:
        task = progress.add_task("sweeping", total=len(plan.to_run))

        def done(d: PointDone) -> None:
            """Advance the bar; without one, print a line per point."""
            progress.advance(task)
            if not show:
                r = d.record
                status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason')}"
                err.print(
                    f"[{d.index + 1}/{len(plan.points)}] {d.point.case.case_id}: {status}",
                    highlight=False,
                    markup=False,
                )

        outcome = execute_sweep(
            plan,
            opts,
            device,
            results=results,
            run_id=run_id,
            setup=setup,
            sim_clock=sim_clock,
            vclock=vclock,
            model=model,
            settings=settings,
            images=saver,
            max_throttle_pct=args.max_throttle,
            scaleout=scaleout_annotation(args),
            on_point_start=lambda i, p: progress.update(task, description=p.case.case_id),
            on_point_done=done,
        )
    return _finish(args, outcome, out, info)


def _finish(args, outcome, out: Path, info: Console) -> int:
    recs = outcome.records
    failed = [r for r in recs if r["status"] == "failed"]
    if args.format == "json":
        print_json({"records": recs, "skipped_done": outcome.skipped, "stopped": outcome.stopped})
    else:
        t = Table(
            title=f"sweep: {len(recs)} point(s) measured in {fmt_seconds(outcome.wall_s)}, "
            f"{outcome.skipped} already done",
            title_justify="left",
        )
        capped = any((r.get("case") or {}).get("power_limit_w") is not None for r in recs)
        cols = ("clock", *(("power limit",) if capped else ()), "case", "status", "time/call", "energy/image")
        for col in (*cols, "avg power"):
            t.add_column(col, justify="right" if col not in ("case", "status") else "left")
        for r in recs:
            m = r.get("metrics") or {}
            windows = [w for w in r.get("energy_windows") or [] if w.get("available")]
            tcall = sorted(w["duration_s"] / max(w.get("generations", 1), 1) for w in windows)
            e = (m.get("energy_per_image_j") or {}).get("median")
            pw = (m.get("avg_power_w") or {}).get("median")
            f = r["case"].get("freq_mhz")
            pl = r["case"].get("power_limit_w")
            enforced = (r.get("power_limit") or {}).get("enforced_w")
            limit = ("default" if pl is None else f"{pl} W") + (f" ({enforced:g} W)" if enforced is not None else "")
            t.add_row(
                "default" if f is None else f"{f} MHz",
                *((limit,) if capped else ()),
                r["case_id"],
                r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason')}"[:90],
                fmt_seconds(tcall[len(tcall) // 2]) if tcall else "n/a",
                f"{e:.3f} J" if e is not None else "n/a",
                f"{pw:.1f} W" if pw is not None else "n/a",
            )
        info.print(readable(t, "clock", "case"))
        info.print(f"records appended to {out / 'results.jsonl'}", highlight=False, markup=False)
    if outcome.overheads_s:
        med = sorted(outcome.overheads_s)[len(outcome.overheads_s) // 2]
        info.print(
            f"harness overhead per point (lock, verify, bookkeeping; no settle/cooldown): median {fmt_seconds(med)}",
            highlight=False,
            markup=False,
        )
    for r in failed:
        print(f"sdsuite: point {r['case_id']} failed: {r['reason']}", file=sys.stderr)
    if outcome.stopped:
        print(f"sdsuite: sweep stopped: {outcome.stopped}; rerun the same command to resume.", file=sys.stderr)
    if not args.no_report:
        _report(args, out, info)
    return 1 if failed or outcome.stopped else 0


def _report(args, out: Path, info: Console) -> None:
    from sdsuite.cli.report import print_optima
    from sdsuite.dvfs import analyze, load_result_sets, write_report

    sets = load_result_sets([out])
    analysis = analyze(sets, reference=args.reference, max_slowdown_pct=args.max_slowdown)
    files = write_report(analysis, sets, out / "report")
    if args.format != "json":
        print_optima(analysis, info)
    plots = f"{len(files.plots)} plot(s)" if not files.empty else f"no plots: {files.empty}"
    info.print(f"report: {files.directory / 'dvfs_report.md'} ({plots})", highlight=False, markup=False)
    if files.plots_error:
        print(f"sdsuite: note: {files.plots_error}", file=sys.stderr)


def report_launched(args, out: Path, chosen: list[dict], *, missing: int, complete: bool) -> None:
    """After a launched sweep: the DVFS report once every point is finished, and its records under --format json."""
    json_out = args.format == "json"
    if complete and not args.no_report:
        _report(args, out, make_console(stderr=json_out))
    if json_out:
        print_json({"records": chosen, "missing": missing})


# What the launcher launches for ``sdsuite sweep --gpus/--launcher slurm/--emit-sbatch``.
TARGET = LaunchTarget("sweep", cmd_sweep, report_launched)
