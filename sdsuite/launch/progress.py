"""Progress of a scale-out sweep or run (local ``--gpus`` or SLURM array): points planned, finished and missing of the
latest submission, merging finished tasks first (``sdsuite status``)."""

from __future__ import annotations

import json
from pathlib import Path

from sdsuite.launch.merge import finished_point_keys, merge_tasks, task_dirs
from sdsuite.launch.scaleout import LAUNCH_DIR, MANIFEST
from sdsuite.launch.slurm import queued_tasks
from sdsuite.store.results import ResultsDir


def status_of(out: Path, merge: bool = True) -> dict:
    """Points planned, finished and missing for the latest submission, and each task's progress and SLURM state."""
    if merge:
        merge_tasks(out)
    records = ResultsDir(out).records()
    done = finished_point_keys(records)
    manifests = sorted((out / LAUNCH_DIR).glob(f"*/{MANIFEST}")) if (out / LAUNCH_DIR).is_dir() else []
    if not manifests:
        return {
            "out": str(out),
            "submissions": 0,
            "planned": None,
            "finished": len(done),
            "missing": None,
            "tasks": [],
            "task_dirs": len(task_dirs(out)),
        }
    latest = json.loads(manifests[-1].read_text(encoding="utf-8"))
    queued = queued_tasks(str(latest.get("job_id") or ""))
    tasks = []
    for t in latest.get("tasks", []):
        n_done = sum(1 for k in t["keys"] if k in done)
        state = queued.get(str(t["index"])) or ("done" if n_done == len(t["keys"]) else "incomplete")
        tasks.append(
            {"index": t["index"], "gpu": t.get("gpu"), "points": len(t["keys"]), "finished": n_done, "state": state}
        )
    planned = latest.get("planned_keys", [])
    missing = [k for k in planned if k not in done]
    return {
        "out": str(out),
        "submissions": len(manifests),
        "submission": latest.get("submission"),
        "launcher": latest.get("launcher"),
        "command": latest.get("command", "sweep"),
        "job_id": latest.get("job_id"),
        "planned": len(planned),
        "finished": len(planned) - len(missing),
        "missing": len(missing),
        "tasks": tasks,
        "task_dirs": len(task_dirs(out)),
    }
