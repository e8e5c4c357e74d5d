"""The local launcher: one worker process per GPU, each seeing only its GPU (CUDA_VISIBLE_DEVICES).

GPU state safety: every terminating signal the launcher gets (SIGINT, SIGTERM, SIGHUP, SIGQUIT) is
forwarded to each worker, and the launcher waits until every worker has restored its GPU and exited
before it exits itself. A launcher killed with SIGKILL cannot forward anything, so each worker also asks
the kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``) and restores on that.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from sdsuite.launch.gpus import worker_env
from sdsuite.launch.shards import TaskSpec

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_PR_SET_PDEATHSIG = 1


PARENT_ENV = "SDSUITE_LAUNCHER_PID"


def die_with_parent() -> None:
    """In a worker, first thing: ask for SIGTERM when the launcher dies (the worker then restores its clocks)."""
    raw = os.environ.get(PARENT_ENV, "")
    if not raw.isdigit():
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: forwarding still covers every catchable signal
        return
    if os.getppid() != int(raw):  # the launcher died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_local(
    spec_path: Path, tasks: Sequence[TaskSpec], log_dir: Path, *, cpu_threads: int | None = None
) -> list[int]:
    """Start every task at once (one process per GPU), wait, return their exit codes.

    Processes, not threads: each worker has its own CUDA context and its own clock session, which
    locks and restores its GPU's clocks independently of the others.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[TaskSpec, subprocess.Popen]] = []
    received: list[int] = []

    def forward(signum, frame) -> None:
        received.append(signum)
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signum)  # each worker restores its own clocks, then exits

    previous = {}
    if threading_main():
        for sig in FORWARDED_SIGNALS:
            previous[sig] = signal.signal(sig, forward)
    try:
        for t in tasks:
            env = worker_env(t.gpu if t.gpu is not None else 0)
            env[PARENT_ENV] = str(os.getpid())
            if cpu_threads and "OMP_NUM_THREADS" not in os.environ:
                env["OMP_NUM_THREADS"] = str(cpu_threads)  # N workers on one CPU must not each take every core
            with open(log_dir / f"task{t.index}-gpu{t.gpu}.log", "w", encoding="utf-8") as log:
                procs.append((t, start_worker(spec_path, t.index, env, log)))
            if received:  # a signal arrived while starting: the new worker gets it too
                procs[-1][1].send_signal(received[-1])
        codes = [_wait(p) for _, p in procs]  # always wait: never exit while a worker still holds clocks
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        signum = received[0]
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        # Die of the signal, as the workers did, now that every one of them has restored its GPU.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return codes


def start_worker(spec_path: Path, index: int, env: dict[str, str], log) -> subprocess.Popen:
    """``python -m sdsuite.launch.worker SPEC INDEX``, its output to ``log``, in a session of its own: a Ctrl-C or
    hang-up at the terminal reaches the launcher, which forwards it exactly once."""
    cmd = [sys.executable, "-m", "sdsuite.launch.worker", str(spec_path), str(index)]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(p: subprocess.Popen) -> int:
    while True:
        try:
            return p.wait()
        except KeyboardInterrupt:  # a second Ctrl-C while waiting: keep waiting, the worker is restoring
            continue


def threading_main() -> bool:
    """signal.signal works only in the main thread."""
    import threading

    return threading.current_thread() is threading.main_thread()
