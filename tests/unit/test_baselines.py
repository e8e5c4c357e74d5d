"""Baseline store, hardware keys, metric kinds, entries and the gate shared by pytest and the CLI."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from sdsuite.baselines.baseline_store import BaselineStore, dumps, load_baseline_file
from sdsuite.baselines.entries import obtained_entry
from sdsuite.baselines.gate import GateConfig, Status, UpdateMode, gate_record
from sdsuite.baselines.keys import hardware_key, slug
from sdsuite.baselines.kinds import KINDS, CalibratedTimeKind, FlopsKind, LatencyKind, MetricKind, kind_for, register
from sdsuite.core.errors import InputFileError, UsageError
from sdsuite.measure.calibration import Calibration

CPU_ENV = {"cpu": {"model": "AMD EPYC 7B13"}, "torch_threads": 2, "cuda": {"gpus": []}}
GPU_ENV = {
    "cpu": {"model": "x"},
    "torch_threads": 8,
    "cuda": {"gpus": [{"name": "NVIDIA A100-SXM4-80GB", "memory_bytes": 85_899_345_920}]},
}


def make_record(case_id: str = "tiny-sd/euler/fp32/fdefault/64x64/s4/b1", scale: float = 1.0, **extra) -> dict:
    """A results record as the runner writes it, with latency samples scaled by ``scale``."""
    lat = [0.060 * scale * f for f in (1.00, 1.01, 0.99, 1.02, 0.98)]
    summary = lambda xs: {"median": sorted(xs)[2], "iqr": 0.001, "n": len(xs), "samples": xs}  # noqa: E731
    rec = {
        "schema_version": 1,
        "record_id": f"rec-{case_id}-{scale}",
        "case_id": case_id,
        "case": {"variant": case_id.split("/")[0]},
        "status": "ok",
        "sdsuite_version": "0.1.0",
        "device": {"type": "cpu", "name": "cpu", "gpu_class": None},
        "env": {"run_id": "run1", "fingerprint": "abc123"},
        "simulated": False,
        "finished_at": "2026-11-23T10:00:00.000+00:00",
        "params": {"unet": 792964, "vae": 67231},
        "metrics": {
            "latency_s": {"unit": "s", "available": True, **summary(lat)},
            "latency_cpu_s": {"unit": "s", "available": True, **summary([x * 0.9 for x in lat])},
            "images_per_s": {"unit": "images/s", "available": True, **summary([1 / x for x in lat])},
            "flops_per_image": {"unit": "FLOP", "available": True, "value": 421084160.0},
            "image_mean": {"unit": "1", "available": True, "value": 0.4857054054737091},
            "load_s": {"unit": "s", "available": True, "value": 3.2},
            "energy_j": {"unit": "J", "available": False, "reason": "no counter"},
        },
    }
    rec.update(extra)
    return rec


CALIB = Calibration(median_s=0.012, samples_s=(0.012,) * 7, cpu_median_s=0.0108, cpu_samples_s=(0.0108,) * 7)


# --- keys ----------------------------------------------------------------------------------------


def test_hardware_keys_name_the_device_class():
    assert hardware_key(make_record(), CPU_ENV) == "cpu-amd-epyc-7b13-2t"
    gpu = make_record(device={"type": "cuda", "name": "NVIDIA A100-SXM4-80GB"})
    assert hardware_key(gpu, GPU_ENV) == "cuda-nvidia-a100-sxm4-80gb-80gib"
    assert hardware_key(make_record(), CPU_ENV, "portable") == "cpu-portable-2t"


def test_simulated_records_never_map_onto_a_real_key():
    sim = make_record(simulated=True, telemetry={"name": "NVIDIA H100 80GB HBM3 (simulated)"})
    assert hardware_key(sim, CPU_ENV).startswith("sim-nvidia-h100-80gb-hbm3-simulated-cpu-")
    assert hardware_key(sim, CPU_ENV, "portable") == "sim-cpu-portable-2t"


def test_slug_keeps_dots_so_versions_do_not_collide():
    assert slug("v1.5") != slug("v1_5")


def test_unknown_scope_is_a_usage_error():
    with pytest.raises(UsageError, match="scope"):
        hardware_key(make_record(), CPU_ENV, "nearby")


# --- kinds and entries -------------------------------------------------------------------------


def test_every_gated_metric_has_exactly_one_kind():
    assert kind_for("latency_s") is LatencyKind
    assert kind_for("latency_calibrated") is CalibratedTimeKind
    assert kind_for("flops_per_image") is FlopsKind
    assert kind_for("load_s") is None  # dominated by caching: not kept


def test_a_new_metric_kind_is_a_small_registered_class():
    @register
    class TokensKind(MetricKind):
        name = "tokens"
        patterns = ("tokens_per_s",)

    try:
        assert kind_for("tokens_per_s") is TokensKind
    finally:
        KINDS.remove(TokensKind)


def test_exact_entries_keep_all_kinds_portable_entries_only_machine_independent_ones():
    exact = obtained_entry(make_record(), portable=False)
    assert set(exact["metrics"]) == {
        "latency_s",
        "latency_cpu_s",
        "images_per_s",
        "flops_per_image",
        "image_mean",
        "param_count_unet",
        "param_count_vae",
    }
    assert exact["metrics"]["flops_per_image"] == {"unit": "FLOP", "value": 421084160}
    assert exact["metrics"]["latency_s"]["samples"] == sorted(exact["metrics"]["latency_s"]["samples"])
    assert (exact["date"], exact["sdsuite_version"], exact["env_fingerprint"]) == ("2026-11-23", "0.1.0", "abc123")
    port = obtained_entry(make_record(), portable=True, calibration=CALIB)
    assert set(port["metrics"]) == {
        "flops_per_image",
        "image_mean",
        "param_count_unet",
        "param_count_vae",
        "latency_cpu_calibrated",
    }
    assert port["metrics"]["latency_cpu_calibrated"]["median"] == pytest.approx(5.0)  # 0.054 CPU s / 0.0108 CPU s
    assert port["metrics"]["latency_cpu_calibrated"]["unit"] == "x sdsuite-calib-v1"
    # Without per-run CPU time there is nothing honest to calibrate: no calibrated metric at all.
    no_cpu = make_record()
    del no_cpu["metrics"]["latency_cpu_s"]
    assert "latency_cpu_calibrated" not in obtained_entry(no_cpu, portable=True, calibration=CALIB)["metrics"]
    from_gate = obtained_entry(no_cpu, portable=True, calibration=CALIB, cpu_samples=[0.0216] * 5)
    assert from_gate["metrics"]["latency_cpu_calibrated"]["median"] == pytest.approx(2.0)


# --- store -------------------------------------------------------------------------------------


def test_files_are_sorted_diff_friendly_json(tmp_path):
    store = BaselineStore(tmp_path)
    path = store.merge("cpu-portable-1t", "bench", {"b/case": {"metrics": {}}, "a/case": {"metrics": {}}})
    text = path.read_text()
    assert text == dumps(json.loads(text)) and text.endswith("}\n")
    assert text.index('"a/case"') < text.index('"b/case"')
    assert path.stat().st_mode & 0o777 == 0o644  # a committed file, readable by everyone


def test_merge_keeps_other_entries_and_hand_set_tolerances(tmp_path):
    store = BaselineStore(tmp_path)
    store.merge("k", "f", {"a": {"metrics": {}}, "b": {"metrics": {}}})
    doc = json.loads((tmp_path / "k/f.json").read_text())
    doc["entries"]["a"]["tolerances"] = {"latency_s": "9%"}
    (tmp_path / "k/f.json").write_text(dumps(doc))
    store.merge("k", "f", {"a": {"metrics": {"x": {"unit": "s", "value": 1}}}})
    entries = load_baseline_file(tmp_path / "k/f.json").entries
    assert set(entries) == {"a", "b"}
    assert entries["a"]["tolerances"] == {"latency_s": "9%"}


def _merge_many(args):
    root, worker = args
    store = BaselineStore(root)
    for i in range(15):
        store.merge("k", "f", {f"w{worker}/case{i}": {"metrics": {}}})


def test_concurrent_writers_lose_no_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")  # the workers only touch files: no torch state to inherit badly
    with ctx.Pool(3) as pool:
        pool.map(_merge_many, [(str(tmp_path), w) for w in range(3)])
    assert len(load_baseline_file(tmp_path / "k/f.json").entries) == 45


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"schema": "other"}', "not an sdsuite baseline file"),
        (
            '{"schema": "sdsuite-baselines", "schema_version": 99, "hardware_key": "k", "entries": {}}',
            "schema_version 99",
        ),
        (
            '{"schema": "sdsuite-baselines", "schema_version": 1, "hardware_key": "other", "entries": {}}',
            "does not match its directory",
        ),
        (
            (
                '{"schema": "sdsuite-baselines", "schema_version": 1, "hardware_key": "k", '
                '"entries": {"c": {"metrics": {"m": {"unit": "s"}}}}}'
            ),
            "median",
        ),
        (
            (
                '{"schema": "sdsuite-baselines", "schema_version": 1, "hardware_key": "k", '
                '"entries": {"c": {"metrics": {}, "simulated": true}}}'
            ),
            "simulated device",
        ),
        (
            (
                '{"schema": "sdsuite-baselines", "schema_version": 1, "hardware_key": "k", '
                '"entries": {"c": {"metrics": {}, "tolerances": {"m": "x"}}}}'
            ),
            "cannot read",
        ),
    ],
)
def test_a_bad_baseline_file_is_named_and_left_untouched(tmp_path, content, message):
    path = tmp_path / "k" / "f.json"
    path.parent.mkdir()
    path.write_text(content)
    store = BaselineStore(tmp_path)
    with pytest.raises(InputFileError, match=message) as exc:
        store.merge("k", "f", {"c": {"metrics": {}}})
    assert str(path) in str(exc.value)
    assert path.read_text() == content


def test_a_case_in_two_files_of_one_key_is_an_error(tmp_path):
    store = BaselineStore(tmp_path)
    store.merge("k", "one", {"c": {"metrics": {}}})
    store.merge("k", "two", {"c": {"metrics": {}}})
    with pytest.raises(InputFileError, match="also in"):
        store.load_key("k")


def test_simulated_results_are_refused_for_real_keys(tmp_path):
    store = BaselineStore(tmp_path)
    with pytest.raises(InputFileError, match="simulated device cannot be baselines for the real hardware key"):
        store.merge("cuda-nvidia-a100-sxm4-80gb-80gib", "f", {"c": {"metrics": {}, "simulated": True}})
    assert not (tmp_path / "cuda-nvidia-a100-sxm4-80gb-80gib" / "f.json").exists()


# --- the gate ----------------------------------------------------------------------------------


def gate(tmp_path: Path, update: UpdateMode = UpdateMode.NONE, **kw) -> GateConfig:
    return GateConfig(store=BaselineStore(tmp_path), update=update, write_obtained=True, **kw)


def test_gate_workflow_missing_create_pass_regress_update(tmp_path):
    rec = make_record()
    r = gate_record(rec, CPU_ENV, gate(tmp_path), file_name="bench")
    assert r.status is Status.MISSING and r.failed and r.obtained_path.exists()
    assert gate_record(rec, CPU_ENV, gate(tmp_path, UpdateMode.FAILING), file_name="bench").status is Status.CREATED
    r = gate_record(rec, CPU_ENV, gate(tmp_path), file_name="bench")
    assert r.status is Status.COMPARED and not r.failed
    slow = make_record(scale=1.3)
    r = gate_record(slow, CPU_ENV, gate(tmp_path), file_name="bench")
    assert r.failed and {x.metric for x in r.comparison.rows if x.verdict.failed} == {
        "latency_s",
        "latency_cpu_s",
        "images_per_s",
    }
    assert gate_record(slow, CPU_ENV, gate(tmp_path, UpdateMode.FAILING), file_name="bench").status is Status.UPDATED
    assert not gate_record(slow, CPU_ENV, gate(tmp_path), file_name="bench").failed
    fast = gate_record(rec, CPU_ENV, gate(tmp_path), file_name="bench")
    assert not fast.failed and {x.metric for x in fast.comparison.improvements} == {
        "latency_s",
        "latency_cpu_s",
        "images_per_s",
    }


def test_update_failing_leaves_passing_entries_alone_regen_rewrites_them(tmp_path):
    rec = make_record()
    gate_record(rec, CPU_ENV, gate(tmp_path, UpdateMode.ALL), file_name="bench")
    path = next((tmp_path).glob("*/bench.json"))
    before = path.read_text()
    again = make_record(scale=1.01, finished_at="2026-12-01T00:00:00")
    assert gate_record(again, CPU_ENV, gate(tmp_path, UpdateMode.FAILING), file_name="bench").status is Status.COMPARED
    assert path.read_text() == before
    assert gate_record(again, CPU_ENV, gate(tmp_path, UpdateMode.ALL), file_name="bench").status is Status.UPDATED
    assert '"2026-12-01"' in path.read_text()


def test_a_baseline_of_other_hardware_is_never_compared(tmp_path):
    gate_record(make_record(), CPU_ENV, gate(tmp_path, UpdateMode.FAILING), file_name="bench")
    other_cpu = {**CPU_ENV, "cpu": {"model": "Intel Xeon Platinum 8375C"}}
    r = gate_record(make_record(scale=3.0), other_cpu, gate(tmp_path), file_name="bench")
    assert r.status is Status.OTHER_KEY and r.skipped and not r.failed
    assert "cpu-amd-epyc-7b13-2t" in r.reason() and "never compared" in r.reason()


def test_missing_policy_skip(tmp_path):
    r = gate_record(make_record(), CPU_ENV, gate(tmp_path, missing="skip"), file_name="bench")
    assert r.status is Status.MISSING and r.skipped and not r.failed


def test_portable_gate_compares_calibrated_time_across_cpu_models(tmp_path):
    cfg = gate(tmp_path, UpdateMode.FAILING, scope="portable")
    gate_record(make_record(), CPU_ENV, cfg, file_name="bench", calibration=CALIB)
    other_cpu = {**CPU_ENV, "cpu": {"model": "Intel Xeon"}}
    slower_machine = Calibration(
        median_s=0.024, samples_s=(0.024,) * 7, cpu_median_s=0.0216, cpu_samples_s=(0.0216,) * 7
    )
    # Everything twice as slow on a machine twice as slow: same calibrated time, passes.
    r = gate_record(
        make_record(scale=2.0),
        other_cpu,
        gate(tmp_path, scope="portable"),
        file_name="bench",
        calibration=slower_machine,
    )
    assert r.status is Status.COMPARED and not r.failed
    # Twice as slow on the same machine: the calibrated time doubles, fails.
    r = gate_record(
        make_record(scale=2.0), other_cpu, gate(tmp_path, scope="portable"), file_name="bench", calibration=CALIB
    )
    assert r.failed and [x.metric for x in r.comparison.rows if x.verdict.failed] == ["latency_cpu_calibrated"]


def test_a_corrupt_baseline_stops_the_gate_and_stays_untouched(tmp_path):
    (tmp_path / "cpu-amd-epyc-7b13-2t").mkdir()
    bad = tmp_path / "cpu-amd-epyc-7b13-2t" / "bench.json"
    bad.write_text('{"schema": "sdsuite-baselines"')
    with pytest.raises(InputFileError, match="bench.json"):
        gate_record(make_record(), CPU_ENV, gate(tmp_path, UpdateMode.ALL), file_name="bench")
    assert bad.read_text() == '{"schema": "sdsuite-baselines"'


def test_other_key_skips_name_the_portable_key_when_it_exists():
    # the README's gate command on a fresh machine skipped every record as other-key without naming
    # --baseline-key portable
    from sdsuite.baselines.gate import portable_hint

    hint = portable_hint(["cpu-amd-epyc-1t", "cpu-portable-1t"])
    assert (
        "--baseline-key portable" in hint
        and "cpu-portable-1t" in hint
        and "--benchmark-timer time.process_time" in hint
    )
    assert portable_hint(["cuda-nvidia-a100-80gib"]) == ""
