"""sdsuite.launch: GPU lists, task splits, merging, worker naming, SLURM scripts, bad input (fast, no SLURM needed)."""

from __future__ import annotations

import builtins
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.cli.main import main
from sdsuite.core.errors import UsageError
from sdsuite.gpu.sim import SimulatedGpu
from sdsuite.launch.gpus import outer_visible, parse_gpus, physical_gpu, worker_env
from sdsuite.launch.merge import merge_tasks
from sdsuite.launch.shards import PointRef, TaskSpec, split_even, tasks_per_chunk, tasks_per_gpu
from sdsuite.launch.slurm import SlurmOptions, parse_extra_flags, sbatch_script
from sdsuite.launch.worker import LaunchSpec, task_dir_name
from sdsuite.launch.xdist import apply_worker_gpu, assign_worker_gpu, workers_share_gpus
from sdsuite.store.results import ResultsDir

SIM = ["sweep", "--telemetry", "sim", "--freq", "sample:4", "--allow-clock-control", "--no-progress"]


def _points(n, variants=("tiny-sd",)):
    return [PointRef(f"k{v}{i}", f"{v}/f{1000 - i}", v, 1000 - i) for v in variants for i in range(n)]


def test_parse_gpus_accepts_lists_and_all():
    assert parse_gpus("0,1", 2) == (0, 1)
    assert parse_gpus("all", 3) == (0, 1, 2)


@pytest.mark.parametrize("spec", ["0,7", "0,0", "a,b", ""])
def test_parse_gpus_rejects_bad_lists(spec):
    with pytest.raises(UsageError):
        parse_gpus(spec, 2)


def test_worker_env_respects_outer_visible_list():
    base = {"CUDA_VISIBLE_DEVICES": "4,6"}
    assert outer_visible(base) == [4, 6]
    assert physical_gpu(1, base) == "6"
    assert worker_env(1, base)["CUDA_VISIBLE_DEVICES"] == "6"
    assert worker_env(0, {})["CUDA_VISIBLE_DEVICES"] == "0"


def test_split_covers_every_point_once():
    pts = _points(7)
    tasks = tasks_per_gpu(pts, (0, 1, 2))
    assert [p for t in tasks for p in t.points] == pts
    assert [len(t.points) for t in tasks] == [3, 2, 2] and [t.gpu for t in tasks] == [0, 1, 2]
    assert [len(c) for c in split_even(pts[:1], 2)] == [1, 0]
    assert [t.index for t in tasks_per_gpu(pts[:1], (0, 1))] == [0]  # indices stay positions when a GPU gets nothing


@given(
    sizes=st.lists(st.integers(1, 5), min_size=0, max_size=12),
    n=st.integers(1, 6),
    interleave=st.booleans(),
)
def test_tasks_cover_every_point_once_and_never_split_an_option_group(sizes, n, interleave):
    """Points of one group (a case under several optimization sets) stay in one task, for GPUs and for chunks;
    singleton groups split evenly; chunks hold at most n points unless one group alone is larger."""
    pts = [
        PointRef(f"k{g}-{i}", f"c{g}/o{i}", "v" if g % 3 else "w", None, f"g{g}")
        for g, size in enumerate(sizes)
        for i in range(size)
    ]
    if interleave:  # groups need not be contiguous in the plan (references of every seed first, then the others)
        pts = sorted(pts, key=lambda p: (p.key.split("-")[1], p.key))
    for tasks in (tasks_per_gpu(pts, range(n)), tasks_per_chunk(pts, n)):
        flat = [p for t in tasks for p in t.points]
        assert sorted(p.key for p in flat) == sorted(p.key for p in pts)
        owner = {p.group: t.index for t in tasks for p in t.points}
        assert all(owner[p.group] == t.index for t in tasks for p in t.points)
        assert [t.index for t in tasks] == list(range(len(tasks))) and all(t.points for t in tasks)
    for t in tasks_per_chunk(pts, n):
        assert len(t.points) <= n or len({p.group for p in t.points}) == 1
        assert len({p.variant for p in t.points}) == 1
    shares = [{p.group for p in c} for c in split_even(pts, n)]
    if any(len(g) > 1 for g in shares):
        assert all(shares), shares  # no GPU idles while another holds several groups
    singles = [PointRef(p.key, p.case_id, p.variant, None) for p in pts]
    lens = [len(c) for c in split_even(singles, n)]
    assert max(lens) - min(lens) <= 1


def test_chunks_never_mix_variants():
    tasks = tasks_per_chunk(_points(3, ("a", "b")), 2)
    assert [[p.variant for p in t.points] for t in tasks] == [["a", "a"], ["a"], ["b", "b"], ["b"]]
    with pytest.raises(UsageError):
        tasks_per_chunk(_points(1), 0)


def _rec(key, status="ok", run="r1"):
    return {
        "schema_version": 1,
        "case": {},
        "case_id": key,
        "status": status,
        "metrics": {},
        "run_id": run,
        "sweep": {"point_key": key},
    }


def test_merge_is_idempotent_and_drops_duplicates(tmp_path):
    ResultsDir(tmp_path / "tasks" / "slurm-1_0").append(_rec("a"))
    ResultsDir(tmp_path / "tasks" / "slurm-1_1").append(_rec("b", "failed"))
    ResultsDir(tmp_path / "tasks" / "slurm-2_0").append(_rec("b", run="r2"))
    ResultsDir(tmp_path / "tasks" / "slurm-2_0").append(_rec("a", run="r2"))  # finished twice: kept once
    assert merge_tasks(tmp_path).appended == 3
    assert merge_tasks(tmp_path).appended == 0
    recs = ResultsDir(tmp_path).records()
    ok = [r["sweep"]["point_key"] for r in recs if r["status"] == "ok"]
    assert sorted(ok) == ["a", "b"]
    assert {r["task_dir"] for r in recs} >= {"tasks/slurm-1_0", "tasks/slurm-2_0"}


def test_task_dirs_are_named_by_slurm_ids():
    spec = LaunchSpec(None, "/o", "sub", (TaskSpec(0, ()), TaskSpec(1, (), 1)))
    assert task_dir_name(spec, spec.tasks[0], {"SLURM_ARRAY_JOB_ID": "42", "SLURM_ARRAY_TASK_ID": "3"}) == "slurm-42_3"
    assert task_dir_name(spec, spec.tasks[0], {"SLURM_JOB_ID": "43"}) == "slurm-43"
    assert task_dir_name(spec, spec.tasks[0], {}) == "sub-task0"
    assert task_dir_name(spec, spec.tasks[1], {}) == "sub-task1-gpu1"


def test_sbatch_script_has_the_options(tmp_path):
    opts = SlurmOptions(
        partition="gpu",
        account="lab",
        time_min=30,
        gpus_per_node=1,
        constraint="h100",
        extra=parse_extra_flags(["qos=high"]),
    )
    text = sbatch_script(tmp_path / "spec.json", 5, tmp_path, opts)
    for line in (
        "--array=0-4%64",
        "--partition=gpu",
        "--account=lab",
        "--time=30",
        "--gpus-per-node=1",
        "--constraint=h100",
        "--qos=high",
    ):
        assert f"#SBATCH {line}" in text
    assert "sdsuite.launch.worker" in text and "$SLURM_ARRAY_TASK_ID" in text
    with pytest.raises(UsageError):
        parse_extra_flags(["=x"])


def test_sim_gpu_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("SDSUITE_SIM_GPUS", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    gpu = SimulatedGpu("a100")
    assert gpu.info().index == 1 and gpu.info().uuid != SimulatedGpu("a100", index=0).info().uuid
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(UsageError, match="does not exist"):
        SimulatedGpu("a100")


def test_xdist_workers_get_distinct_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # recorded, so that the value apply_worker_gpu sets is undone
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    inputs = [{} for _ in range(2)]
    for i, wi in enumerate(inputs):
        assign_worker_gpu(wi, f"gw{i}", 2)
    assert [wi["sdsuite_gpu"] for wi in inputs] == ["0", "1"]
    apply_worker_gpu(inputs[1])
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert workers_share_gpus(3, 2) and not workers_share_gpus(2, 2)


def test_gpus_outside_the_sim_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SDSUITE_SIM_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert main([*SIM, "--out", str(tmp_path), "--gpus", "0,7"]) == 2
    err = capsys.readouterr().err
    assert "GPU 7 is not visible" in err and "Traceback" not in err


def test_unknown_launcher_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*SIM, "--out", str(tmp_path), "--launcher", "pbs"])
    assert exc.value.code == 2


def test_missing_submitit_names_the_extra(monkeypatch, tmp_path, capsys):
    real_import = builtins.__import__

    def no_submitit(name, *a, **k):
        if name == "submitit":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    assert main([*SIM, "--out", str(tmp_path), "--launcher", "slurm"]) == 2
    assert "pip install 'sdsuite[slurm]'" in capsys.readouterr().err


def test_emit_sbatch_writes_script_and_manifest(tmp_path, capsys):
    script = tmp_path / "job.sh"
    args = [
        *SIM,
        "--out",
        str(tmp_path / "o"),
        "--runs",
        "1",
        "--steps",
        "2",
        "--emit-sbatch",
        str(script),
        "--device",
        "cpu",
        "--points-per-task",
        "3",
        "--slurm-partition",
        "gpu",
    ]
    assert main(args) == 0
    text = script.read_text()
    assert "--array=0-1%" in text and "--partition=gpu" in text  # 4 points, 3 per task
    manifest = json.loads(next((tmp_path / "o" / "launch").glob("*/manifest.json")).read_text())
    assert len(manifest["planned_keys"]) == 4 and sum(len(t["keys"]) for t in manifest["tasks"]) == 4


def test_status_reports_progress(tmp_path, capsys):
    assert (
        main(
            [
                *SIM,
                "--out",
                str(tmp_path),
                "--runs",
                "1",
                "--steps",
                "2",
                "--emit-sbatch",
                str(tmp_path / "j.sh"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["status", str(tmp_path), "--format", "json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["planned"] == 4 and st["finished"] == 0 and st["missing"] == 4
    assert main(["status", str(tmp_path / "nothing")]) == 2


RUN_SIM = ["run", "--telemetry", "sim", "--runs", "1", "--steps", "2", "--seed", "0,1,2"]


def test_run_emit_sbatch_plans_one_point_per_case(tmp_path, capsys):
    script = tmp_path / "job.sh"
    args = [
        *RUN_SIM,
        "--out",
        str(tmp_path / "o"),
        "--emit-sbatch",
        str(script),
        "--points-per-task",
        "2",
        "--slurm-gpus-per-node",
        "2",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    text = script.read_text()
    assert (
        "--job-name=sdsuite-run" in text and "--array=0-1%" in text and "--gpus-per-node=2" in text
    )  # 3 cases, 2 per task
    manifest = json.loads(next((tmp_path / "o" / "launch").glob("*/manifest.json")).read_text())
    assert manifest["command"] == "run" and manifest["gpus_per_task"] == 2
    assert len(set(manifest["planned_keys"])) == 3
    assert sorted(c for t in manifest["tasks"] for c in t["case_ids"]) == sorted(
        f"tiny-sd/default/fp32/fdefault/64x64/s2/b1{s}" for s in ("", "/seed1", "/seed2")
    )


def test_run_and_sweep_points_of_one_case_differ(tmp_path, capsys):
    """A run case and a sweep point of the same case at the same clock are different measurements (different keys)."""
    run_out, sweep_out = tmp_path / "r", tmp_path / "s"
    common = [
        "--telemetry",
        "sim",
        "--device",
        "cpu",
        "--allow-clock-control",
        "--runs",
        "1",
        "--steps",
        "2",
        "--freq",
        "1410",
    ]
    assert main(["run", *common, "--out", str(run_out), "--emit-sbatch", str(tmp_path / "a.sh")]) == 0
    assert main(["sweep", *common, "--out", str(sweep_out), "--emit-sbatch", str(tmp_path / "b.sh")]) == 0
    keys = [
        json.loads(next((o / "launch").glob("*/manifest.json")).read_text())["planned_keys"]
        for o in (run_out, sweep_out)
    ]
    assert len(keys[0]) == len(keys[1]) == 1 and keys[0] != keys[1]


def test_plain_run_with_resume_exits_2(tmp_path, capsys):
    assert main([*RUN_SIM, "--out", str(tmp_path), "--resume"]) == 2
    assert "--resume applies to a launched run" in capsys.readouterr().err
    assert not (tmp_path / "results.jsonl").exists()


def test_run_gpus_and_slurm_are_exclusive(tmp_path, capsys):
    assert main([*RUN_SIM, "--out", str(tmp_path), "--gpus", "0", "--emit-sbatch", str(tmp_path / "j.sh")]) == 2
    assert "--slurm-gpus-per-node" in capsys.readouterr().err


def test_gpu_suffix_keeps_task_dirs_apart_under_slurm():
    spec = LaunchSpec(None, "/o", "sub", (TaskSpec(0, (), 0), TaskSpec(1, (), 1)))
    env = {"SLURM_ARRAY_JOB_ID": "42", "SLURM_ARRAY_TASK_ID": "3"}
    assert [task_dir_name(spec, t, env) for t in spec.tasks] == ["slurm-42_3-gpu0", "slurm-42_3-gpu1"]


def test_task_gpus_caps_at_what_the_task_sees(monkeypatch):
    from sdsuite.launch.worker import task_gpus

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SDSUITE_SIM_GPUS", "2")
    args = type("A", (), {"telemetry": "sim"})()
    assert task_gpus(LaunchSpec(args, "/o", "s", (), gpus_per_task=4)) == 2
    assert task_gpus(LaunchSpec(args, "/o", "s", (), gpus_per_task=1)) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # SLURM gave the task one of the two
    assert task_gpus(LaunchSpec(args, "/o", "s", (), gpus_per_task=2)) == 1


def test_record_point_key_reads_sweep_and_run_records():
    from sdsuite.dvfs.sweep_engine import finished_keys, record_point_key

    recs = [
        {"status": "ok", "sweep": {"point_key": "s1"}},
        {"status": "ok", "scaleout": {"point_key": "r1", "task": 0}},
        {"status": "failed", "scaleout": {"point_key": "r2"}},
        {"status": "ok"},
    ]
    assert [record_point_key(r) for r in recs] == ["s1", "r1", "r2", None]
    assert finished_keys(recs) == {"s1", "r1"}


def test_print_launched_shows_the_finished_record_of_each_case(tmp_path, capsys):
    from argparse import Namespace

    from sdsuite.cli.run import print_launched
    from sdsuite.launch.merge import latest_per_point

    def rec(key, status, run):
        return {"case_id": f"c-{key}", "status": status, "run_id": run, "metrics": {}, "scaleout": {"point_key": key}}

    recs = [
        rec("a", "failed", "1"),
        rec("a", "ok", "2"),
        rec("b", "ok", "1"),
        rec("b", "failed", "3"),
        rec("x", "ok", "1"),
    ]
    print_launched(Namespace(format="json"), tmp_path, latest_per_point(recs, ["a", "b"]))
    shown = json.loads(capsys.readouterr().out)
    assert [(r["case_id"], r["status"], r["run_id"]) for r in shown] == [("c-a", "ok", "2"), ("c-b", "ok", "1")]


def test_records_name_host_and_slurm_job(monkeypatch):
    import torch

    from sdsuite.measure.hardware import device_record

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    info = device_record(torch.device("cpu"))
    assert info["type"] == "cpu" and info["host"] and info["slurm"] == {"job_id": "77", "array_task_id": "3"}
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert "slurm" not in device_record(torch.device("cpu"))


def test_task_cpus_follow_slurm_then_affinity():
    from sdsuite.launch.worker import task_cpus

    assert task_cpus({"SLURM_CPUS_PER_TASK": "3"}) == 3
    assert task_cpus({"SLURM_CPUS_PER_TASK": "x"}) == task_cpus({}) >= 1


def test_status_of_a_launched_run_names_the_run_command(tmp_path, capsys):
    assert main([*RUN_SIM, "--out", str(tmp_path), "--emit-sbatch", str(tmp_path / "j.sh"), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0/3 point(s) finished, 3 missing" in out and "rerun the same sdsuite run command with --resume" in out


def test_an_option_grid_stays_in_one_task(tmp_path, capsys):
    """--compare-options forms effects against the reference set in the same process: the launcher keeps a case's
    sets together."""
    args = [
        "run",
        "--telemetry",
        "sim",
        "--runs",
        "1",
        "--steps",
        "2",
        "--seed",
        "0,1",
        "--attention",
        "sdpa,sliced",
        "--compare-options",
    ]
    assert (
        main(
            [
                *args,
                "--out",
                str(tmp_path),
                "--emit-sbatch",
                str(tmp_path / "j.sh"),
                "--points-per-task",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    tasks = json.loads(next((tmp_path / "launch").glob("*/manifest.json")).read_text())["tasks"]
    assert [len(t["case_ids"]) for t in tasks] == [3, 3]  # reference + 2 sets per seed, never split
    for t in tasks:
        assert len({cid.split("/attn=")[0] for cid in t["case_ids"]}) == 1


def test_gpu_records_name_the_physical_gpu(monkeypatch):
    """On a GPU the record holds torch's index, the NVML-style UUID and the CUDA_VISIBLE_DEVICES it ran under (no GPU
    here: faked)."""
    import torch

    from sdsuite.measure.hardware import device_record

    class Props:
        uuid = "5f3e8a1c-0000-4000-8000-a10000000001"  # torch's spelling, without "GPU-"

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6")
    info = device_record(torch.device("cuda:0"))
    assert info["gpu_class"] == "h100" and info["index"] == 0 and info["cuda_visible_devices"] == "6"
    assert info["uuid"] == "GPU-5f3e8a1c-0000-4000-8000-a10000000001"
    json.dumps(info)  # plain JSON values only


def test_slurm_submission_planned_without_a_gpu_for_gpu_tasks_exits_2(tmp_path, capsys):
    """Planned here on the CPU (--device auto), run there on CUDA: the points would not match; refused before any
    work."""
    assert main([*RUN_SIM, "--out", str(tmp_path), "--emit-sbatch", str(tmp_path / "j.sh")]) == 2
    err = capsys.readouterr().err
    assert "torch sees no GPU" in err and "--device cpu" in err and "srun --gpus 1" in err
    assert not (tmp_path / "launch").exists() and not (tmp_path / "j.sh").exists()


def test_a_task_planned_for_another_device_fails_loudly(tmp_path, capsys):
    """A worker whose points do not exist on its node (planned for another device) exits 2 instead of measuring
    nothing."""
    from sdsuite.launch.worker import run_task

    assert main([*RUN_SIM, "--out", str(tmp_path), "--emit-sbatch", str(tmp_path / "j.sh"), "--device", "cpu"]) == 0
    spec_path = next((tmp_path / "launch").glob("*/spec.json"))
    from sdsuite.launch.worker import load_spec, save_spec

    spec = load_spec(spec_path)
    spec.args.gpu_model = "h100"  # this "node" is another GPU class than the one the points were planned for
    save_spec(spec, spec_path)
    assert run_task(str(spec_path), 0) == 2
    assert "do not exist here" in capsys.readouterr().err


def test_multi_gpu_tasks_refuse_a_fixed_cuda_index(tmp_path, capsys):
    args = [
        *RUN_SIM,
        "--out",
        str(tmp_path),
        "--emit-sbatch",
        str(tmp_path / "j.sh"),
        "--slurm-gpus-per-node",
        "2",
        "--device",
        "cuda:1",
    ]
    assert main(args) == 2
    assert "cuda:0" in capsys.readouterr().err and not (tmp_path / "j.sh").exists()


def test_emit_sbatch_under_json_prints_one_document(tmp_path, capsys):
    args = [
        *RUN_SIM,
        "--out",
        str(tmp_path),
        "--emit-sbatch",
        str(tmp_path / "j.sh"),
        "--device",
        "cpu",
        "--format",
        "json",
    ]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["script"] == str(tmp_path / "j.sh") and info["tasks"] == 1


def test_a_spec_names_only_a_marked_entry_of_sdsuite(tmp_path, capsys):
    """The worker entry is data the front end wrote; an unmarked function or a module outside sdsuite is refused."""
    import json

    from sdsuite.core.errors import InputFileError
    from sdsuite.launch.worker import load_spec

    assert main([*RUN_SIM, "--out", str(tmp_path), "--emit-sbatch", str(tmp_path / "j.sh"), "--device", "cpu"]) == 0
    spec_path = next((tmp_path / "launch").glob("*/spec.json"))
    doc = json.loads(spec_path.read_text())
    assert doc["entry"] == "sdsuite.cli.run:cmd_run" and load_spec(spec_path).args.handler.__name__ == "cmd_run"
    for entry in ("sdsuite.core.console:print_json", "os:system", "sdsuite.cli.run:_run", "sdsuite.nope:cmd_run"):
        spec_path.write_text(json.dumps({**doc, "entry": entry}))
        with pytest.raises(InputFileError, match="not a launch spec this sdsuite wrote"):
            load_spec(spec_path)
