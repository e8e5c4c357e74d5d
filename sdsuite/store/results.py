"""Versioned records and the results directory: ``results.jsonl`` (one record per line, appended
atomically) and ``run.json`` (environment fingerprint)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sdsuite.core.errors import InputFileError, SdsuiteError, UsageError

SCHEMA_VERSION = 1
RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
LOCK_FILE = ".results.lock"
SWEEP_LOCK = ".sweep.lock"
REQUIRED_KEYS = ("schema_version", "case", "case_id", "status", "metrics")


_write = os.write  # the one write of an append (tests replace it to simulate a full disk)


class ResultsWriteError(SdsuiteError):
    """Results could not be written (full disk, quota, I/O error); what was written before is kept."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 less the umask (mkstemp's 0600 is not what users asked for)."""
    return 0o666 & ~_umask()


def write_failure(path: Path, exc: OSError, kept: str, exit_code: int = 1) -> ResultsWriteError:
    """One sentence for a failed write: a full disk or quota names the remedy; the data already written is kept."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "the disk is full" if exc.errno == errno.ENOSPC else "the disk quota is exceeded"
        return ResultsWriteError(
            f"cannot write {path}: {what}; {kept} Free some space and rerun the same command.", exit_code
        )
    return ResultsWriteError(f"cannot write {path}: {exc.strerror or exc}; {kept}", exit_code)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file + fsync + rename: readers see old or new, never half.
    The file gets the mode a plain ``open()`` would (umask respected)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
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
    if not str(out).strip():
        raise UsageError("--out is empty; give a results directory (e.g. --out sdsuite-results).")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".probe.", delete=True)
        probe.close()
    except OSError as exc:
        raise UsageError(
            f"cannot write results to --out {str(out)!r}: {exc.strerror or exc}. Choose a writable directory."
        ) from None
    return out


_FIELD_TYPES = {"case": dict, "case_id": str, "status": str, "metrics": dict}


def validate_record(rec: Any, where: str) -> dict:
    """Check a decoded record's shape, field types and schema version; InputFileError naming ``where`` otherwise."""
    if not isinstance(rec, dict):
        raise InputFileError(
            f"{where}: expected a JSON object per line, got {_json_type(rec)}; not an sdsuite results record."
        )
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise InputFileError(f"{where}: record lacks {', '.join(missing)}; not an sdsuite results record.")
    version = rec["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputFileError(f"{where}: schema_version must be an integer, got {version!r}.")
    if version > SCHEMA_VERSION:
        raise InputFileError(
            f"{where}: schema_version {version} is not supported: a newer sdsuite wrote it "
            f"(this one reads {SCHEMA_VERSION}); upgrade sdsuite to read it."
        )
    if version != SCHEMA_VERSION:
        raise InputFileError(
            f"{where}: schema_version {version!r} is not supported (this sdsuite reads {SCHEMA_VERSION})."
        )
    for key, typ in _FIELD_TYPES.items():
        if not isinstance(rec[key], typ):
            raise InputFileError(
                f"{where}: {key} must be {_json_type(typ())}, got {_json_type(rec[key])} ({rec[key]!r:.40})."
            )
    return rec


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type."""
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def read_text_file(path: Path, what: str = "file") -> str:
    """A UTF-8 text file sdsuite wrote: InputFileError naming the path for a directory, unreadable bytes, a BOM or
    a NUL."""
    return decode_text(read_bytes_file(path, what), Path(path), what)


def read_json_file(path: Path, what: str, remedy: str, *, line: bool = True) -> Any:
    """A JSON file sdsuite wrote, parsed: InputFileError naming the path, the parse error (at which line, unless
    ``line`` is False) and ``remedy`` when it is not valid JSON. The file is left as it is."""
    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f" at line {exc.lineno}" if line else ""
        raise InputFileError(f"{path}: not valid JSON ({exc.msg}{where}); {remedy}") from None


def read_bytes_file(path: Path, what: str = "file") -> bytes:
    """The bytes of ``path``; InputFileError for a directory or an unreadable file."""
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, not a {what}; point at the file or move the directory away.")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read the {what}: {exc.strerror or exc}.") from None


def decode_text(data: bytes, path: Path, what: str = "file") -> str:
    """``data`` as UTF-8 text; InputFileError naming ``path`` (and the line) for a BOM, a NUL byte or invalid UTF-8."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise InputFileError(
            f"{path}: starts with a byte-order mark; sdsuite writes plain UTF-8 (remove the BOM). Left untouched."
        )
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise InputFileError(f"{path}:{line}: contains a NUL byte; the {what} is corrupt and was left untouched.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputFileError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
            f"the {what} is corrupt and was left untouched."
        ) from None


def parse_records(text: str, path: Path, complete: bool = False) -> list[dict]:
    """Validated records of a results file's text; ``complete``: the text ends at a line boundary by construction."""
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) and not complete:  # no newline after it: an interrupted write
                raise InputFileError(
                    f"{where}: last line is incomplete (an interrupted write); "
                    "the next `sdsuite run` or `sdsuite sweep` "
                    "on this --out repairs it. Left untouched."
                ) from None
            raise InputFileError(
                f"{where}: not valid JSON ({exc.msg}); the file is corrupt and was left untouched."
            ) from None
        out.append(validate_record(rec, where))
    return out


@contextlib.contextmanager
def exclusive_sweep(out: Path) -> Iterator[None]:
    """One sweep at a time per results directory (two would measure the same points twice)."""
    with open(out / SWEEP_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(
                f"another sdsuite sweep is writing to {str(out)!r}; wait for it or use another --out."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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

    def prepare(self) -> None:
        """Before a command writes here: remove temp files older sdsuite versions left (a kill between fsync and
        rename), validate every complete record (InputFileError, file untouched, before anything is measured), then
        repair a torn last line (an interrupted append: truncated back to the last complete line, with a one-line
        notice)."""
        if not self.path.is_dir():
            return
        with self._locked():
            for pattern in (f".{RESULTS_FILE}.*.tmp", f".{RUN_FILE}.*.tmp"):
                for tmp in self.path.glob(pattern):
                    with contextlib.suppress(OSError):
                        if tmp.is_file() and not tmp.is_symlink():
                            tmp.unlink()
            p = self.results_path
            if not p.exists() and not p.is_symlink():
                return
            if p.is_symlink():
                raise InputFileError(
                    f"{p}: is a symlink; sdsuite appends only to a regular file it owns. "
                    f"Replace the link with the file."
                )
            data = read_bytes_file(p, "results file")
            cut = data.rfind(b"\n") + 1
            head, tail = data[:cut], data[cut:]
            parse_records(decode_text(head, p, "results file"), p, complete=True)
            if not tail:
                return
            try:
                validate_record(json.loads(tail.decode("utf-8")), f"{p}:last line")
            except (ValueError, InputFileError):
                with open(p, "rb+") as f:
                    f.truncate(cut)
                    os.fsync(f.fileno())
                print(
                    f"sdsuite: notice: {p}: removed a torn last line ({len(tail)} bytes, an interrupted write); "
                    f"every complete record is kept.",
                    file=sys.stderr,
                )
                return
            with open(p, "ab") as f:  # a complete record that only lacked its newline
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())

    def append(self, record: dict) -> None:
        """Append one record: one O_APPEND write of the whole line, then fsync (O(1) per record). A failed or
        short write (full disk) is truncated back, so the file never holds half a line."""
        line = json.dumps(record, sort_keys=True, allow_nan=False, default=str) + "\n"
        with self._locked():
            self._append_locked([line])

    def _append_locked(self, lines: list[str]) -> None:
        """Append ``lines`` (the caller holds the lock)."""
        data = "".join(lines).encode("utf-8")
        fd = os.open(
            self.results_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666
        )
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                raise InputFileError(
                    f"{self.results_path}: last line is incomplete; "
                    f"the next `sdsuite run` or `sdsuite sweep` on this --out repairs it. Left untouched."
                )
            try:
                written = _write(fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # never half a line
                    os.fsync(fd)
                raise write_failure(
                    self.results_path, exc, "every record written before is kept (this one was not written)."
                ) from None
        finally:
            os.close(fd)

    def records(self) -> list[dict]:
        """All records, validated; a corrupt line raises InputFileError with path and line number."""
        if not self.results_path.exists() and not self.results_path.is_symlink():
            return []
        return parse_records(read_text_file(self.results_path, "results file"), self.results_path)

    def write_run_info(self, run_id: str, info: dict) -> None:
        """Add this run's environment fingerprint to run.json (``{"runs": {run_id: info}}``), atomically."""
        with self._locked():
            data = self.run_info() or {"schema_version": SCHEMA_VERSION, "runs": {}}
            data["runs"][run_id] = info
            try:
                atomic_write_text(self.run_path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
            except OSError as exc:
                raise write_failure(
                    self.run_path, exc, "nothing was measured and the files there are unchanged.", exit_code=2
                ) from None

    def run_info(self) -> dict | None:
        """The run.json content, or None when absent; a corrupt file raises InputFileError."""
        if not self.run_path.exists():
            return None
        try:
            data = json.loads(read_text_file(self.run_path, "run.json"))
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{self.run_path}: not valid JSON ({exc.msg}); left untouched.") from None
        if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
            raise InputFileError(
                f"{self.run_path}: expected an object with 'runs'; not an sdsuite run.json. Left untouched."
            )
        return data
