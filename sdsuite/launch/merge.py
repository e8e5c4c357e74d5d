"""Merge the task directories under ``OUT/tasks/`` into ``OUT/results.jsonl``: idempotent, no duplicates.

A task writes only into its own directory (named by SLURM job and task id, or by local GPU), so a
killed task leaves at worst its finished points there. Merging appends every record whose point is
not already finished in the merged file; a point is finished once (ok or skipped), a failed attempt is
kept only while no finished record of that point exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdsuite.dvfs.points import FINISHED_STATUSES, record_point_key
from sdsuite.store.results import ResultsDir, atomic_write_text

TASKS_DIR = "tasks"


@dataclass(frozen=True)
class MergeResult:
    """What one merge did."""

    appended: int
    task_dirs: int


def task_dirs(out: Path) -> list[Path]:
    """Task result directories under ``out/tasks`` (sorted by name: job id, then task id)."""
    root = Path(out) / TASKS_DIR
    return sorted(p for p in root.iterdir() if (p / "results.jsonl").exists()) if root.is_dir() else []


def _ident(rec: Mapping[str, Any]) -> tuple:
    return (rec.get("run_id"), rec.get("case_id"), record_point_key(rec), rec.get("status"), rec.get("reason"))


def finished_point_keys(records: Iterable[Mapping[str, Any]]) -> set[str]:
    """Keys of points with a finished record."""
    return {k for r in records if (k := record_point_key(r)) and r.get("status") in FINISHED_STATUSES}


def latest_per_point(records: Iterable[Mapping[str, Any]], keys: Iterable[str]) -> list[Mapping[str, Any]]:
    """The record that stands for each of ``keys``, in that order: the latest finished one, else the latest failed
    one."""
    latest: dict[str, Mapping[str, Any]] = {}
    for r in records:
        key = record_point_key(r)
        if key is None or (
            key in latest
            and latest[key].get("status") in FINISHED_STATUSES
            and r.get("status") not in FINISHED_STATUSES
        ):
            continue
        latest[key] = r
    return [latest[k] for k in keys if k in latest]


def merge_tasks(out: Path | str) -> MergeResult:
    """Append task records not yet in ``out/results.jsonl`` (under the results lock) and their run.json entries."""
    out = Path(out)
    merged = ResultsDir(out)
    dirs = task_dirs(out)
    appended = 0
    with merged._locked():  # one merger at a time: finishing tasks and `sdsuite status` may race
        have = merged.records()
        done = finished_point_keys(have)
        seen = {_ident(r) for r in have}
        new_lines: list[str] = []
        runs: dict[str, Any] = {}
        for d in dirs:
            task = ResultsDir(d)
            for rec in task.records():
                key = record_point_key(rec)
                if _ident(rec) in seen or (key and key in done):
                    continue
                rec = {**rec, "task_dir": str(d.relative_to(out))}  # where its images and logs are
                seen.add(_ident(rec))
                if key and rec.get("status") in FINISHED_STATUSES:
                    done.add(key)
                new_lines.append(json.dumps(rec, sort_keys=True, allow_nan=False, default=str) + "\n")
            info = task.run_info() or {}
            runs.update(info.get("runs", {}))
        if new_lines:
            merged._append_locked(new_lines)
            appended = len(new_lines)
        if runs:
            data = merged.run_info() or {"schema_version": 1, "runs": {}}
            missing = {k: v for k, v in runs.items() if k not in data["runs"]}
            if missing:
                data["runs"].update(missing)
                atomic_write_text(merged.run_path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return MergeResult(appended, len(dirs))
