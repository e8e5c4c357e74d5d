"""``sdsuite report``: CSV/JSON/Markdown and the six plots, several result sets side by side, bad input."""

from __future__ import annotations

import csv
import json
import sys

import pytest
from _cli_args import FAST_RUN  # tests/unit is on sys.path

from sdsuite.cli.main import main
from sdsuite.dvfs.plots import PLOT_FILES

SWEEP = ["sweep", "--telemetry", "sim", "--allow-clock-control", "--freq", "sample:6", "--steps", "1", "--runs", "3"]
SWEEP += ["--no-flops", "--no-spans", "--no-progress", "--save-images", "none", "--no-report"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, one_torch_thread):
    """Two small simulated sweeps: an A100 on the virtual clock, an H100 on the wall clock (noisy times)."""
    root = tmp_path_factory.mktemp("sweeps")
    assert main([*SWEEP, "--gpu-model", "a100", "--out", str(root / "a100")]) == 0
    h100 = ["--gpu-model", "h100", "--sim-clock", "real", "--min-energy-window", "0", "--out", str(root / "h100")]
    assert main([*SWEEP, *h100]) == 0
    return root


@pytest.mark.slow  # draws every plot (matplotlib): seconds each, kept out of `pytest -m quick`
def test_report_writes_tidy_csv_json_markdown_and_six_plots(sweeps, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(sweeps / "a100"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "minimum EDP" in printed and "reference: the maximum locked clock, 1410 MHz" in printed
    runs = list(csv.DictReader((out / "dvfs_runs.csv").open()))
    points = list(csv.DictReader((out / "dvfs_points.csv").open()))
    assert len(runs) == 6 * 3 and len(points) == 6
    assert {r["time_source"] for r in runs} == {"energy_window"} and all(float(r["energy_j"]) > 0 for r in runs)
    assert [p["freq_mhz"] for p in points] == ["1410", "1230", "1050", "870", "690", "510"]
    assert sum(p["is_reference"] == "true" for p in points) == 1
    summary = json.loads((out / "dvfs_summary.json").read_text())
    (series,) = summary["series"]
    assert summary["simulated"] is True and summary["method"]["max_slowdown_pct"] == 3.0
    assert set(series["optima"]) == {"min_energy", "min_edp", "min_ed2p", "max_saving_within_slowdown"}
    assert series["reference"]["freq_mhz"] == 1410
    md = (out / "dvfs_report.md").read_text()
    assert "**SIMULATED**" in md and "| minimum ED2P |" in md and "slowdown <= 3%" in md
    assert len(PLOT_FILES) == 6 and "ed2p" in PLOT_FILES  # ED2P has a plot of its own
    for name in PLOT_FILES.values():
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name})" in md


@pytest.mark.slow  # draws every plot (matplotlib): seconds each, kept out of `pytest -m quick`
def test_several_directories_are_compared_side_by_side(sweeps, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(sweeps / "a100"), str(sweeps / "h100"), "--max-slowdown", "5"]) == 0
    out = tmp_path / "sdsuite-report"
    summary = json.loads((out / "dvfs_summary.json").read_text())
    labels = [s["label"] for s in summary["series"]]
    assert labels == [
        "tiny-sd/default/fp32/64x64/s1/b1 on NVIDIA A100-PCIE-40GB (simulated)",
        "tiny-sd/default/fp32/64x64/s1/b1 on NVIDIA H100 NVL (simulated)",
    ]
    assert [s["source"] for s in summary["series"]] == ["a100", "h100"]
    assert {s["reference"]["freq_mhz"] for s in summary["series"]} == {1410, 1785}
    md = (out / "dvfs_report.md").read_text()
    assert md.count("| tiny-sd/default/fp32/64x64/s1/b1 on NVIDIA") == 2  # one summary row each
    assert len(list(out.glob("*.png"))) == len(PLOT_FILES)


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_without_matplotlib_the_tables_are_written_and_the_exit_is_2(sweeps, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    out = tmp_path / "rep"
    assert main(["report", str(sweeps / "a100"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plots need matplotlib" in err and "pip install 'sdsuite[plots]'" in err
    assert {p.name for p in out.iterdir()} == {
        "dvfs_runs.csv",
        "dvfs_points.csv",
        "dvfs_summary.json",
        "dvfs_report.md",
    }
    assert main(["report", str(sweeps / "a100"), "--out", str(out), "--no-plots"]) == 0


@pytest.mark.slow  # the two sweeps of the `sweeps` fixture (~3 s): kept out of `pytest -m quick`
def test_json_format_prints_the_summary(sweeps, tmp_path, capsys):
    assert (
        main(
            [
                "report",
                str(sweeps / "a100"),
                "--out",
                str(tmp_path / "r"),
                "--format",
                "json",
                "--reference",
                "default",
                "--no-plots",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert "no default-clock point was measured" in summary["series"][0]["reference"]["rule"]


def test_corrupt_results_file_is_named_and_left_untouched(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    text = '{"schema_version": 1}\nnot json\n'
    (d / "results.jsonl").write_text(text)
    assert main(["report", str(d), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{d / 'results.jsonl'}:1: record lacks case" in err and err.count("\n") == 1
    assert (d / "results.jsonl").read_text() == text and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/dir"], "no results.jsonl in '/no/such/dir'"),
        pytest.param(  # the two sweeps of the `sweeps` fixture (~3 s): kept out of `pytest -m quick`
            ["{a100}", "--max-slowdown", "-1"], "--max-slowdown must be a percentage >= 0", marks=pytest.mark.slow
        ),
    ],
)
def test_bad_input_is_one_clear_error_with_exit_2(request, tmp_path, capsys, args, message):
    if any("{a100}" in a for a in args):
        args = [a.format(a100=request.getfixturevalue("sweeps") / "a100") for a in args]
        capsys.readouterr()  # the sweeps' own progress lines, when this test is the first of its worker to need them
    assert main(["report", *args, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unknown_reference_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path), "--reference", "fastest"])
    assert exc.value.code == 2 and "invalid choice: 'fastest'" in capsys.readouterr().err


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_a_single_clock_gets_one_line_not_trivial_optima(tmp_path, capsys):
    run = FAST_RUN
    assert main([*run, "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "r"), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "one clock measured (default); DVFS optima need several" in printed and "minimum EDP" not in printed


def test_plots_draw_rounding_negative_and_nan_spreads_as_zero_bars(tmp_path):
    # An older record's IQR can be -3.55e-15 (float rounding); matplotlib refuses negative yerr: the plots
    # never trust it
    from sdsuite.dvfs.analysis import Spread
    from sdsuite.dvfs.plots import _bars

    bad = [Spread(1.0, 1.0 + 3.55e-15, 1.0 - 1e-15, 2), Spread(2.0, float("nan"), 2.5, 2)]
    lo, hi = _bars(bad)
    assert lo == [0.0, 0.0] and hi == [0.0, 0.5]


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_a_report_with_nothing_to_plot_says_so_writes_no_png_and_exits_2(tmp_path, capsys):
    run = FAST_RUN
    assert main([*run, "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "r"), "--out", str(tmp_path / "rep")]) == 2
    cap = capsys.readouterr()
    assert "nothing to plot: one clock per series" in cap.err and cap.err.count("\n") == 1
    assert not list((tmp_path / "rep").glob("*.png")) and "plot(s)" not in cap.out


def test_an_all_failed_sweep_has_nothing_to_plot(tmp_path):
    from sdsuite.dvfs import analyze
    from sdsuite.dvfs.data import ResultSet
    from sdsuite.dvfs.plots import nothing_to_plot

    def record(freq, times, status="ok"):
        windows = [
            {"available": True, "duration_s": t, "energy_j": 10 * t, "generations": 1, "sm_clock_mhz": {"mean": freq}}
            for t in times
        ]
        return {
            "schema_version": 1, "record_id": f"r{freq}", "run_id": "run",
            "case_id": f"tiny-sd/default/fp32/f{freq}/64x64/s4/b1",
            "case": {"variant": "tiny-sd", "freq_mhz": freq, "batch_size": 1, "images_per_prompt": 1}, "status": status,
            "reason": "boom" if status != "ok" else None, "simulated": True, "telemetry": {"name": "GPU"},
            "metrics": {"latency_s": {"samples": list(times)}}, "energy_windows": windows,
            "finished_at": "2030-01-01T00:00:00",
        }  # fmt: skip

    def one_set(recs):
        return [ResultSet(path=tmp_path, label="r", records=tuple(recs))]

    failed = [record(f, [], status="failed") for f in (1410, 1200, 990)]
    assert "all 3 point(s) failed" in nothing_to_plot(analyze(one_set(failed)))
    ok = [record(f, [1.0, 1.1]) for f in (1410, 1200)]
    assert nothing_to_plot(analyze(one_set(ok))) is None


def _figures(monkeypatch, analysis, tmp_path) -> dict:
    """The figures write_plots draws, kept open, by file name."""
    import matplotlib.pyplot as plt

    from sdsuite.dvfs.plots import write_plots

    plt.close("all")
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    paths = write_plots(analysis, tmp_path)
    return {p.name: plt.figure(n) for p, n in zip(paths, plt.get_fignums(), strict=True)}


@pytest.mark.slow  # draws every plot (matplotlib): seconds each, kept out of `pytest -m quick`
def test_plots_draw_the_bound_mark_optima_and_keep_the_reference_visible(sweeps, tmp_path, monkeypatch):
    from sdsuite.dvfs import analyze, load_result_sets

    analysis = analyze(load_result_sets([sweeps / "a100"]), reference="max", max_slowdown_pct=3.0)
    (s,) = analysis.series
    figs = _figures(monkeypatch, analysis, tmp_path)
    ax = figs["time_vs_freq.png"].axes[0]
    bound = s.reference.value("time_s") * 1.03
    assert any(list(line.get_ydata()) == [bound, bound] for line in ax.get_lines())  # the slowdown bound is drawn
    labels = ax.get_legend_handles_labels()[1]
    assert "max saving within slowdown bound" in labels and any(lb.startswith("slowdown bound") for lb in labels)
    assert [a.get_ylabel() for a in ax.child_axes] == ["slowdown vs reference (%)"]
    assert [a.get_ylabel() for a in figs["energy_vs_freq.png"].axes[0].child_axes] == ["energy saving vs reference (%)"]
    energy = figs["energy_vs_freq.png"].axes[0]
    squares = [ln for ln in energy.get_lines() if ln.get_marker() == "s" and len(ln.get_xdata()) == 1]
    optima = [ln for ln in energy.get_lines() if ln.get_marker() in ("*", "P") and len(ln.get_xdata()) == 1]
    assert squares and optima and min(ln.get_zorder() for ln in squares) > max(ln.get_zorder() for ln in optima)
    assert squares[0].get_markersize() > max(ln.get_markersize() for ln in optima)


@pytest.mark.slow  # draws every plot (matplotlib): seconds each, kept out of `pytest -m quick`
def test_multi_series_legends_use_neutral_optimum_symbols(sweeps, tmp_path, monkeypatch):
    from matplotlib.colors import to_rgba

    from sdsuite.dvfs import analyze, load_result_sets

    analysis = analyze(load_result_sets([sweeps / "a100", sweeps / "h100"]), reference="max", max_slowdown_pct=3.0)
    figs = _figures(monkeypatch, analysis, tmp_path)
    for name in ("energy_vs_freq.png", "pareto.png"):
        handles, labels = figs[name].axes[0].get_legend_handles_labels()
        by_label = dict(zip(labels, handles, strict=True))
        assert to_rgba(by_label["min energy"].get_color()) == to_rgba("0.85"), name  # not series 1's blue


def test_an_optimum_at_the_edge_of_the_swept_range_is_flagged():
    from sdsuite.dvfs.analysis import PointStats
    from sdsuite.dvfs.plots import _optimum_label, at_edge

    pts = tuple(PointStats(f, "ok", None, {}, None, f"r{f}") for f in (510, 900, 1410))

    class S:
        points, reference = pts, pts[-1]

    assert at_edge(S, pts[0]) and at_edge(S, pts[2]) and not at_edge(S, pts[1])
    assert _optimum_label(S, "min_energy", pts[0]) == "510 MHz (edge of swept range)"
    assert _optimum_label(S, "min_energy", pts[1]) == "900 MHz"
    assert "= reference" in _optimum_label(S, "max_saving_within_slowdown", pts[2])
