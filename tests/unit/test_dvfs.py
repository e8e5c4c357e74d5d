"""DVFS analysis: aggregation, reference, optima, noise and suspicious flags; and the optimum the
simulated power and time models imply, found again by a real sweep on the simulated GPU."""

from __future__ import annotations

import math

import pytest
from _cli_args import FAST_SWEEP  # tests/unit is on sys.path
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.cli.main import main
from sdsuite.dvfs import analyze, load_result_sets
from sdsuite.dvfs.data import ResultSet
from sdsuite.dvfs.simtime import GPU_SPEED_FACTOR, SimTimeModel
from sdsuite.gpu.sim import SimulatedGpu


def record(
    freq,
    times,
    energies,
    *,
    gpu="Test GPU",
    status="ok",
    reason=None,
    finished="2030-01-01T00:00:00",
    rid=None,
    simulated=True,
    batch=1,
):
    """A minimal results record of one point: one energy window per run."""
    fid = "fdefault" if freq is None else f"f{freq}"
    windows = [
        {"available": True, "duration_s": t, "energy_j": e, "generations": 1, "sm_clock_mhz": {"mean": freq}}
        for t, e in zip(times, energies, strict=True)
    ]
    return {
        "schema_version": 1,
        "record_id": rid or f"r{freq}-{finished}",
        "run_id": "run",
        "case_id": f"tiny-sd/default/fp32/{fid}/64x64/s4/b{batch}",
        "case": {"variant": "tiny-sd", "freq_mhz": freq, "batch_size": batch, "images_per_prompt": 1},
        "status": status,
        "reason": reason,
        "simulated": simulated,
        "telemetry": {"name": gpu},
        "metrics": {"latency_s": {"samples": list(times)}},
        "energy_windows": windows if status == "ok" else [],
        "finished_at": finished,
    }


def one_set(recs, label="r"):
    return [ResultSet(path=__import__("pathlib").Path(label), label=label, records=tuple(recs))]


def test_optima_reference_and_percentages_on_a_known_curve():
    # time and energy per clock, chosen so each objective picks a different clock
    table = {1400: (1.00, 100.0), 1200: (1.02, 90.0), 1000: (1.10, 80.0), 800: (1.30, 72.0), 600: (1.70, 70.0)}
    recs = [record(f, [t] * 3, [e] * 3) for f, (t, e) in table.items()]
    (s,) = analyze(one_set(recs)).series
    assert s.reference.freq_mhz == 1400 and "maximum locked clock, 1400 MHz" in s.reference_rule
    o = s.optima
    assert o["min_energy"].freq_mhz == 600
    assert o["min_edp"].freq_mhz == 1000  # E*T: 100, 91.8, 88, 93.6, 119
    assert o["min_ed2p"].freq_mhz == 1200  # E*T^2: 100, 93.6, 96.8, 121.7, 202.3
    assert o["max_saving_within_slowdown"].freq_mhz == 1200
    assert o["min_edp"].energy_saving_pct == pytest.approx(20.0) and o["min_edp"].slowdown_pct == pytest.approx(10.0)
    ref = next(p for p in s.points if p.is_reference)
    assert ref.energy_saving_pct == 0 and ref.slowdown_pct == 0


def test_the_slowdown_bound_is_configurable_and_stated():
    recs = [record(1400, [1.0], [100.0]), record(1200, [1.04], [90.0]), record(1000, [1.1], [80.0])]
    a3 = analyze(one_set(recs))
    a5 = analyze(one_set(recs), max_slowdown_pct=5)
    assert a3.series[0].optima["max_saving_within_slowdown"].freq_mhz == 1400
    assert a5.series[0].optima["max_saving_within_slowdown"].freq_mhz == 1200
    assert a5.series[0].optima["max_saving_within_slowdown"].title == "max energy saving with slowdown <= 5%"


def test_default_reference_rule_and_its_fallback_are_stated():
    recs = [record(None, [0.9], [110.0]), record(1400, [1.0], [100.0]), record(1000, [1.2], [80.0])]
    s = analyze(one_set(recs), reference="default").series[0]
    assert s.reference.freq_mhz is None and s.reference_rule == "the default-clock point (no lock)"
    s = analyze(one_set(recs[1:]), reference="default").series[0]
    assert s.reference.freq_mhz == 1400 and "no default-clock point was measured" in s.reference_rule


def test_noise_and_suspicious_flags():
    recs = [
        record(1400, [1.00, 1.02, 0.98, 1.01], [100, 103, 97, 101]),
        record(1300, [0.99, 1.01, 0.97, 1.00], [99, 102, 96, 100]),  # faster, but within noise on both counts
        record(1200, [0.90, 0.91, 0.89, 0.90], [95, 96, 94, 95]),  # clearly faster than max clock: suspicious
        record(1000, [1.3, 1.31, 1.29, 1.3], [70, 71, 69, 70]),
    ]
    s = analyze(one_set(recs)).series[0]
    at = {p.freq_mhz: p for p in s.points}
    assert at[1300].faster_than_reference and at[1300].time_within_noise and at[1300].energy_within_noise
    assert at[1300].flags == ("suspicious: faster than reference (within noise)", "energy within noise of reference")
    assert at[1200].flags == ("suspicious: faster than reference",)
    assert not at[1000].faster_than_reference and at[1000].energy_within_noise is False and at[1000].flags == ()
    assert at[1400].flags == ("reference",)


def test_failed_points_are_listed_never_picked_and_duplicates_use_the_latest():
    recs = [
        record(1400, [1.0], [100.0]),
        record(1000, [], [], status="failed", reason="out of memory"),
        record(800, [1.5], [10.0], finished="2030-01-01T00:00:00"),
        record(800, [1.5], [60.0], finished="2030-01-02T00:00:00"),  # a later measurement of the same point
    ]
    s = analyze(one_set(recs)).series[0]
    failed = next(p for p in s.points if p.freq_mhz == 1000)
    assert failed.status == "failed" and failed.reason == "out of memory"
    assert next(p for p in s.points if p.freq_mhz == 800).value("energy_per_image_j") == 60.0
    assert all(o.freq_mhz != 1000 for o in s.optima.values())
    assert any("duplicate" in n for n in s.notes)


def test_each_gpu_and_each_result_set_is_its_own_series():
    a = [
        record(1400, [1.0], [100.0], gpu="GPU A"),
        record(1000, [1.2], [80.0], gpu="GPU A"),
        record(1400, [0.5], [90.0], gpu="GPU B"),
    ]
    analysis = analyze(one_set(a))
    assert [s.key.gpu for s in analysis.series] == ["GPU A", "GPU B"]
    two = analyze(one_set(a[:2], "a100-run") + one_set(a[:2], "other-run"))
    assert [s.key.source for s in two.series] == ["a100-run", "other-run"]


def test_per_image_energy_divides_by_the_batch():
    s = analyze(one_set([record(1400, [2.0], [100.0], batch=4)])).series[0]
    assert s.points[0].value("energy_per_image_j") == 25.0 and s.points[0].value("energy_j") == 100.0


@given(
    st.dictionaries(
        st.integers(300, 2000),
        st.tuples(st.floats(0.05, 10), st.floats(1, 1000)),
        min_size=1,
        max_size=25,
    ),
    st.floats(0, 20),
)
def test_optima_are_optimal_among_the_points(table, bound):
    recs = [record(f, [t], [e]) for f, (t, e) in table.items()]
    s = analyze(one_set(recs), max_slowdown_pct=bound).series[0]
    top = max(table)
    assert s.reference.freq_mhz == top
    ok = s.points
    for name, metric in (("min_energy", "energy_per_image_j"), ("min_edp", "edp_js"), ("min_ed2p", "ed2p_js2")):
        assert s.optima[name].value == min(p.value(metric) for p in ok)
    sav = s.optima["max_saving_within_slowdown"]
    assert sav.slowdown_pct <= bound
    within = [p for p in ok if p.slowdown_pct <= bound]
    assert sav.value == min(p.value("energy_per_image_j") for p in within)
    t_ref = table[top][0]
    for p in ok:
        assert p.faster_than_reference == (table[p.freq_mhz][0] < t_ref)


# --- the simulated model's optimum, found by a real sweep --------------------------------------


def model_optima(gpu_model: str, freqs: list[int], beta: float, bound_pct: float = 3.0) -> dict[str, int]:
    """Optima straight from the simulated device's power model and the beta time model (no sdsuite analysis code)."""
    gpu = SimulatedGpu(gpu_model)
    fmax = gpu.f_max_mhz  # reference: the card's maximum clock, which every sweep here includes
    rows = {}
    for f in freqs:
        t = beta * (fmax / f - 1) + 1  # time relative to f_max
        e = gpu.power_model.power_w(f, gpu.mem_max_mhz, 1.0) * t
        rows[f] = (t, e)
    t_ref = rows[fmax][0]

    def best(key):  # ties: the higher clock
        return min(rows, key=lambda f: (key(*rows[f]), -f))

    return {
        "min_energy": best(lambda t, e: e),
        "min_edp": best(lambda t, e: e * t),
        "min_ed2p": best(lambda t, e: e * t * t),
        "max_saving_within_slowdown": min(
            (f for f in rows if rows[f][0] / t_ref - 1 <= bound_pct / 100), key=lambda f: (rows[f][1], -f)
        ),
    }


@pytest.mark.parametrize(
    ("gpu_model", "freq", "beta"), [("a100", "all", 0.35), ("h100", "sample:15", 0.5), ("v100", "sample:12", 0.35)]
)
@pytest.mark.slow  # several seconds: kept out of `pytest -m quick`
def test_sweep_on_the_simulated_gpu_finds_the_optimum_its_models_imply(
    tmp_path, gpu_model, freq, beta, capsys, one_torch_thread
):
    out = tmp_path / gpu_model
    args = [
        "sweep",
        "--telemetry",
        "sim",
        "--gpu-model",
        gpu_model,
        "--freq",
        freq,
        "--allow-clock-control",
        "--sim-beta",
        str(beta),
        "--out",
        str(out),
    ]
    args += FAST_SWEEP
    assert main(args) == 0  # one_torch_thread
    (s,) = analyze(load_result_sets([out])).series
    freqs = [p.freq_mhz for p in s.points]
    expected = model_optima(gpu_model, freqs, beta)
    assert {k: o.freq_mhz for k, o in s.optima.items()} == expected
    # The figures agree too: time is the model's, energy the power model's integral over it.
    gpu = SimulatedGpu(gpu_model)
    unet_calls = round(
        s.reference.value("time_s") / (SimTimeModel().unet_eval_s * GPU_SPEED_FACTOR[gpu_model] * 2)
    )  # 2 latents (CFG)
    assert unet_calls >= 1
    for p in s.points:
        t_model = unet_calls * 2 * SimTimeModel(beta=beta).eval_s(p.freq_mhz, gpu.f_max_mhz, 1, gpu_model)
        assert p.value("time_s") == pytest.approx(t_model, rel=1e-9)
        assert p.value("avg_power_w") == pytest.approx(
            gpu.power_model.power_w(p.freq_mhz, gpu.mem_max_mhz, 1.0), rel=1e-9
        )
    assert math.isclose(
        s.optima["min_energy"].energy_saving_pct,
        next(p.energy_saving_pct for p in s.points if p.freq_mhz == expected["min_energy"]),
    )
