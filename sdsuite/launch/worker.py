"""One scale-out task: an ordinary ``sdsuite sweep`` (or ``sdsuite run``) restricted to the task's points, in its own directory.

Run as ``python -m sdsuite.launch.worker SPEC TASK`` (local launcher, plain sbatch) or as the
function submitit pickles (``run_task``). The task directory is named by SLURM job and task id when
SLURM runs it, so a resubmitted task never writes over an earlier attempt. A SLURM task given
several GPUs (``--slurm-gpus-per-node N``) spreads its points over them, one process per GPU, each
in its own directory ``slurm-<job>_<task>-gpu<i>``.
"""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

from sdsuite.errors import SdsuiteError
from sdsuite.launch.merge import TASKS_DIR, merge_tasks
from sdsuite.launch.tasks import TaskSpec


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a task needs: the validated sweep arguments, the shared --out, the tasks of one submission."""

    args: argparse.Namespace
    out: str
    submission: str
    tasks: tuple[TaskSpec, ...]
    gpus_per_task: int = 1  # SLURM --gpus-per-node: a task with several spreads its points over them


def save_spec(spec: LaunchSpec, path: Path) -> None:
    """Pickle the spec next to the submission's manifest (read by every task)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(spec))


def load_spec(path: str | os.PathLike) -> LaunchSpec:
    """The spec a launcher wrote (trusted: written by sdsuite into the user's own --out)."""
    return pickle.loads(Path(path).read_bytes())


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
    """The sweep arguments of one task: its points only, its directory, no launcher, no report (the launcher reports)."""
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
    """How many GPUs this task spreads its points over: what it asked for, capped by what it sees (1 when it sees fewer than 2)."""
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
    """Measure task ``index`` of the spec, then merge every finished task into the shared --out; the command's exit code."""
    from sdsuite.cli import quiet_third_party_imports

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
        f"sdsuite task {index}: {len(task.keys)} point(s) -> {task_dir} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})",
        flush=True,
    )
    try:
        rc = int(ns.handler(ns) or 0)
    except SdsuiteError as exc:
        print(f"sdsuite: error: {exc}", file=sys.stderr)
        rc = exc.exit_code
    finally:
        merge_tasks(spec.out)  # even a failing task keeps what it finished
    from sdsuite.cli import _restore_verdict

    return _restore_verdict(rc)


def _spread_over_gpus(spec: LaunchSpec, task: TaskSpec, n_gpus: int) -> int:
    """A task holding several GPUs: one local worker per GPU on its share of the points (each locks and restores its own GPU)."""
    from sdsuite.launch.local import run_local
    from sdsuite.launch.tasks import tasks_per_gpu

    parent = task_dir_name(spec, task)
    subtasks = tuple(tasks_per_gpu(task.points, range(n_gpus)))
    sub = LaunchSpec(spec.args, spec.out, f"{spec.submission}-task{task.index}", subtasks, gpus_per_task=1)
    sub_dir = Path(spec.out) / TASKS_DIR / f"{parent}-launch"
    sub_path = sub_dir / "spec.pkl"
    save_spec(sub, sub_path)
    threads = max(1, task_cpus() // len(subtasks)) if str(getattr(spec.args, "device", "auto")) in ("cpu", "auto") else None
    print(f"sdsuite task {task.index}: {len(task.keys)} point(s) over {len(subtasks)} GPU(s); logs in {sub_dir}", flush=True)
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
    sys.exit(run_task(sys.argv[1], int(sys.argv[2])))
