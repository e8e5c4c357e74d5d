"""Analysis over both knobs: the reference among uncapped points, optima per axis and over the grid, the clock lock
vs power cap table at equal slowdown, Zeus's cost, the Pareto front across both, and the report's new parts."""

from __future__ import annotations

import copy
import json

import pytest
from test_dvfs import one_set, record  # tests/unit is on sys.path

from sdsuite.dvfs import analyze, write_report
from sdsuite.dvfs.analysis import ZEUS_ETAS, pareto_front
from sdsuite.dvfs.summary import markdown, summary_dict


def capped(freq, power, times, energies, *, max_w=250, **kw):
    """A record of a point at ``freq`` (None: default clocks) under a ``power`` W cap (None: uncapped)."""
    rec = record(freq, times, energies, **kw)
    for w in rec["energy_windows"]:
        w["energy_uncertainty_rel"] = 0.002  # the window's measurement bound (docs/energy.md)
    rec["record_id"] = f"r{freq}-{power}"
    rec["case"]["power_limit_w"] = power
    if power is not None:
        rec["case_id"] += f"/pl{power}w"
    rec["power_limit"] = {"requested_w": power, "enforced_w": float(power or max_w), "max_w": max_w, "min_w": 150}
    return rec


# Clock locks and power caps of one case on one GPU (time s, energy J per image): the uncapped top clock is the
# reference; the caps save more at 5% slowdown, the locks at 20%.
LOCKS = {1410: (1.00, 100.0), 1275: (1.04, 93.0), 1005: (1.18, 80.0)}
CAPS = {220: (1.03, 90.0), 190: (1.08, 86.0), 150: (1.19, 82.0)}


def lock_and_cap_records(runs: int = 3, jitter: float = 0.0):
    recs = []
    for f, (t, e) in LOCKS.items():
        recs.append(capped(f, None, [t * (1 + jitter * k) for k in range(runs)], [e] * runs))
    for p, (t, e) in CAPS.items():
        recs.append(capped(None, p, [t * (1 + jitter * k) for k in range(runs)], [e] * runs))
    return recs


def test_the_reference_is_the_top_uncapped_clock_and_caps_are_their_own_points():
    (s,) = analyze(one_set(lock_and_cap_records())).series
    assert (s.reference.freq_mhz, s.reference.power_limit_w) == (1410, None)
    assert len(s.points) == 6 and {p.freq_label for p in s.points} >= {"1410 MHz", "default @ 190 W"}
    cap190 = next(p for p in s.points if p.power_limit_w == 190)
    assert cap190.slowdown_pct == pytest.approx(8.0) and cap190.energy_saving_pct == pytest.approx(14.0)
    assert cap190.enforced_power_limit_w == 190.0


def test_a_power_only_sweep_takes_its_reference_at_the_highest_cap_and_says_so():
    recs = [capped(None, p, [t] * 2, [e] * 2) for p, (t, e) in {250: (1.0, 100.0), **CAPS}.items()]
    (s,) = analyze(one_set(recs)).series
    assert s.reference.power_limit_w == 250 and "highest power limit measured, 250 W" in s.reference_rule
    assert s.optima["min_energy"].power_limit_w == 150 and s.lock_vs_cap == ()  # one clock-axis point: no table
    ref = summary_dict(analyze(one_set(recs)))["series"][0]["reference"]  # the JSON names the cap, not just "null"
    assert (ref["freq_mhz"], ref["power_limit_w"]) == (None, 250)


def test_optima_per_axis_and_over_the_grid():
    (s,) = analyze(one_set(lock_and_cap_records())).series
    assert s.optima["min_energy"].freq_mhz == 1005  # over every point: the lowest energy, 80 J
    assert s.axis_optima["clock"]["min_energy"].freq_mhz == 1005
    assert s.axis_optima["power limit"]["min_energy"].power_limit_w == 150
    assert s.axis_optima["power limit"]["max_saving_within_slowdown"].power_limit_w is None  # 3%: only the reference


def test_lock_vs_cap_picks_each_knobs_best_saving_within_each_bound_and_names_the_winner():
    (s,) = analyze(one_set(lock_and_cap_records(jitter=0.002)), max_slowdown_pct=5).series
    rows = {r.bound_pct: r for r in s.lock_vs_cap}
    assert sorted(rows) == [1.0, 3.0, 5.0, 10.0, 20.0]
    five = rows[5.0]
    assert (five.lock.freq_mhz, five.cap.power_limit_w) == (1275, 220)  # 7% vs 10% saving at +4% / +3%
    assert five.verdict.startswith("the power cap saves more by 3.0 pp (±")
    twenty = rows[20.0]
    assert (twenty.lock.freq_mhz, twenty.cap.power_limit_w) == (1005, 150)  # 20% vs 18%
    assert twenty.verdict.startswith("the clock lock saves more by 2.0 pp")
    # Within 1% only the (uncapped) reference: the lock column may hold it, the cap column never holds an uncapped point
    assert rows[1.0].lock.is_reference and rows[1.0].cap is None
    assert rows[1.0].verdict == "n/a: no power cap point within the bound"
    assert all(r.cap is None or r.cap.power_limit_w is not None for r in rows.values())


def test_a_difference_inside_the_combined_uncertainty_is_called_not_significant():
    recs = lock_and_cap_records()
    for rec in recs:  # energies of 3 runs spread by +-20%: the savings' uncertainties swamp the 3 pp difference
        e = rec["energy_windows"][0]["energy_j"]
        for w, f in zip(rec["energy_windows"], (0.8, 1.0, 1.2), strict=True):
            w["energy_j"] = e * f
    (s,) = analyze(one_set(recs), max_slowdown_pct=5).series
    five = next(r for r in s.lock_vs_cap if r.bound_pct == 5.0)
    assert five.verdict.startswith("no significant difference (+3.0 pp, uncertainty ±")


def test_one_run_per_point_says_the_spread_is_unknown():
    analysis = analyze(one_set(lock_and_cap_records(runs=1)))
    (s,) = analysis.series
    assert "uncertainty unknown: one run per point" in next(r for r in s.lock_vs_cap if r.bound_pct == 5.0).verdict
    zeus_rows = [line for line in markdown(analysis).splitlines() if line.startswith("| 0.5 |")]  # Zeus, eta 0.5
    assert zeus_rows and all("(n=1: spread unknown)" in line for line in zeus_rows)


def test_zeus_cost_follows_eta_from_the_fastest_point_to_the_least_energy():
    (s,) = analyze(one_set(lock_and_cap_records())).series
    assert [z.eta for z in s.zeus] == list(ZEUS_ETAS) and "P_max = 250 W" in s.zeus_note
    assert s.zeus[0].freq_label == "1410 MHz"  # eta 0: time only
    assert s.zeus[-1].freq_label == "1005 MHz"  # eta 1: energy only
    z = s.zeus[2]  # eta 0.5: 0.5 * E + 0.5 * 250 * T per call
    costs = {f"{f} MHz": 0.5 * e + 125 * t for f, (t, e) in LOCKS.items()}
    costs |= {f"default @ {p} W": 0.5 * e + 125 * t for p, (t, e) in CAPS.items()}
    best = min(costs, key=costs.get)
    assert z.freq_label == best and z.cost.median == pytest.approx(costs[best]) and z.cost.n == 3


def test_zeus_cost_without_a_known_power_limit_is_unavailable_with_the_reason():
    recs = lock_and_cap_records()
    for rec in recs:
        del rec["power_limit"]
    (s,) = analyze(one_set(recs)).series
    assert s.zeus == () and "unavailable" in s.zeus_note and "no GPU power limit" in s.zeus_note
    old = copy.deepcopy(recs)
    for rec in old:
        rec["telemetry"]["power_limit_w"] = 250.0
    (s,) = analyze(one_set(old)).series
    assert len(s.zeus) == len(ZEUS_ETAS) and "enforced power limit at discovery" in s.zeus_note


def test_the_pareto_front_spans_both_knobs():
    (s,) = analyze(one_set(lock_and_cap_records())).series
    front = [p.freq_label for p in pareto_front(s.points)]
    # 1275 MHz (1.04 s, 93 J) is beaten by the 220 W cap (1.03 s, 90 J): off the front
    assert front == ["1410 MHz", "default @ 220 W", "default @ 190 W", "1005 MHz"]


def test_a_series_without_caps_reports_as_before():
    (s,) = analyze(one_set([record(f, [t] * 2, [e] * 2) for f, (t, e) in LOCKS.items()])).series
    assert s.axis_optima == {} and s.lock_vs_cap == ()
    md = markdown(analyze(one_set([record(f, [t] * 2, [e] * 2) for f, (t, e) in LOCKS.items()])))
    assert "Clock lock vs power cap" not in md and "Optima per axis" not in md


def test_the_report_holds_the_lock_vs_cap_table_zeus_and_the_axes(tmp_path):
    analysis = analyze(one_set(lock_and_cap_records(jitter=0.002)), max_slowdown_pct=5)
    md = markdown(analysis)
    assert "Clock lock vs power cap at equal slowdown" in md
    assert "| 5% | 1275 MHz | 7.0% ±" in md and "| default @ 220 W | 10.0% ±" in md
    assert "Optima per axis" in md and "| eta | least-cost point |" in md
    summary = json.loads(json.dumps(summary_dict(analysis), default=str))
    (series,) = summary["series"]
    assert series["lock_vs_cap"][2]["power_cap"]["power_limit_w"] == 220
    assert [z["eta"] for z in series["zeus"]["picks"]] == list(ZEUS_ETAS)
    assert series["axis_optima"]["power limit"]["min_energy"]["power_limit_w"] == 150
    assert {p["power_limit_w"] for p in series["points"]} == {None, 220, 190, 150}
    files = write_report(analysis, one_set(lock_and_cap_records()), tmp_path, plots=False)
    header = (tmp_path / "dvfs_points.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["power_limit_w", "enforced_power_limit_w"] and files.plots == ()


@pytest.mark.slow  # draws twenty figures (~5 s)
def test_a_report_with_both_knobs_draws_the_power_limit_plots(tmp_path):
    pytest.importorskip("matplotlib")
    analysis = analyze(one_set(lock_and_cap_records()))
    files = write_report(analysis, one_set(lock_and_cap_records()), tmp_path)
    names = {p.name for p in files.plots}
    assert {"time_vs_power_limit.png", "energy_vs_power_limit.png", "pareto.png", "time_vs_freq.png"} <= names
    assert "grid_energy.png" not in names  # locks and caps, but no clock under a cap: not a grid
    grid = [capped(f, p, [1.0 + 1000 / f] * 2, [p / 2 + f / 100] * 2) for f in (1410, 1005) for p in (250, 180)]
    files = write_report(analyze(one_set(grid)), one_set(grid), tmp_path / "g")
    assert "grid_energy.png" in {p.name for p in files.plots}
    power_only = [capped(None, p, [t] * 2, [e] * 2) for p, (t, e) in {250: (1.0, 100.0), **CAPS}.items()]
    files = write_report(analyze(one_set(power_only)), one_set(power_only), tmp_path / "p")
    assert {p.name for p in files.plots} == {"time_vs_power_limit.png", "energy_vs_power_limit.png", "pareto.png"}


def test_the_terminal_shows_the_lock_vs_cap_table_after_the_optima():
    from rich.console import Console

    from sdsuite.cli.report import print_optima

    console = Console(record=True, width=200)
    print_optima(analyze(one_set(lock_and_cap_records(jitter=0.002)), max_slowdown_pct=5), console)
    text = console.export_text()
    assert "clock lock vs power cap at equal slowdown" in text
    assert "default @ 220 W" in text and "the power cap saves more by 3.0 pp" in text
