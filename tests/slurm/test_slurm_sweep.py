"""A real SLURM: a simulated sweep submitted as a job array through submitit, one task killed, resubmitted.

Needs a reachable cluster (`sbatch`, `sinfo` with an idle node): tests/slurm/start_cluster.sh starts a
one-node one on this machine (root, Debian slurm-wlm + munge). See docs/scale-out.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SWEEP = [
    "sweep", "--telemetry", "sim", "--gpu-model", "a100", "--freq", "sample:6", "--allow-clock-control",
    "--runs", "1", "--warmup", "0", "--no-flops", "--steps", "2", "--save-images", "none", "--no-report",
    "--no-progress", "--launcher", "slurm", "--slurm-gpus-per-node", "0", "--slurm-cpus-per-task", "1",
    "--slurm-time", "10", "--points-per-task", "2",
]  # fmt: skip


def _cluster_reason() -> str | None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (the test extra has it; or pip install -e '.[slurm]')"
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return (
            "no SLURM client here (sbatch/sinfo); apt-get install slurm-wlm munge and run tests/slurm/start_cluster.sh"
        )
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"SLURM controller not reachable ({exc}); run tests/slurm/start_cluster.sh"
    if not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states):
        return f"no SLURM node is up (sinfo: {states or 'nothing'}); run tests/slurm/start_cluster.sh"
    return None


def _sdsuite(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sdsuite.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"},
    )


def _latest_manifest(out: Path) -> dict:
    return json.loads(sorted((out / "launch").glob("*/manifest.json"))[-1].read_text())


def _queued(job: str) -> dict[str, str]:
    lines = subprocess.run(
        ["squeue", "-h", "-r", "-j", job, "-o", "%i %T"], capture_output=True, text=True
    ).stdout.split("\n")
    return {line.split()[0].split("_")[-1]: line.split()[1] for line in lines if line.strip()}


def _finished_per_key(out: Path) -> Counter:
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    return Counter(r["sweep"]["point_key"] for r in recs if r["status"] in ("ok", "skipped"))


def test_array_kill_one_task_and_resume(tmp_path):
    reason = _cluster_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "sweep"
    first = _sdsuite(*SWEEP, "--out", str(out))
    assert first.returncode == 0, first.stderr
    manifest = _latest_manifest(out)
    job, planned = manifest["job_id"], manifest["planned_keys"]
    assert len(planned) == 6 and len(manifest["tasks"]) == 3  # 6 clocks, 2 points per array task
    deadline = time.monotonic() + 120
    while _queued(job).get("1") != "RUNNING" and time.monotonic() < deadline:  # kill task 1 while it starts up
        time.sleep(0.2)
    subprocess.run(["scancel", f"{job}_1"], check=True)
    while _queued(job) and time.monotonic() < deadline + 300:
        time.sleep(1)
    status = json.loads(_sdsuite("status", str(out), "--format", "json").stdout)
    assert status["missing"] >= 1, status  # the killed task's points are missing, nothing else
    assert all(n == 1 for n in _finished_per_key(out).values())

    again = _sdsuite(*SWEEP, "--out", str(out), "--resume", "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    resubmitted = _latest_manifest(out)
    assert sum(len(t["keys"]) for t in resubmitted["tasks"]) == status["missing"]  # only the missing points went out
    assert resubmitted["job_id"] != job
    counts = _finished_per_key(out)
    assert set(counts) == set(planned)  # nothing lost
    assert all(n == 1 for n in counts.values())  # nothing twice
    job2 = resubmitted["job_id"]
    assert any(
        p.name in (f"slurm-{job2}", f"slurm-{job2}_0") for p in (out / "tasks").iterdir()
    )  # records by job (and task) id
    assert (out / "slurm" / resubmitted["job_id"]).is_dir()  # submitit logs by job id


RUN = [
    "run", "--telemetry", "sim", "--runs", "1", "--warmup", "0", "--no-flops", "--steps", "2", "--seed", "0,1,2,3",
    "--no-progress", "--launcher", "slurm", "--slurm-gpus-per-node", "0", "--slurm-cpus-per-task", "1",
    "--slurm-time", "10", "--points-per-task", "2",
]  # fmt: skip


def test_run_as_array_merges_each_case_once(tmp_path):
    """`sdsuite run --launcher slurm --wait`: 4 cases as 2 array tasks, merged once each; a rerun submits nothing."""
    reason = _cluster_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "run"
    first = _sdsuite(*RUN, "--out", str(out), "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    manifest = _latest_manifest(out)
    job = manifest["job_id"]
    assert manifest["command"] == "run" and len(manifest["tasks"]) == 2
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    assert sorted(r["scaleout"]["point_key"] for r in recs) == sorted(
        manifest["planned_keys"]
    )  # each case exactly once
    assert all(r["status"] == "ok" for r in recs)
    assert {r["device"]["slurm"]["array_job_id"] for r in recs} == {job}  # records name their SLURM job
    assert sorted(p.name for p in (out / "tasks").iterdir()) == [f"slurm-{job}_0", f"slurm-{job}_1"]
    runs = json.loads((out / "run.json").read_text())["runs"].values()
    assert {r["torch_threads"] for r in runs} == {1}  # torch keeps to the task's --cpus-per-task
    again = _sdsuite(*RUN, "--out", str(out), "--wait")
    assert again.returncode == 0 and "nothing to run" in again.stdout, again.stdout + again.stderr
    assert (
        len(_latest_manifest(out)["planned_keys"]) == 4 and _latest_manifest(out)["job_id"] == job
    )  # nothing resubmitted
