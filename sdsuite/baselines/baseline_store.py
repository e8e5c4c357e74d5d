"""The baseline store: ``<root>/<hardware-key>/<name>.json``, plain sorted JSON, entries keyed by case id.

Writers (pytest-xdist workers, parallel CLI runs) take an exclusive lock on the key directory, re-read
the file, merge their entries and replace the file atomically: entries of cases that did not run are
never dropped, and readers see the old file or the new one, never half of one. A file that does not
validate is reported with its path and is never rewritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sdsuite.baselines.keys import check_key_accepts, validate_key
from sdsuite.baselines.tolerance import ToleranceLayer, layer_from_mapping
from sdsuite.core.errors import InputFileError, UsageError
from sdsuite.store.results import atomic_write_text

SCHEMA = "sdsuite-baselines"
SCHEMA_VERSION = 1
OBTAINED_SUFFIX = ".obtained.json"
TOP_KEYS = {"schema", "schema_version", "hardware_key", "entries", "hardware", "tolerances", "obtained"}
METRIC_KEYS = {"unit", "value", "median", "iqr", "n", "samples", "kind"}
ENTRY_KEYS = {"metrics", "date", "sdsuite_version", "env_fingerprint", "simulated", "calibration", "tolerances"}


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _validate_metric(m: object, where: str) -> None:
    if not isinstance(m, dict):
        raise InputFileError(f"{where}: expected an object, got {type(m).__name__}.")
    unknown = set(m) - METRIC_KEYS
    if unknown:
        raise InputFileError(
            f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
            f"a metric has {', '.join(sorted(METRIC_KEYS))}."
        )
    if not isinstance(m.get("unit"), str):
        raise InputFileError(f"{where}: 'unit' must be a string.")
    if "value" in m:
        if not _is_number(m["value"]):
            raise InputFileError(f"{where}: 'value' must be a finite number, got {m['value']!r}.")
        return
    if not _is_number(m.get("median")):
        raise InputFileError(f"{where}: needs a numeric 'median' (sampled metric) or 'value' (single value).")
    n = m.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputFileError(f"{where}: 'n' must be a positive integer, got {n!r}.")
    samples = m.get("samples")
    if samples is not None and (not isinstance(samples, list) or not all(_is_number(s) for s in samples)):
        raise InputFileError(f"{where}: 'samples' must be a list of finite numbers.")
    if samples is not None and len(samples) != n:
        raise InputFileError(
            f"{where}: 'n' is {n} but there are {len(samples)} samples; fix the file or regenerate the entry."
        )
    if "iqr" in m and not _is_number(m["iqr"]):
        raise InputFileError(f"{where}: 'iqr' must be a finite number.")


@dataclass(frozen=True)
class BaselineFile:
    """One validated baseline file."""

    path: Path
    hardware_key: str
    entries: dict[str, dict] = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)
    hardware: dict = field(default_factory=dict)

    def tolerance_layers(self, case_id: str) -> tuple[ToleranceLayer, ...]:
        """This file's tolerance overrides for ``case_id``: file-wide first, then the case's own."""
        layers = []
        if self.tolerances:
            layers.append(layer_from_mapping(self.tolerances, f"{self.path}: tolerances"))
        entry_tol = (self.entries.get(case_id) or {}).get("tolerances")
        if entry_tol:
            layers.append(layer_from_mapping(entry_tol, f"{self.path}: entries[{case_id}].tolerances"))
        return tuple(layers)

    def to_json(self) -> dict:
        """The JSON document."""
        doc = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "hardware_key": self.hardware_key,
            "entries": self.entries,
        }
        if self.hardware:
            doc["hardware"] = self.hardware
        if self.tolerances:
            doc["tolerances"] = self.tolerances
        return doc


def dumps(doc: dict) -> str:
    """Diff-friendly JSON: sorted keys, two-space indent, one trailing newline, no NaN."""
    return json.dumps(doc, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"


def parse_baseline(doc: object, path: Path, expected_key: str | None = None) -> BaselineFile:
    """Validate a decoded baseline document (InputFileError naming ``path`` and the bad field)."""
    where = str(path)
    if not isinstance(doc, dict):
        raise InputFileError(
            f"{where}: expected a JSON object, got {type(doc).__name__}; not an sdsuite baseline file."
        )
    unknown = set(doc) - TOP_KEYS
    if unknown and doc.get("schema") == SCHEMA:
        raise InputFileError(
            f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
            f"a baseline file has {', '.join(sorted(TOP_KEYS))}."
        )
    if doc.get("schema") != SCHEMA:
        raise InputFileError(
            f"{where}: 'schema' is {doc.get('schema')!r}, expected {SCHEMA!r}; not an sdsuite baseline file."
        )
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise InputFileError(
            f"{where}: schema_version {doc.get('schema_version')!r} is not supported "
            f"(this sdsuite reads {SCHEMA_VERSION}); "
            "regenerate it with --regen-baselines."
        )
    key = doc.get("hardware_key")
    if not isinstance(key, str):
        raise InputFileError(f"{where}: 'hardware_key' must be a string.")
    if expected_key is not None and key != expected_key:
        raise InputFileError(
            f"{where}: hardware_key {key!r} does not match its directory {expected_key!r}; "
            f"move the file or fix the key."
        )
    entries = doc.get("entries")
    if not isinstance(entries, dict):
        raise InputFileError(f"{where}: 'entries' must be an object keyed by case id.")
    tolerances = doc.get("tolerances", {})
    try:
        if tolerances:
            layer_from_mapping(tolerances, f"{where}: tolerances")
    except UsageError as exc:
        raise InputFileError(str(exc)) from None
    for case_id, entry in entries.items():
        ew = f"{where}: entries[{case_id!r}]"
        if not isinstance(entry, dict):
            raise InputFileError(f"{ew}: expected an object.")
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise InputFileError(f"{ew}: unknown field(s) {', '.join(sorted(unknown))}.")
        metrics = entry.get("metrics")
        if not isinstance(metrics, dict):
            raise InputFileError(f"{ew}: 'metrics' must be an object.")
        for name, m in metrics.items():
            _validate_metric(m, f"{ew}.metrics[{name!r}]")
        simulated = entry.get("simulated", False)
        if not isinstance(simulated, bool):
            raise InputFileError(f"{ew}: 'simulated' must be true or false.")
        check_key_accepts(key, simulated, ew)
        if entry.get("tolerances"):
            try:
                layer_from_mapping(entry["tolerances"], f"{ew}.tolerances")
            except UsageError as exc:
                raise InputFileError(str(exc)) from None
    hardware = doc.get("hardware", {})
    if not isinstance(hardware, dict):
        raise InputFileError(f"{where}: 'hardware' must be an object.")
    return BaselineFile(path=path, hardware_key=key, entries=entries, tolerances=tolerances, hardware=hardware)


def load_baseline_file(path: Path, expected_key: str | None = None) -> BaselineFile:
    """Read and validate one baseline file (InputFileError naming it; the file is never modified)."""
    path = Path(path)
    from sdsuite.store.results import read_json_file

    remedy = "fix it or delete it and run with --update-baselines. Left untouched."
    doc = read_json_file(path, "baseline file", remedy)
    return parse_baseline(doc, path, expected_key)


@dataclass(frozen=True)
class Located:
    """A case's baseline entry and the file that holds it."""

    file: BaselineFile
    entry: dict


class BaselineStore:
    """All baselines under one root directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def key_dir(self, key: str) -> Path:
        """Directory of one hardware key."""
        return self.root / validate_key(key)

    def keys(self) -> list[str]:
        """Hardware keys present in the store."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def files(self, key: str) -> list[Path]:
        """Baseline files of a key (obtained files excluded)."""
        d = self.key_dir(key)
        if not d.is_dir():
            return []
        return sorted(p for p in d.glob("*.json") if not p.name.endswith(OBTAINED_SUFFIX))

    def load_key(self, key: str) -> dict[str, Located]:
        """Every entry of a key by case id; a case in two files is an error naming both."""
        found: dict[str, Located] = {}
        for path in self.files(key):
            bf = load_baseline_file(path, expected_key=key)
            for case_id, entry in bf.entries.items():
                if case_id in found:
                    raise InputFileError(
                        f"{path}: case {case_id!r} is also in {found[case_id].file.path}; "
                        f"keep it in one file of key {key!r}."
                    )
                found[case_id] = Located(bf, entry)
        return found

    def keys_with_case(self, case_id: str, exclude: str | None = None) -> list[str]:
        """Other hardware keys that hold ``case_id`` (unreadable files are ignored here: they are not ours to judge)."""
        out = []
        for key in self.keys():
            if key == exclude:
                continue
            for path in self.files(key):
                try:
                    if case_id in load_baseline_file(path).entries:
                        out.append(key)
                        break
                except InputFileError:
                    continue
        return out

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[Path]:
        """Exclusive lock on the key directory (created if needed) for a read-merge-replace."""
        d = self.key_dir(key)
        d.mkdir(parents=True, exist_ok=True)
        # flock on the directory itself: no lock file to leave behind in a committed tree.
        fd = os.open(d, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield d
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def merge(self, key: str, name: str, entries: Mapping[str, dict], hardware: dict | None = None) -> Path:
        """Write ``entries`` into ``<key>/<name>.json``, keeping every other entry (and per-case tolerances)."""
        if not entries:
            return self.key_dir(key) / f"{name}.json"
        for case_id, e in entries.items():
            check_key_accepts(key, bool(e.get("simulated")), f"baseline {key}/{name}.json entry {case_id!r}")
        with self.locked(key) as d:
            path = d / f"{name}.json"
            if path.exists():
                bf = load_baseline_file(path, expected_key=key)  # corrupt: raises, file untouched
                merged = dict(bf.entries)
                doc_tol, doc_hw = bf.tolerances, dict(bf.hardware)
            else:
                merged, doc_tol, doc_hw = {}, {}, {}
            for case_id, e in entries.items():
                new = {k: v for k, v in e.items() if v is not None}
                old_tol = (merged.get(case_id) or {}).get("tolerances")
                if old_tol and "tolerances" not in new:
                    new["tolerances"] = old_tol  # a hand-set per-case tolerance survives updates
                merged[case_id] = new
            if hardware:
                doc_hw.update(hardware)
            out = BaselineFile(path, key, merged, doc_tol, doc_hw)
            atomic_write_text(path, dumps(out.to_json()))  # umask respected
            return path

    def write_obtained(self, key: str, name: str, entries: Mapping[str, dict]) -> Path:
        """Merge ``entries`` into ``<key>/<name>.obtained.json`` (what this run measured, for inspection/diff)."""
        with self.locked(key) as d:
            path = d / f"{name}{OBTAINED_SUFFIX}"
            current: dict = {}
            if path.exists():
                try:
                    current = json.loads(path.read_text(encoding="utf-8")).get("entries", {})
                except (ValueError, AttributeError, OSError):
                    current = {}  # our own scratch output: a broken one is simply replaced
            current.update(entries)
            doc = {
                "schema": SCHEMA,
                "schema_version": SCHEMA_VERSION,
                "hardware_key": key,
                "entries": current,
                "obtained": True,
            }
            atomic_write_text(path, dumps(doc))
            return path


def default_file_name(name: str) -> str:
    """Validate a baseline file name given without ``.json``."""
    name = name[:-5] if name.endswith(".json") else name
    if not name or "/" in name or name.startswith(".") or name.endswith(".obtained"):
        raise UsageError(f"baseline file name {name!r} is not usable; give a plain name like 'test_inference'.")
    return name
