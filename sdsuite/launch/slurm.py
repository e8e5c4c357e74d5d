"""SLURM through submitit: one job-array task per TaskSpec, logs under ``OUT/slurm/<job id>``; or a plain sbatch
script."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdsuite.core.errors import UsageError

INSTALL_HINT = "pip install 'sdsuite[slurm]'"


@dataclass(frozen=True)
class SlurmOptions:
    """sbatch settings of a submission (None: the cluster's default)."""

    partition: str | None = None
    account: str | None = None
    time_min: int = 60
    gpus_per_node: int = 1
    constraint: str | None = None  # GPU class, e.g. "h100"
    array_parallelism: int = 64
    cpus_per_task: int | None = None
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # extra sbatch flags, e.g. (("qos", "high"),)


def parse_extra_flags(values: Sequence[str] | None) -> tuple[tuple[str, str], ...]:
    """``--slurm-flag qos=high`` (or ``--qos=high``) -> (("qos", "high"),); a bare flag gets an empty value."""
    out = []
    for raw in values or ():
        text = raw.strip().lstrip("-")
        key, _, value = text.partition("=")
        if not key or not all(c.isalnum() or c in "-_" for c in key):
            raise UsageError(f"--slurm-flag {raw!r}: expected KEY=VALUE, e.g. --slurm-flag qos=high.")
        out.append((key, value))
    return tuple(out)


def require_submitit():
    """Import submitit, or one clear UsageError naming the extra to install."""
    try:
        import submitit
    except ImportError:
        raise UsageError(
            f"--launcher slurm submits through submitit, which is not installed; {INSTALL_HINT}."
        ) from None
    _submitit_logs_to_stderr_only()
    return submitit


def _submitit_logs_to_stderr_only() -> None:
    """submitit logs to stdout as well as stderr (each warning twice); stdout is sdsuite's (tables, JSON): keep
    stderr."""
    import logging

    logger = logging.getLogger("submitit")
    for h in list(logger.handlers):
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stdout:
            logger.removeHandler(h)


def submit_array(
    spec_path: Path, n_tasks: int, out: Path, opts: SlurmOptions, name: str = "sdsuite-sweep"
) -> tuple[str, list]:
    """Submit ``n_tasks`` array tasks running ``run_task(spec, i)``; (array job id, submitit jobs)."""
    submitit = require_submitit()
    from sdsuite.launch.worker import run_task

    ex = submitit.AutoExecutor(folder=str(out / "slurm" / "%j"), cluster="slurm")
    params: dict = {"timeout_min": opts.time_min, "slurm_array_parallelism": opts.array_parallelism, "name": name}
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.account:
        params["slurm_account"] = opts.account
    if opts.gpus_per_node:
        params["gpus_per_node"] = opts.gpus_per_node
    if opts.constraint:
        params["slurm_constraint"] = opts.constraint
    if opts.cpus_per_task:
        params["cpus_per_task"] = opts.cpus_per_task
    if opts.extra:
        params["slurm_additional_parameters"] = {k.replace("-", "_"): v for k, v in opts.extra}
    ex.update_parameters(**params)
    jobs = ex.map_array(run_task, [str(spec_path)] * n_tasks, list(range(n_tasks)))
    array_id = str(jobs[0].job_id).split("_")[0] if jobs else ""
    return array_id, jobs


def sbatch_script(spec_path: Path, n_tasks: int, out: Path, opts: SlurmOptions, name: str = "sdsuite-sweep") -> str:
    """A job-array script for plain ``sbatch`` users, equivalent to what submitit submits."""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --array=0-{n_tasks - 1}%{opts.array_parallelism}",
        f"#SBATCH --output={out / 'slurm'}/%A_%a.log",
        f"#SBATCH --time={opts.time_min}",
    ]
    if opts.partition:
        lines.append(f"#SBATCH --partition={opts.partition}")
    if opts.account:
        lines.append(f"#SBATCH --account={opts.account}")
    if opts.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={opts.gpus_per_node}")
    if opts.constraint:
        lines.append(f"#SBATCH --constraint={opts.constraint}")
    if opts.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={opts.cpus_per_task}")
    lines += [f"#SBATCH --{k}={v}" if v else f"#SBATCH --{k}" for k, v in opts.extra]
    lines += [
        "# Each task measures its share of the points into OUT/tasks/slurm-<job>_<task>, "
        "then merges into OUT/results.jsonl.",
        "# Resubmit after failures with the same `sdsuite sweep ... --emit-sbatch` (it lists only missing points).",
        f"exec {shlex.quote(sys.executable)} -m sdsuite.launch.worker "
        f'{shlex.quote(str(spec_path))} "$SLURM_ARRAY_TASK_ID"',
        "",
    ]
    return "\n".join(lines)


def queued_tasks(job_id: str) -> dict[str, str]:
    """Array task id -> state of the tasks SLURM still lists (empty when squeue is absent or the job is gone)."""
    import shutil
    import subprocess

    if not job_id or not shutil.which("squeue"):
        return {}
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and "_" in parts[0]:
            states[parts[0].split("_", 1)[1]] = parts[1]
    return states
