"""One scale-out task: an ordinary ``sdsuite sweep`` (or ``sdsuite run``) restricted to the task's points, in its
own directory.

Run as ``python -m sdsuite.launch.worker SPEC TASK`` (local launcher, plain sbatch) or as the
function submitit pickles (``run_task``). The task directory is named by SLURM job and task id when
SLURM runs it, so a resubmitted task never writes over an earlier attempt. A SLURM task given
several GPUs (``--slurm-gpus-per-node N``) spreads its points over them, one process per GPU, each
in its own directory ``slurm-<job>_<task>-gpu<i>``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdsuite.core.errors import InputFileError, SdsuiteError
from sdsuite.launch.merge import TASKS_DIR, merge_tasks
from sdsuite.launch.shards import PointRef, TaskSpec

SPEC_FILE = "spec.json"
SPEC_SCHEMA = "sdsuite-launch-spec"
SPEC_VERSION = 2  # 2: the command's worker entry is named by the front end (``entry``), not by a table here
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# A spec names its worker entry as ``module:function``, a function of sdsuite marked with @launch_entry; anything
# else is refused before it is called (a shared --out must not be a way to run code).
_ENTRY = re.compile(r"(sdsuite(?:\.[a-z_][a-z0-9_]*)+):([a-z_][a-z0-9_]*)")
_ENTRY_MARK = "__sdsuite_launch_entry__"


def launch_entry(fn):
    """Mark a command handler as one a launch spec may name: the worker calls it with a task's arguments (its points
    only), the launcher with a plan sink (``plan_sink``) to get the plan. The front end decorates its handlers; the
    launcher never imports the front end."""
    setattr(fn, _ENTRY_MARK, True)
    return fn


def entry_name(fn) -> str:
    """``module:function`` of a marked handler (ValueError for anything else)."""
    name = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    if not getattr(fn, _ENTRY_MARK, False) or not _ENTRY.fullmatch(name):
        raise ValueError(f"handler {fn!r} is not a launch entry (sdsuite.launch.worker.launch_entry)")
    return name


def resolve_entry(name: str):
    """The marked handler ``module:function`` names, or None when it names anything else."""
    import importlib

    m = _ENTRY.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        return None
    try:
        fn = getattr(importlib.import_module(m.group(1)), m.group(2), None)
    except ImportError:
        return None
    return fn if getattr(fn, _ENTRY_MARK, False) is True else None


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a task needs: the validated sweep arguments, the shared --out, the tasks of one submission."""

    args: argparse.Namespace
    out: str
    submission: str
    tasks: tuple[TaskSpec, ...]
    gpus_per_task: int = 1  # SLURM --gpus-per-node: a task with several spreads its points over them


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON data (None, bool, int, finite float, str, lists and string-keyed objects of them)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(f"{where}: {type(value).__name__} is not JSON data")


def spec_to_json(spec: LaunchSpec) -> dict:
    """The spec as a JSON document: the arguments as plain values, the handler as its entry (``module:function``)."""
    args = dict(vars(spec.args))
    handler = args.pop("handler", None)
    return {
        "schema": SPEC_SCHEMA,
        "schema_version": SPEC_VERSION,
        "entry": entry_name(handler) if handler is not None else None,
        "args": {k: _plain(v, f"args.{k}") for k, v in args.items()},
        "out": spec.out,
        "submission": spec.submission,
        "gpus_per_task": spec.gpus_per_task,
        "tasks": [
            {
                "index": t.index,
                "gpu": t.gpu,
                "points": [
                    {"key": p.key, "case_id": p.case_id, "variant": p.variant, "freq_mhz": p.freq_mhz, "group": p.group}
                    for p in t.points
                ],
            }
            for t in spec.tasks
        ],
    }


def save_spec(spec: LaunchSpec, path: Path) -> None:
    """Write the spec as JSON next to the submission's manifest (read by every task; never pickled: a shared --out
    must not be a way to run code)."""
    from sdsuite.store.results import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), json.dumps(spec_to_json(spec), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _need(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise InputFileError(
            f"{path}: {what}; not a launch spec this sdsuite wrote. Relaunch the command (it replans from --out)."
        )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def spec_from_json(doc: Any, path: Path) -> LaunchSpec:
    """Validate a decoded spec document against the schema; InputFileError naming ``path`` otherwise."""
    _need(isinstance(doc, dict), path, "expected a JSON object")
    _need(
        doc.get("schema") == SPEC_SCHEMA and doc.get("schema_version") == SPEC_VERSION,
        path,
        f"schema must be {SPEC_SCHEMA!r} version {SPEC_VERSION}",
    )
    _need(
        set(doc) == {"schema", "schema_version", "entry", "args", "out", "submission", "gpus_per_task", "tasks"},
        path,
        "unexpected or missing fields",
    )
    _need(
        isinstance(doc["entry"], str) and bool(_ENTRY.fullmatch(doc["entry"])), path, "'entry' must be module:function"
    )
    args = doc["args"]
    _need(
        isinstance(args, dict) and all(isinstance(k, str) and k.isidentifier() for k in args),
        path,
        "'args' must be an object of flag values",
    )
    try:
        _plain(args, "args")
    except ValueError as exc:
        _need(False, path, str(exc))
    _need(isinstance(doc["out"], str) and bool(doc["out"]), path, "'out' must be a directory path")
    _need(
        isinstance(doc["submission"], str) and bool(_SAFE.fullmatch(doc["submission"])),
        path,
        "'submission' must be a plain name",
    )
    _need(
        _is_int(doc["gpus_per_task"]) and doc["gpus_per_task"] >= 1, path, "'gpus_per_task' must be a positive integer"
    )
    _need(isinstance(doc["tasks"], list), path, "'tasks' must be a list")
    tasks = []
    for t in doc["tasks"]:
        _need(isinstance(t, dict) and set(t) == {"index", "gpu", "points"}, path, "a task has index, gpu and points")
        _need(
            _is_int(t["index"]) and t["index"] >= 0 and (t["gpu"] is None or (_is_int(t["gpu"]) and t["gpu"] >= 0)),
            path,
            "bad task index or gpu",
        )
        _need(isinstance(t["points"], list), path, "a task's points must be a list")
        points = []
        for p in t["points"]:
            _need(
                isinstance(p, dict) and set(p) == {"key", "case_id", "variant", "freq_mhz", "group"},
                path,
                "a point has key, case_id, variant, freq_mhz, group",
            )
            _need(
                all(isinstance(p[k], str) for k in ("key", "case_id", "variant")),
                path,
                "a point's key, case_id and variant are strings",
            )
            _need(p["freq_mhz"] is None or _is_int(p["freq_mhz"]), path, "a point's freq_mhz is an integer or null")
            _need(p["group"] is None or isinstance(p["group"], str), path, "a point's group is a string or null")
            points.append(PointRef(p["key"], p["case_id"], p["variant"], p["freq_mhz"], p["group"]))
        tasks.append(TaskSpec(t["index"], tuple(points), t["gpu"]))
    handler = resolve_entry(doc["entry"])  # validated above; imported only now, once the rest is known to be data
    _need(handler is not None, path, f"'entry' {doc['entry']!r} is not a command sdsuite launches")
    ns = argparse.Namespace(**args, handler=handler)
    return LaunchSpec(ns, doc["out"], doc["submission"], tuple(tasks), gpus_per_task=doc["gpus_per_task"])


def load_spec(path: str | os.PathLike) -> LaunchSpec:
    """The spec a launcher wrote, validated against the schema (anything else is refused with its path)."""
    from sdsuite.store.results import read_json_file

    path = Path(path)
    doc = read_json_file(path, "launch spec", "not a launch spec this sdsuite wrote. Relaunch the command.", line=False)
    return spec_from_json(doc, path)


def task_dir_name(spec: LaunchSpec, task: TaskSpec, env: dict | None = None) -> str:
    """``slurm-<job>_<task>[-gpu<g>]`` under SLURM, else ``<submission>-task<i>[-gpu<g>]``."""
    env = dict(os.environ) if env is None else env
    gpu = f"-gpu{task.gpu}" if task.gpu is not None else ""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm-{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}{gpu}"
    if env.get("SLURM_JOB_ID"):
        return f"slurm-{env['SLURM_JOB_ID']}{gpu}"
    return f"{spec.submission}-task{task.index}{gpu}"


def worker_args(spec: LaunchSpec, task: TaskSpec, task_dir: Path) -> argparse.Namespace:
    """The sweep arguments of one task: its points only, its directory, no launcher, no report (the launcher
    reports)."""
    ns = copy.copy(spec.args)
    ns.out = str(task_dir)
    ns.only_points = task.keys
    ns.gpus = None
    ns.launcher = "local"
    ns.emit_sbatch = None
    ns.no_report = True
    ns.scaleout = True
    ns.plan_sink = None
    ns.launch_task = {"submission": spec.submission, "task": task.index, "gpu": task.gpu, "task_dir": task_dir.name}
    if getattr(ns, "sim_state_file", None):  # one simulated GPU per task: one state file each
        ns.sim_state_file = f"{ns.sim_state_file}.{task_dir.name}"
    return ns


def task_gpus(spec: LaunchSpec, env: dict | None = None) -> int:
    """How many GPUs this task spreads its points over: what it asked for, capped by what it sees (1 when it sees
    fewer than 2)."""
    if spec.gpus_per_task <= 1:
        return 1
    from sdsuite.launch.gpus import gpu_count

    simulated = getattr(spec.args, "telemetry", None) == "sim"
    return max(1, min(spec.gpus_per_task, gpu_count(simulated=simulated)))


def task_cpus(env: dict | None = None) -> int:
    """CPUs this task may use: SLURM's ``SLURM_CPUS_PER_TASK`` when set, else the process's CPU affinity."""
    env = dict(os.environ) if env is None else env
    raw = env.get("SLURM_CPUS_PER_TASK", "")
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cap_cpu_threads() -> None:
    """Under SLURM, torch gets the task's CPUs, not every core of the node (tasks sharing a node would oversubscribe it
    and distort CPU-side timings); an explicit OMP_NUM_THREADS wins."""
    if os.environ.get("SLURM_CPUS_PER_TASK") and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(task_cpus())


def run_task(spec_path: str, index: int) -> int:
    """Measure task ``index`` of the spec, then merge every finished task into the shared --out; the command's exit
    code."""
    from sdsuite.core.quiet import quiet_third_party_imports

    quiet_third_party_imports()
    _cap_cpu_threads()
    spec = load_spec(spec_path)
    task = spec.tasks[int(index)]
    n_gpus = task_gpus(spec) if task.gpu is None else 1
    if n_gpus > 1 and len(task.points) > 1:
        return _spread_over_gpus(spec, task, n_gpus)
    task_dir = Path(spec.out) / TASKS_DIR / task_dir_name(spec, task)
    ns = worker_args(spec, task, task_dir)
    print(
        f"sdsuite task {index}: {len(task.keys)} point(s) -> {task_dir} "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})",
        flush=True,
    )
    try:
        rc = int(ns.handler(ns) or 0)
    except SdsuiteError as exc:
        print(f"sdsuite: error: {exc}", file=sys.stderr)
        rc = exc.exit_code
    finally:
        merge_tasks(spec.out)  # even a failing task keeps what it finished
    clocks = sys.modules.get("sdsuite.gpu.clocks")  # imported only by commands that can change clocks
    return clocks.restore_verdict(rc) if clocks is not None else rc


def _spread_over_gpus(spec: LaunchSpec, task: TaskSpec, n_gpus: int) -> int:
    """A task holding several GPUs: one local worker per GPU on its share of the points (each locks and restores its
    own GPU)."""
    from sdsuite.launch.local import run_local
    from sdsuite.launch.shards import tasks_per_gpu

    parent = task_dir_name(spec, task)
    subtasks = tuple(tasks_per_gpu(task.points, range(n_gpus)))
    sub = LaunchSpec(spec.args, spec.out, f"{spec.submission}-task{task.index}", subtasks, gpus_per_task=1)
    sub_dir = Path(spec.out) / TASKS_DIR / f"{parent}-launch"
    sub_path = sub_dir / SPEC_FILE
    save_spec(sub, sub_path)
    threads = (
        max(1, task_cpus() // len(subtasks)) if str(getattr(spec.args, "device", "auto")) in ("cpu", "auto") else None
    )
    print(
        f"sdsuite task {task.index}: {len(task.keys)} point(s) over {len(subtasks)} GPU(s); logs in {sub_dir}",
        flush=True,
    )
    try:
        codes = run_local(sub_path, subtasks, sub_dir, cpu_threads=threads)
    finally:
        merge_tasks(spec.out)
    return 2 if 2 in codes else (1 if any(codes) else 0)


if __name__ == "__main__":  # pragma: no cover - exercised through the launchers
    if len(sys.argv) != 3:
        sys.exit("usage: python -m sdsuite.launch.worker SPEC TASK_INDEX")
    from sdsuite.launch.local import die_with_parent

    die_with_parent()
    try:
        sys.exit(run_task(sys.argv[1], int(sys.argv[2])))
    except SdsuiteError as exc:  # a spec that is not one sdsuite wrote: one line, exit 2
        print(f"sdsuite: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
