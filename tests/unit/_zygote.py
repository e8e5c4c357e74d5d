"""``sdsuite`` as a real process that starts at once: forked from a server that already imported torch, diffusers and
sdsuite (multiprocessing's forkserver), instead of a fresh interpreter that spends ~10 s importing them on 2 cores.

For the tests where the process is the point (a signal, SIGKILL, a journal naming the pid, a launcher's worker tree)
but its interpreter start is not: the child has its own pid, environment, working directory, signal dispositions,
stdout/stderr files and exit status, like ``subprocess.Popen([sys.executable, "-c", CHILD, *argv], ...)``. What a fresh
start alone shows (import noise, the library loader finding libnvidia-ml through LD_LIBRARY_PATH) stays with
subprocesses. The server is started once per test process, with one OpenMP thread, and is never given CUDA work.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

PRELOAD = ["sdsuite.cli.main", "sdsuite.pipelines.build", "sdsuite.dvfs.sweep_engine", "diffusers", "transformers"]
_context = None


def _forkserver():
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # read once, when the server imports torch
        try:
            from multiprocessing import forkserver

            forkserver.ensure_running()
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        _context = ctx
    return _context


def _preloaded() -> None:
    """Import what the server preloads (the server ignores a failed preload; a child must not)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)


def _child(argv: list[str], env: dict[str, str], cwd: str, out_path: str, err_path: str, how: dict) -> None:
    """In the forked process: become ``sdsuite ARGV`` (or ``python -m MODULE ARGV``) with this environment, directory
    and output files."""
    if how.get("new_session"):
        os.setsid()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115 - the process's own
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has it
    _preloaded()
    if how.get("prepare"):  # (module, function, keyword arguments): run first, e.g. load a fake library
        import importlib

        module, function, kwargs = how["prepare"]
        getattr(importlib.import_module(module), function)(**kwargs)
    try:
        if how.get("module"):
            import runpy

            sys.argv = [how["module"], *argv]
            runpy.run_module(how["module"], run_name="__main__", alter_sys=True)
            code = 0
        else:
            from sdsuite.cli.main import main

            code = main(argv)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    atexit._run_exitfuncs()  # multiprocessing ends its children with os._exit: an interpreter exit runs these
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


class _Output:
    """``Popen.stderr``'s ``read()``: what the child wrote so far."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace")


class SdsuiteProcess:
    """The parts of ``subprocess.Popen`` the tests use: pid, poll, wait, send_signal, kill, communicate, returncode
    (negative: the signal it died of), stderr.read()."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path | str | None = None,
        *,
        module: str | None = None,
        output: Path | str | None = None,
        new_session: bool = False,
        prepare: tuple[str, str, dict] | None = None,
        context=None,
    ) -> None:
        """``sdsuite ARGV`` (``python -m MODULE ARGV`` with ``module``); stdout and stderr to files of their own, or
        both to ``output``; ``new_session`` as Popen's ``start_new_session``; ``prepare`` (module, function, keyword
        arguments) is called in the child first; ``context``: the multiprocessing context that starts it (default:
        the forkserver)."""
        if output:
            out = err = Path(output)
        else:
            files = Path(tempfile.mkdtemp(prefix="sdsuite-child-"))
            atexit.register(shutil.rmtree, files, ignore_errors=True)  # in this process: the child never runs it
            out, err = files / "stdout", files / "stderr"
        out.touch()
        err.touch()
        self.stdout, self.stderr = _Output(out), _Output(err)
        how = {"module": module, "new_session": new_session, "prepare": prepare}
        self._proc = (context or _forkserver()).Process(
            target=_child, args=(list(argv), dict(env), str(cwd or os.getcwd()), str(out), str(err), how), daemon=False
        )
        self._proc.start()
        self.pid = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            import subprocess

            raise subprocess.TimeoutExpired(f"sdsuite (pid {self.pid})", timeout)
        return self._proc.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout.read(), self.stderr.read()

    def send_signal(self, sig: int) -> None:
        if self._proc.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def wait_until(predicate, child: SdsuiteProcess, what: str, timeout: float = 120.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` when the child ends first or the timeout passes."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert child.poll() is None, f"the process ended before {what}: {child.stderr.read() if child.stderr else ''}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def signal_when(predicate, child: SdsuiteProcess, what: str, sig: int, timeout: float = 120.0) -> str:
    """Wait until ``predicate`` holds, send ``sig``, wait for the child to end; its stderr. The child is killed in any
    case (a failed wait included), so no test leaves a sweep running behind it."""
    try:
        wait_until(predicate, child, what, timeout)
        child.send_signal(sig)
        return child.communicate(timeout=60)[1]
    finally:
        if child.poll() is None:
            child.kill()


def server_pid() -> int:
    """The forkserver's pid: the parent of every SdsuiteProcess."""
    from multiprocessing import forkserver

    _forkserver()
    return forkserver._forkserver._forkserver_pid


def start_worker(spec_path: Path, index: int, env: dict[str, str], log) -> SdsuiteProcess:
    """Stand-in for sdsuite.launch.local.start_worker: the same worker, a process of its own in a session of its own,
    forked with its imports done. It names the server as the parent it dies with (its real parent)."""
    from sdsuite.launch.local import PARENT_ENV

    env = {**env, PARENT_ENV: str(server_pid())}
    return SdsuiteProcess(
        [str(spec_path), str(index)], env, module="sdsuite.launch.worker", output=log.name, new_session=True
    )


def fork_workers() -> None:
    """In a child (``prepare=("_zygote", "fork_workers", {})``): its launcher forks each worker from itself, imports
    done, instead of starting a fresh interpreter. The worker's parent is the launcher, as with the real one, so it
    dies with the launcher (PR_SET_PDEATHSIG) the same way."""
    from sdsuite.launch import local

    def forked_worker(spec_path: Path, index: int, env: dict[str, str], log) -> SdsuiteProcess:
        fork = multiprocessing.get_context("fork")
        worker = "sdsuite.launch.worker"
        return SdsuiteProcess(
            [str(spec_path), str(index)], env, module=worker, output=log.name, new_session=True, context=fork
        )

    local.start_worker = forked_worker
