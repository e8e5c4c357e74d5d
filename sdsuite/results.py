"""Versioned records and the results directory: ``results.jsonl`` (one record per line, appended
atomically) and ``run.json`` (environment fingerprint)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sdsuite.errors import InputFileError, UsageError

SCHEMA_VERSION = 1
RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
LOCK_FILE = ".results.lock"
REQUIRED_KEYS = ("schema_version", "case", "case_id", "status", "metrics")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file + fsync + rename: readers see old or new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable_dir(out: Path | str) -> Path:
    """Create ``out`` if needed and make sure we can write there (UsageError otherwise)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".probe.", delete=True)
        probe.close()
    except OSError as exc:
        raise UsageError(f"cannot write results to --out {str(out)!r}: {exc.strerror or exc}. Choose a writable directory.") from None
    return out


def validate_record(rec: Any, where: str) -> dict:
    """Check a decoded record's shape and schema version; InputFileError naming ``where`` otherwise."""
    if not isinstance(rec, dict):
        raise InputFileError(f"{where}: expected a JSON object per line, got {type(rec).__name__}.")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise InputFileError(f"{where}: record lacks {', '.join(missing)}; not an sdsuite results record.")
    if rec["schema_version"] != SCHEMA_VERSION:
        raise InputFileError(f"{where}: schema_version {rec['schema_version']!r} is not supported (this sdsuite reads {SCHEMA_VERSION}).")
    return rec


class ResultsDir:
    """A results directory; safe for concurrent writers (pytest-xdist workers, parallel sweeps)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.results_path = self.path / RESULTS_FILE
        self.run_path = self.path / RUN_FILE

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, record: dict) -> None:
        """Append one record; the file is replaced atomically so a crash never leaves half a line."""
        line = json.dumps(record, sort_keys=True, allow_nan=False, default=str) + "\n"
        with self._locked():
            old = self.results_path.read_text(encoding="utf-8") if self.results_path.exists() else ""
            if old and not old.endswith("\n"):
                raise InputFileError(f"{self.results_path}: last line is incomplete; the file was not written by sdsuite. Left untouched.")
            atomic_write_text(self.results_path, old + line)

    def records(self) -> list[dict]:
        """All records, validated; a corrupt line raises InputFileError with path and line number."""
        if not self.results_path.exists():
            return []
        out = []
        with open(self.results_path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{self.results_path}:{i}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputFileError(f"{where}: not valid JSON ({exc.msg}); the file is corrupt and was left untouched.") from None
                out.append(validate_record(rec, where))
        return out

    def write_run_info(self, run_id: str, info: dict) -> None:
        """Add this run's environment fingerprint to run.json (``{"runs": {run_id: info}}``), atomically."""
        with self._locked():
            data = self.run_info() or {"schema_version": SCHEMA_VERSION, "runs": {}}
            data["runs"][run_id] = info
            atomic_write_text(self.run_path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def run_info(self) -> dict | None:
        """The run.json content, or None when absent; a corrupt file raises InputFileError."""
        if not self.run_path.exists():
            return None
        try:
            data = json.loads(self.run_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{self.run_path}: not valid JSON ({exc.msg}); left untouched.") from None
        if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
            raise InputFileError(f"{self.run_path}: expected an object with 'runs'; not an sdsuite run.json. Left untouched.")
        return data
