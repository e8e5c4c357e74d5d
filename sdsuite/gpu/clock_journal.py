"""The lock journal: a file per GPU, on local disk, written before every clock or power-limit change and cleared after
restore.

NVML cannot read locked clocks back, and a process killed with SIGKILL (or a crash, or a lost node
session) restores nothing. So before sdsuite changes a GPU's clocks it writes what it found at the
start and what it is about to change into ``<dir>/<gpu-key>.json``; a clean restore deletes the file.
The next sdsuite process that opens that GPU finds a journal whose process is gone, puts back the
state the journal recorded, and says so. A journal whose process is still alive means another
sdsuite process controls that GPU's clocks: two of them would undo each other, so that is refused.

The directory is ``SDSUITE_LOCK_DIR``, else ``/var/tmp/sdsuite-gpu-locks`` (local disk, survives the
process; sticky and world-writable like /tmp, so any user's sdsuite sees every stale lock), else
``~/.cache/sdsuite/gpu-locks``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sdsuite.core.errors import UsageError
from sdsuite.gpu.base import ClockState

ENV_DIR = "SDSUITE_LOCK_DIR"
DEFAULT_DIR = Path("/var/tmp/sdsuite-gpu-locks")
JOURNAL_VERSION = 1


def journal_dir() -> Path:
    """Where journals live (created on first use)."""
    env = os.environ.get(ENV_DIR, "").strip()
    if env:
        return Path(env)
    try:
        DEFAULT_DIR.mkdir(mode=0o1777, exist_ok=True)
        if os.access(DEFAULT_DIR, os.W_OK):
            return DEFAULT_DIR
    except OSError:
        pass
    return Path.home() / ".cache" / "sdsuite" / "gpu-locks"


def gpu_key(telemetry: Any) -> str | None:
    """The journal's name for a GPU: its UUID; a simulated GPU only when its state outlives the process
    (a state file)."""
    info = telemetry.info()
    if telemetry.simulated:
        path = getattr(telemetry, "state_path", None)
        if not path:
            return None  # an in-memory GPU dies with its process: nothing can be left locked
        return f"sim-{hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]}"
    return str(info.uuid)


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a live process from a reused PID)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(entry: dict) -> bool:
    if entry.get("host") != socket.gethostname():
        return False  # a journal on local disk from another host name: that boot is gone
    pid = int(entry.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    start = _proc_start(pid)
    return start is None or start == entry.get("proc_start")


def state_to_dict(state: ClockState) -> dict:
    """JSON form of a ClockState."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(state).items()}


def state_from_dict(d: dict) -> ClockState:
    """ClockState from its JSON form (a journal written before power limits has no ``power_limit_mw``)."""
    return ClockState(
        **{
            k: tuple(int(x) for x in d[k]) if d.get(k) else None
            for k in ("locked_sm_mhz", "locked_mem_mhz", "applications_mhz")
        },
        power_limit_mw=int(d["power_limit_mw"]) if d.get("power_limit_mw") else None,
    )


class Journal:
    """The journal file of one GPU."""

    def __init__(self, telemetry: Any):
        self.telemetry = telemetry
        self.key = gpu_key(telemetry)
        self.path = journal_dir() / f"{self.key}.json" if self.key else None

    def read(self) -> dict | None:
        """The journal's content, or None when there is none (an unreadable one is reported and treated as stale)."""
        if self.path is None:
            return None
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            print(
                f"sdsuite: warning: unreadable GPU lock journal {self.path} ({exc}); treating it as stale.",
                file=sys.stderr,
            )
            return {"unreadable": True}

    def write(self, original: ClockState, changes: list[str]) -> None:
        """Record, before a change, what to put back; atomic and fsynced so a SIGKILL right after still leaves it."""
        if self.path is None:
            return
        info = self.telemetry.info()
        entry = {
            "version": JOURNAL_VERSION,
            "gpu": {
                "index": info.index,
                "name": info.name,
                "uuid": info.uuid,
                "simulated": bool(self.telemetry.simulated),
            },
            "original": state_to_dict(original),
            "changes": sorted(set(changes)),
            "pid": os.getpid(),
            "proc_start": _proc_start(os.getpid()),
            "host": socket.gethostname(),
            "argv": sys.argv[:8],
            "written": time.time(),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        except OSError as exc:
            raise UsageError(
                f"cannot write the GPU lock journal in {self.path.parent} ({exc.strerror}); "
                f"set {ENV_DIR} to a writable directory on local disk."
            ) from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def clear(self) -> None:
        """Delete this process's journal after a clean restore."""
        if self.path is None:
            return
        entry = self.read()
        if entry is not None and entry.get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def stale(self, *, held_here: bool = False) -> dict | None:
        """The journal of a process that ended without restoring (to restore), None when there is none or a lock
        here holds it.

        A journal of another live process is refused: two processes locking one GPU undo each other.
        """
        entry = self.read()
        if entry is None:
            return None
        if entry.get("pid") == os.getpid():
            return None if held_here else entry  # an earlier command in this process failed to restore
        if not entry.get("unreadable") and _alive(entry):
            gpu = entry.get("gpu") or {}
            raise UsageError(
                f"GPU {gpu.get('index')} ({gpu.get('name')}) has its clocks controlled by sdsuite process "
                f"{entry.get('pid')} "
                f"({' '.join(entry.get('argv') or [])}); wait for it to finish, "
                f"or stop it (it restores the clocks on SIGTERM)."
            )
        return entry

    def drop(self) -> None:
        """Delete a stale journal after its state was put back."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
