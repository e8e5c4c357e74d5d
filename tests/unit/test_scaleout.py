"""Must-show: a simulated 2-GPU sweep under ``--gpus 0,1`` and under pytest-xdist ``-n 2`` measures the same
points as a 1-GPU sweep, each once. Workers are subprocesses (several Python starts): marked slow.

The launching command runs in-process (``main()``) and so does every single-process reference. Its workers are still
processes of their own, each with its GPU in its environment and a session of its own, but forked with their imports
done (tests/unit/_zygote.py) instead of a fresh interpreter each; the SLURM task's entry point is one too, and forks
its two workers from itself. pytest-xdist's workers are fresh interpreters, as in use; the launcher's own start of a
worker (``python -m sdsuite.launch.worker``) runs as in use in test_gpu_state_safety's two-GPU signal tests."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from _cli_args import FAST_RUN  # tests/unit is on sys.path
from _zygote import SdsuiteProcess

from sdsuite.cli.main import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread", "_sim_gpus", "_forked_workers")]
pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--runs", "1", "--warmup", "0", "--steps", "2", "--resolution", "64x64"]


def _env() -> dict:
    env = {**os.environ, "SDSUITE_SIM_GPUS": "2", "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.fixture
def _sim_gpus(monkeypatch):
    """This process (an in-process launcher) and its workers see the simulated 2-GPU machine of _env()."""
    for key, value in _env().items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture
def _forked_workers(monkeypatch):
    """The in-process launcher starts its workers forked with their imports done (same worker, same environment)."""
    import _zygote

    from sdsuite.launch import local

    monkeypatch.setattr(local, "start_worker", _zygote.start_worker)


def _case_ids(out: Path) -> Counter:
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    return Counter(r["case_id"] for r in recs if r["status"] == "ok")


def _sweep(out: Path, *extra: str) -> None:
    """``sdsuite sweep`` in-process (a launcher under --gpus: its workers are processes)."""
    cmd = ["sweep", "--telemetry", "sim", "--freq", "sample:4", "--allow-clock-control", *SMALL, "--no-flops"]
    cmd += ["--save-images", "none", "--no-report", "--no-progress", "--out", str(out), *extra]
    assert main(cmd) == 0


def test_gpus_sweep_measures_the_same_points_once(tmp_path):
    _sweep(tmp_path / "one")
    _sweep(tmp_path / "two", "--gpus", "0,1")
    one, two = _case_ids(tmp_path / "one"), _case_ids(tmp_path / "two")
    assert set(one) == set(two) and len(one) == 4
    assert set(two.values()) == {1}
    tasks = sorted(p.name for p in (tmp_path / "two" / "tasks").iterdir())
    assert [t.rsplit("-", 1)[-1] for t in tasks] == ["gpu0", "gpu1"]  # one worker per GPU, each with points
    idx = {
        json.loads((tmp_path / "two" / "tasks" / t / "run.json").read_text())["runs"].popitem()[1]["telemetry"]["index"]
        for t in tasks
    }
    assert idx == {0, 1}  # each worker saw its own simulated GPU


BENCH = """
import dataclasses

def test_bench(sd_case, sd_benchmark):  # seed 7: its records are told apart from the sweep points' by the case id
    assert sd_benchmark(dataclasses.replace(sd_case, seed=7))["status"] == "ok"
"""


def test_xdist_two_workers_measure_the_same_points_once(tmp_path, pytester):
    """One pytest-xdist session (controller and two workers, processes as in use) with sweep points and benchmark
    cases: the same points as the single-process session, each once, one run id and one results directory, every
    benchmark run measured although pytest-benchmark is off under xdist, the terminal says how they ran, and the
    workers share one baseline file per test."""
    pytester.makepyfile(test_copied_sweep=(ROOT / "tests/benchmarks/test_sweep.py").read_text())  # a name of its own
    pytester.makepyfile(test_bench=BENCH)

    def run(out: Path, *extra: str):
        cmd = ["-p", "no:cacheprovider", "-k", "test_dvfs_point or test_bench", "-q"]
        cmd += [
            "--telemetry",
            "sim",
            "--freq",
            "sample:3",
            "--allow-clock-control",
            "--variant",
            "tiny-sd",
            "--scheduler",
            "euler",
            "--steps",
            "2",
            "--resolution",
            "64x64",
        ]
        cmd += ["--sdsuite-runs", "2", "--sdsuite-warmup", "0", "--sdsuite-out", str(out)]
        cmd += ["--sdsuite-min-energy-window", "0.2"]  # what is checked is who measured what, not the energy
        cmd += ["-W", "ignore:Benchmarks are automatically disabled", *extra]  # the copied file's benchmark test
        # The reference in-process; pytest-xdist's controller and workers in a process of their own, as in use.
        res = pytester.runpytest_subprocess(*cmd, timeout=600) if extra else pytester.runpytest(*cmd)
        assert res.ret == 0, "\n".join(res.outlines[-60:] + res.errlines[-60:])
        recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
        points = Counter(r["case_id"] for r in recs if r["status"] == "ok" and r["case"]["seed"] != 7)
        return res, recs, points

    _, _, one = run(tmp_path / "one")
    res, recs, two = run(tmp_path / "two", "-n", "2", "--baselines", str(tmp_path / "bl"), "--update-baselines")
    assert set(one) == set(two) and len(one) == 3  # the case of the grid at 3 clocks
    assert set(two.values()) == {1}
    assert len({r["run_id"] for r in recs}) == 1  # both workers under one run id, in one directory
    bench = [r for r in recs if r["case"]["seed"] == 7]
    assert len(bench) == len(two) and len({r["case_id"] for r in bench}) == len(two)
    assert all(r["metrics"]["latency_s"]["n"] == 2 for r in bench)  # every run measured, pytest-benchmark off
    printed = res.stdout.str() + res.stderr.str()
    assert "Benchmark fixture was not used" not in printed and "PytestBenchmarkWarning" not in printed
    assert "pytest-benchmark is off under pytest-xdist" in printed  # says how they ran
    # --update-baselines: the workers write one baseline file per test, each with every case whichever worker ran it
    files = {f.name: json.loads(f.read_text())["entries"] for f in (tmp_path / "bl").rglob("*.json")}
    assert set(files) == {"test_bench.json", "test_dvfs_point.json"}, sorted(files)
    assert set(files["test_bench.json"]) == {r["case_id"] for r in bench}
    assert set(files["test_dvfs_point.json"]) == set(two)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def _cli(capfd, *args: str, code: int = 0) -> tuple[str, str]:
    """``sdsuite ARGS`` in-process; (stdout, stderr) as the terminal shows them, the workers' lines included."""
    capfd.readouterr()
    rc = main(list(args))
    out, err = capfd.readouterr()
    assert rc == code, out + err
    return out, err


def test_gpus_run_spreads_the_cases_once_and_a_rerun_measures_nothing(tmp_path, capfd):
    out = tmp_path / "run"
    args = [
        "run",
        "--telemetry",
        "sim",
        *SMALL,
        "--seed",
        "0,1,2",
        "--no-flops",
        "--no-progress",
        "--out",
        str(out),
        "--gpus",
        "0,1",
    ]
    _cli(capfd, *args)
    recs = _records(out)
    assert sorted(r["case_id"].rsplit("/", 1)[-1] for r in recs) == ["b1", "seed1", "seed2"]  # each case once
    assert {r["telemetry"]["index"] for r in recs} == {0, 1}  # both simulated GPUs measured
    assert {r["scaleout"]["gpu"] for r in recs} == {0, 1} and len({r["scaleout"]["point_key"] for r in recs}) == 3
    again, _ = _cli(capfd, *args)
    assert "nothing to run" in again and len(_records(out)) == 3


def test_slurm_task_with_two_gpus_spreads_its_points(tmp_path, capfd):
    """A SLURM array task given 2 GPUs (--slurm-gpus-per-node 2) runs one process per GPU on its share of the points."""
    out, script = tmp_path / "sweep", tmp_path / "job.sh"
    sweep = [
        "sweep",
        "--telemetry",
        "sim",
        "--freq",
        "sample:4",
        "--allow-clock-control",
        *SMALL,
        "--no-flops",
        "--save-images",
        "none",
    ]
    sweep += [
        "--no-report",
        "--no-progress",
        "--out",
        str(out),
        "--emit-sbatch",
        str(script),
        "--slurm-gpus-per-node",
        "2",
        "--device",
        "cpu",
    ]
    _cli(capfd, *sweep, "--points-per-task", "4")  # writes the script and spec, measures nothing
    spec = next((out / "launch").glob("*/spec.json"))
    env = {**_env(), "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "78"}  # what sbatch sets
    # the entry point the job runs; it forks its two workers from itself (imports done) instead of two fresh starts
    forked = ("_zygote", "fork_workers", {})
    task = SdsuiteProcess([str(spec), "0"], env, module="sdsuite.launch.worker", prepare=forked)
    assert task.wait(timeout=600) == 0, task.stdout.read() + task.stderr.read()
    assert sorted(p.name for p in (out / "tasks").iterdir() if (p / "results.jsonl").exists()) == [
        "slurm-77_0-gpu0",
        "slurm-77_0-gpu1",
    ]
    recs = _records(out)
    assert len(recs) == 4 and len({r["sweep"]["point_key"] for r in recs}) == 4  # every point once
    assert {r["telemetry"]["index"] for r in recs} == {0, 1}
    assert {r["device"]["slurm"]["array_job_id"] for r in recs} == {"77"}


def test_launched_run_reports_and_exits_like_a_plain_run(tmp_path, capfd):
    """Exit 1 when some cases failed (here: weights absent for sd-v1.5), 2 when nothing could run for input reasons,
    whatever the split over workers; the failure reasons and --compare-options effects reach the user's terminal."""
    base = FAST_RUN
    mixed = ["--variant", "tiny-sd,sd-v1.5", "--compare-options", "--attention", "sliced", "--gpus", "0,1"]
    out, err = _cli(capfd, *base, *mixed, "--out", str(tmp_path / "mixed"), code=1)
    assert "optimization effects" in out and "fix the input" in out
    assert "sdsuite: case sd-v1.5/" in err and "failed" in err
    _cli(capfd, *base, "--variant", "sd-v1.5,sd-v2.1", "--gpus", "0,1", "--out", str(tmp_path / "none"), code=2)
