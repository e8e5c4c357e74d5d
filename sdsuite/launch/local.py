"""The local launcher: one worker process per GPU, each seeing only its GPU (CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from sdsuite.launch.gpus import worker_env
from sdsuite.launch.tasks import TaskSpec


def run_local(spec_path: Path, tasks: Sequence[TaskSpec], log_dir: Path, *, cpu_threads: int | None = None) -> list[int]:
    """Start every task at once (one process per GPU), wait, return their exit codes; Ctrl-C reaches each worker.

    Processes, not threads: each worker has its own CUDA context and its own clock session, which
    locks and restores its GPU's clocks independently of the others.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[TaskSpec, subprocess.Popen]] = []
    try:
        for t in tasks:
            env = worker_env(t.gpu if t.gpu is not None else 0)
            if cpu_threads and "OMP_NUM_THREADS" not in os.environ:
                env["OMP_NUM_THREADS"] = str(cpu_threads)  # N workers on one CPU must not each take every core
            log = open(log_dir / f"task{t.index}-gpu{t.gpu}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
            cmd = [sys.executable, "-m", "sdsuite.launch.worker", str(spec_path), str(t.index)]
            procs.append((t, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
            log.close()
        return [p.wait() for _, p in procs]
    except KeyboardInterrupt:
        for _, p in procs:  # each worker restores its own clocks on SIGINT
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for _, p in procs:
            p.wait()
        raise
