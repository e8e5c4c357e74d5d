"""The scale-out flags of ``sdsuite sweep`` and ``sdsuite run`` and the launcher behind them
(``--gpus``, ``--launcher slurm``, ``--emit-sbatch``).

The launcher never measures, and it never imports the front end: the command hands it a LaunchTarget (its
entry and its report). The launcher asks the entry for its plan (the same validation, exit 2 on bad input,
before anything starts), splits the points still to run into tasks and hands each task to a worker
(sdsuite.launch.worker), which runs the same entry restricted to its points; then it prints the target's
report. A point is a
sweep point (case x clock) or, for ``run``, one case of the grid. Scale-out points are identified by
GPU class (backend and name), not by the UUID of one card, so a point finished on GPU 1 counts as
done for every GPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sdsuite.core.errors import UsageError
from sdsuite.launch.gpus import gpu_count, parse_gpus
from sdsuite.launch.merge import finished_point_keys, merge_tasks
from sdsuite.launch.shards import PointRef, tasks_per_chunk, tasks_per_gpu
from sdsuite.launch.slurm import SlurmOptions, parse_extra_flags, require_submitit, sbatch_script, submit_array
from sdsuite.launch.worker import SPEC_FILE, LaunchSpec, save_spec

LAUNCHERS = ("local", "slurm")
LAUNCH_DIR = "launch"
MANIFEST = "manifest.json"


LAUNCH_COMMANDS = ("run", "sweep")


@dataclass(frozen=True)
class LaunchTarget:
    """What a front end launches: its command name, its entry and its report.

    ``entry(args)`` is the command's handler, marked with sdsuite.launch.worker.launch_entry: given ``args.plan_sink``
    it validates and hands over its plan instead of measuring; given ``args.only_points`` (a worker) it measures those
    points only. ``report(args, out, records, missing=, complete=)`` prints what the command prints after its own run,
    from the chosen record of every planned point (failed ones too)."""

    command: str
    entry: Callable[[argparse.Namespace], int]
    report: Callable[..., None]

    def plan(self, args: argparse.Namespace) -> tuple[argparse.Namespace, Any]:
        """Run the entry up to its plan (all of its validation included), without measuring."""
        ns = copy.copy(args)
        ns.gpus, ns.launcher, ns.emit_sbatch, ns.only_points = None, "local", None, None
        ns.scaleout, ns.plan_sink, ns.handler = True, [], self.entry
        rc = self.entry(ns)
        if not ns.plan_sink:
            raise UsageError(f"the {self.command} stopped before its plan (exit {rc}); nothing was launched.")
        plan = ns.plan_sink[0]
        ns.plan_sink = None
        return ns, plan


def add_scaleout_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """Add the scale-out flag group to the parser of ``command`` (run or sweep)."""
    if command not in LAUNCH_COMMANDS:
        raise ValueError(f"scale-out supports {LAUNCH_COMMANDS}, not {command!r}")
    what = "cases" if command == "run" else "points"
    g = p.add_argument_group("scale-out (one process per GPU; SLURM job arrays through submitit)")
    g.add_argument(
        "--gpus",
        default=None,
        metavar="LIST",
        help=f"spread the {what} over these GPUs, one process each: 0,1,... or all",
    )
    g.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="local (default: this machine) or slurm (job array via submitit)",
    )
    g.add_argument(
        "--points-per-task",
        type=int,
        default=8,
        metavar="N",
        help=f"SLURM: {what} per array task, per variant (default: 8)",
    )
    g.add_argument("--slurm-partition", default=None, metavar="NAME", help="SLURM partition")
    g.add_argument("--slurm-account", default=None, metavar="NAME", help="SLURM account")
    g.add_argument(
        "--slurm-time", type=int, default=60, metavar="MIN", help="time limit per array task in minutes (default: 60)"
    )
    g.add_argument(
        "--slurm-gpus-per-node",
        type=int,
        default=1,
        metavar="N",
        help="GPUs per array task, its points spread over them one process each (default: 1; 0 for CPU-only dry runs)",
    )
    g.add_argument("--slurm-constraint", default=None, metavar="FEATURE", help="node feature, e.g. the GPU class: h100")
    g.add_argument("--slurm-cpus-per-task", type=int, default=None, metavar="N", help="CPUs per array task")
    g.add_argument(
        "--slurm-parallelism", type=int, default=64, metavar="N", help="array tasks running at once (default: 64)"
    )
    g.add_argument(
        "--slurm-flag",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="extra sbatch flag, repeatable (e.g. qos=high)",
    )
    g.add_argument(
        "--wait", action="store_true", help="SLURM: wait for the array, merge and report (default: submit and return)"
    )
    if "--resume" not in p._option_string_actions:
        g.add_argument(
            "--resume",
            action="store_true",
            help=(
                f"with --gpus/--launcher: run only the {what} not finished in --out "
                "(what a launched rerun on the same --out always does)"
            ),
        )
    g.add_argument(
        "--emit-sbatch", default=None, metavar="PATH", help="write a job-array script for plain sbatch to PATH and exit"
    )
    g.add_argument("--only-points", default=None, help=argparse.SUPPRESS)  # set by the launcher for its workers
    p.set_defaults(scaleout=False, plan_sink=None, launch_command=command, launch_task=None)


def wants_launch(args: argparse.Namespace) -> bool:
    """True when the sweep must go through a launcher instead of running here."""
    return getattr(args, "only_points", None) is None and bool(
        getattr(args, "gpus", None)
        or getattr(args, "launcher", "local") != "local"
        or getattr(args, "emit_sbatch", None)
    )


def scaleout_identity(args: argparse.Namespace, identity: dict) -> dict:
    """The point identity of a scale-out sweep: the GPU class, not one card (any GPU of the class may run a point)."""
    if not getattr(args, "scaleout", False):
        return identity
    return {k: v for k, v in identity.items() if k not in ("uuid", "index")}


def scaleout_plan(args: argparse.Namespace, plan: Any) -> Any | None:
    """Hand the plan to a waiting launcher (returns None: stop there), or restrict it to a worker's points."""
    sink = getattr(args, "plan_sink", None)
    if sink is not None:
        sink.append(plan)
        return None
    keys = getattr(args, "only_points", None)
    if keys is not None:  # a worker: exactly its points (an empty task measures nothing, never the whole grid)
        wanted = set(keys)
        mine = tuple(p for p in plan.points if p.key in wanted)
        if len(mine) < len(wanted):
            raise UsageError(
                f"{len(wanted) - len(mine)} of this task's {len(wanted)} point(s) do not exist here: the launcher "
                "planned them for another device (GPU class, torch device or telemetry backend differ on this node). "
                "Submit from a node like the ones the tasks run on (e.g. in `srun --gpus 1 --pty bash`), or give "
                "--device and --telemetry explicitly."
            )
        return replace(plan, points=mine)
    return plan


def _slurm_options(args: argparse.Namespace) -> SlurmOptions:
    for flag, value, low in (
        ("--slurm-time", args.slurm_time, 1),
        ("--slurm-gpus-per-node", args.slurm_gpus_per_node, 0),
        ("--slurm-parallelism", args.slurm_parallelism, 1),
    ):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}.")
    return SlurmOptions(
        partition=args.slurm_partition,
        account=args.slurm_account,
        time_min=args.slurm_time,
        gpus_per_node=args.slurm_gpus_per_node,
        constraint=args.slurm_constraint,
        array_parallelism=args.slurm_parallelism,
        cpus_per_task=args.slurm_cpus_per_task,
        extra=parse_extra_flags(args.slurm_flag),
    )


def write_manifest(directory: Path, data: dict) -> Path:
    """The submission's manifest (launcher, job id, tasks and their point keys) for ``sdsuite status``."""
    from sdsuite.store.results import atomic_write_text

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def scaleout_annotation(args: argparse.Namespace, point_key: str | None = None) -> dict | None:
    """The ``scaleout`` block of a worker's records (submission, task, GPU; a run case's point key), else None."""
    info = getattr(args, "launch_task", None)
    if not info:
        return None
    return {**info, **({"point_key": point_key} if point_key else {})}


def launch(args: argparse.Namespace, target: LaunchTarget) -> int:
    """``sdsuite run|sweep --gpus/--launcher slurm/--emit-sbatch``: plan, split the missing points, run or submit
    them."""
    from sdsuite.store.results import check_writable_dir

    say = _say(args)
    command = target.command
    slurm = args.launcher == "slurm" or bool(args.emit_sbatch)
    if args.gpus and slurm:
        raise UsageError(
            f"--gpus spreads the {command} over this machine's GPUs; "
            "with SLURM use --slurm-gpus-per-node (GPUs per array task)."
        )
    if args.launcher == "slurm" and not args.emit_sbatch:
        require_submitit()  # before any work: name the extra to install
    sopts = _slurm_options(args) if slurm else None
    if sopts and sopts.gpus_per_node > 0 and str(args.device) == "auto":
        import torch

        if not torch.cuda.is_available():
            raise UsageError(
                "--launcher slurm plans the points here, where torch sees no GPU (--device auto means the CPU here), "
                f"but the array tasks get {sopts.gpus_per_node} GPU(s) each and would run on CUDA: different points. "
                "Submit from a GPU node of the same class (e.g. in `srun --gpus 1 --pty bash`), or for a "
                "CPU/simulated dry run pass --device cpu or --slurm-gpus-per-node 0."
            )
    if sopts and sopts.gpus_per_node > 1 and str(args.device) not in ("auto", "cuda", "cuda:0", "cpu"):
        raise UsageError(
            f"--slurm-gpus-per-node {sopts.gpus_per_node} spreads each task over its GPUs, "
            f"one process each seeing its GPU as cuda:0; leave --device at auto or cuda (got {args.device})."
        )
    gpus: tuple[int, ...] = ()
    if args.gpus:
        if args.device not in ("auto", "cuda"):
            raise UsageError(
                f"--gpus gives each worker one GPU as cuda:0; leave --device at auto or cuda (got {args.device})."
            )
        gpus = parse_gpus(args.gpus, gpu_count(simulated=args.telemetry == "sim"))
    out = check_writable_dir(args.out)
    merged = merge_tasks(out)  # what earlier tasks finished counts as done
    ns, plan = target.plan(args)
    plan_keys = [p.key for p in plan.points]
    todo = [
        PointRef(p.key, p.case.case_id, p.case.variant, p.case.freq_mhz, _option_group(p.case)) for p in plan.to_run
    ]
    say(
        f"scale-out: {len(plan.points)} point(s), {plan.already_done} already done in {out}, "
        f"{len(todo)} to run ({merged.task_dirs} task dir(s) merged)"
    )
    if not todo:
        say(f"scale-out: nothing to run; the {command} is complete (use another --out to measure again).")
        return _report_and_exit(target, ns, out, [0], plan_keys)
    tasks = tasks_per_gpu(todo, gpus) if gpus else tasks_per_chunk(todo, args.points_per_task)
    submission = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    sub_dir = out / LAUNCH_DIR / submission
    spec_path = sub_dir / SPEC_FILE
    gpus_per_task = sopts.gpus_per_node if sopts else 1
    save_spec(LaunchSpec(ns, str(out), submission, tuple(tasks), gpus_per_task=max(gpus_per_task, 1)), spec_path)
    manifest = {
        "command": command,
        "submission": submission,
        "launcher": "slurm" if slurm else "local",
        "planned_keys": plan_keys,
        "tasks": [
            {"index": t.index, "gpu": t.gpu, "keys": list(t.keys), "case_ids": [p.case_id for p in t.points]}
            for t in tasks
        ],
        "slurm": asdict(sopts) if sopts else None,
        "gpus_per_task": gpus_per_task,
        "job_id": None,
    }
    if args.emit_sbatch:
        (out / "slurm").mkdir(parents=True, exist_ok=True)
        script = Path(args.emit_sbatch)
        script.write_text(sbatch_script(spec_path, len(tasks), out, sopts, name=f"sdsuite-{command}"), encoding="utf-8")
        write_manifest(sub_dir, {**manifest, "launcher": "sbatch", "script": str(script)})
        say(f"wrote {script}: {len(tasks)} array task(s); submit with: sbatch {script}")
        _print_submission(args, {"script": str(script), "tasks": len(tasks), "out": str(out), "submission": submission})
        return 0
    if slurm:
        job_id, jobs = submit_array(spec_path, len(tasks), out, sopts, name=f"sdsuite-{command}")
        write_manifest(sub_dir, {**manifest, "job_id": job_id})
        say(
            f"submitted SLURM array job {job_id}: {len(tasks)} task(s); logs in {out / 'slurm' / job_id}; "
            f"progress: sdsuite status {out}"
        )
        if not args.wait:
            _print_submission(args, {"job_id": job_id, "tasks": len(tasks), "out": str(out), "submission": submission})
            return 0
        codes = []
        for job in jobs:
            try:
                codes.append(int(job.result() or 0))
            except Exception as exc:  # a killed or failed task: its finished points are kept, a rerun submits the rest
                say(
                    f"sdsuite: array task {job.job_id} did not finish: "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                )
                codes.append(1)
        merge_tasks(out)
        return _report_and_exit(target, ns, out, codes, plan_keys)
    write_manifest(sub_dir, manifest)
    from sdsuite.launch.local import run_local

    threads = max(1, (os.cpu_count() or 1) // len(tasks)) if str(args.device) in ("cpu", "auto") else None
    say(f"scale-out: {len(tasks)} worker(s) on GPU(s) {', '.join(str(t.gpu) for t in tasks)}; logs in {sub_dir}")
    codes = run_local(spec_path, tasks, sub_dir, cpu_threads=threads)
    merge_tasks(out)
    return _report_and_exit(target, ns, out, codes, plan_keys)


def _option_group(case) -> str:
    """The case without its optimization set: the points of one option grid run in one task (their effects need it)."""
    from sdsuite.spec.case import DEFAULT_OPTIONS

    return replace(case, options=DEFAULT_OPTIONS).case_id


def _say(args: argparse.Namespace):
    """print for the launcher's progress lines: to stderr under --format json, so stdout stays one JSON document."""
    import functools
    import sys

    return functools.partial(
        print, file=sys.stderr if getattr(args, "format", "table") == "json" else sys.stdout, flush=True
    )


def _print_submission(args: argparse.Namespace, info: dict) -> None:
    """Under --format json, what was submitted (or written) is stdout's one JSON document."""
    if getattr(args, "format", "table") == "json":
        from sdsuite.core.console import print_json

        print_json(info)


def _report_and_exit(
    target: LaunchTarget, ns: argparse.Namespace, out: Path, codes: list[int], plan_keys: list[str]
) -> int:
    """Print the command's report of the planned points; the exit code as the command itself would give it."""
    from sdsuite.launch.merge import latest_per_point
    from sdsuite.store.results import ResultsDir

    say = _say(ns)
    recs = ResultsDir(out).records()
    done = finished_point_keys(recs)
    missing = [k for k in plan_keys if k not in done]
    chosen = latest_per_point(recs, plan_keys)
    failed = [r for r in chosen if r.get("status") == "failed"]
    input_errors = bool(failed) and len(failed) == len(missing) and all(r.get("error_type") for r in failed)
    hint = ""
    if missing:
        hint = f"; {len(missing)} missing: " + (
            "fix the input (see the reasons)" if input_errors else "rerun with --resume"
        )
    say(
        f"scale-out: {len(plan_keys) - len(missing)}/{len(plan_keys)} point(s) finished in "
        f"{out / 'results.jsonl'}{hint}"
    )
    target.report(ns, out, chosen, missing=len(missing), complete=bool(recs) and not missing)
    if plan_keys and len(missing) == len(plan_keys) and (input_errors or (codes and all(c == 2 for c in codes))):
        return 2  # nothing could run, and every failure was an input problem: as `sdsuite run`/`sweep` exit
    return 1 if missing or any(codes) else 0
