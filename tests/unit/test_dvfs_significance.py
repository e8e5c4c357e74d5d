"""A saving or slowdown smaller than its combined uncertainty is marked not significant, in the analysis and the
report."""

from __future__ import annotations

import pytest
from test_dvfs import one_set, record  # rootdir-relative (rootdir conftest, no packages)

from sdsuite.dvfs import analyze
from sdsuite.dvfs.analysis import ratio_uncertainty_pct
from sdsuite.dvfs.summary import points_csv, summary_dict


def _with_bound(rec: dict, rel: float) -> dict:
    for w in rec["energy_windows"]:
        w["energy_uncertainty_rel"] = rel
    return rec


def test_a_saving_inside_the_measurement_bound_is_not_significant_and_a_larger_one_is():
    # 1% less energy at 1200 MHz, but each window is only good to 1%: about sqrt(1^2 + 1^2) = 1.4 pp with the spread.
    recs = [
        _with_bound(record(1400, [1.0, 1.0, 1.0], [100.0, 100.2, 99.8]), 0.01),
        _with_bound(record(1200, [1.01, 1.01, 1.01], [99.0, 99.2, 98.8]), 0.01),
        _with_bound(record(1000, [1.1, 1.1, 1.1], [80.0, 80.2, 79.8]), 0.01),
    ]
    (s,) = analyze(one_set(recs)).series
    p1200 = next(p for p in s.points if p.freq_mhz == 1200)
    p1000 = next(p for p in s.points if p.freq_mhz == 1000)
    assert p1200.energy_saving_pct == pytest.approx(1.0)
    assert p1200.energy_saving_uncertainty_pct > p1200.energy_saving_pct and p1200.energy_saving_significant is False
    assert any("not significant" in f for f in p1200.flags)
    assert p1000.energy_saving_significant is True and p1000.energy_saving_uncertainty_pct < 2
    opt = s.optima["max_saving_within_slowdown"]
    assert opt.freq_mhz == 1200 and opt.energy_saving_significant is False
    summary = summary_dict(analyze(one_set(recs)))
    assert summary["series"][0]["optima"]["max_saving_within_slowdown"]["energy_saving_significant"] is False
    assert "energy_saving_significant" in points_csv(analyze(one_set(recs))).splitlines()[0]


def test_one_run_per_point_has_unknown_significance_not_a_false_claim():
    recs = [_with_bound(record(1400, [1.0], [100.0]), 0.001), _with_bound(record(1200, [1.02], [90.0]), 0.001)]
    (s,) = analyze(one_set(recs)).series
    p = next(p for p in s.points if p.freq_mhz == 1200)
    assert p.energy_saving_pct == pytest.approx(10.0) and p.energy_saving_significant is None


def test_windows_without_a_recorded_bound_leave_significance_unknown():
    recs = [record(1400, [1.0, 1.0], [100.0, 100.0]), record(1200, [1.0, 1.0], [90.0, 90.0])]
    (s,) = analyze(one_set(recs)).series
    assert next(p for p in s.points if p.freq_mhz == 1200).energy_saving_significant is None


def test_ratio_uncertainty_adds_relative_terms_in_quadrature():
    assert ratio_uncertainty_pct(1.0, 0.03, 0.04) == pytest.approx(5.0)
    assert ratio_uncertainty_pct(0.5, 0.03, 0.04) == pytest.approx(2.5)
    assert ratio_uncertainty_pct(1.0, 0.03, None) is None


def test_the_sweep_report_and_the_optima_table_mark_it(tmp_path, capsys):
    import json

    from sdsuite.cli.main import main

    recs = [
        _with_bound(record(1400, [1.0, 1.0, 1.0], [100.0, 100.2, 99.8]), 0.01),
        _with_bound(record(1200, [1.01, 1.01, 1.01], [99.0, 99.2, 98.8]), 0.01),
    ]
    d = tmp_path / "sw"
    d.mkdir()
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["report", str(d), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "1.0% ±1.4 (n.s.)" in out
    assert "(n.s.)" in (d / "report" / "dvfs_report.md").read_text()
