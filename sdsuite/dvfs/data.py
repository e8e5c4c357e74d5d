"""Tidy rows from results records: one per measured run, grouped into series (case without clock, GPU, source).

Time per run is the energy window's duration divided by the generations it held: the same interval
the energy was measured over, so E, T, EDP and ED2P of a run are consistent. Records without energy
windows fall back to ``latency_s`` (and have no energy). On the simulated device with the virtual
clock the window time is modelled device time (see sdsuite.dvfs.simtime); the records say so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdsuite.core.errors import InputFileError, UsageError
from sdsuite.store.results import RESULTS_FILE, ResultsDir


@dataclass(frozen=True)
class ResultSet:
    """The records of one results directory, with a short label for tables and legends."""

    path: Path
    label: str
    records: tuple[dict, ...]


def load_result_sets(paths: Sequence[str | os.PathLike]) -> list[ResultSet]:
    """Read each results directory (or results.jsonl file); corrupt files raise InputFileError with path and line."""
    if not paths:
        raise UsageError("give at least one results directory (written by sdsuite sweep or sdsuite run).")
    sets = []
    labels: set[str] = set()
    for raw in paths:
        p = Path(raw)
        d = p.parent if p.name == RESULTS_FILE and p.is_file() else p
        if not (d / RESULTS_FILE).is_file():
            raise UsageError(
                f"no {RESULTS_FILE} in {str(d)!r}; point at a directory written by sdsuite sweep or sdsuite run."
            )
        records = ResultsDir(d).records()
        label = d.resolve().name or str(d)
        base, n = label, 2
        while label in labels:  # two directories with the same name: keep their labels apart
            label, n = f"{base}#{n}", n + 1
        labels.add(label)
        sets.append(ResultSet(d, label, tuple(records)))
    return sets


@dataclass(frozen=True)
class SeriesKey:
    """What a frequency series shares: source, GPU and every case field except the clock."""

    source: str
    gpu: str
    simulated: bool
    case: str  # case id with the frequency field removed

    @property
    def label(self) -> str:
        """Readable series name."""
        sim = " (simulated)" if self.simulated else ""
        return f"{self.case} on {self.gpu}{sim}"


@dataclass(frozen=True)
class RunRow:
    """One measured run of one point."""

    series: SeriesKey
    freq_mhz: int | None
    record_id: str
    run_id: str
    run_index: int
    time_s: float
    time_source: str  # "energy_window" or "latency"
    latency_s: float | None
    energy_j: float | None  # per pipeline call
    energy_per_image_j: float | None
    avg_power_w: float | None
    edp_js: float | None
    ed2p_js2: float | None
    observed_sm_mhz: float | None
    energy_bound_rel: float | None = None  # the window's measurement bound relative to its energy (None: not recorded)
    power_limit_w: int | None = None  # the requested power cap (None: the GPU's own limit)


@dataclass(frozen=True)
class PointRecord:
    """The record chosen for one point of a series, its runs, and how many older duplicates were ignored."""

    series: SeriesKey
    freq_mhz: int | None
    record: Mapping[str, Any]
    runs: tuple[RunRow, ...]
    duplicates: int = 0
    power_limit_w: int | None = None  # requested; None: the GPU's own limit

    @property
    def status(self) -> str:
        """ok, failed or skipped."""
        return self.record.get("status", "failed")

    @property
    def reason(self) -> str | None:
        """Why the point failed or was skipped."""
        return self.record.get("reason")


def gpu_label(record: Mapping[str, Any]) -> str:
    """The GPU a record's energy came from: the telemetry device, else the torch device."""
    tel = record.get("telemetry") or {}
    if tel.get("name"):
        return str(tel["name"])
    dev = record.get("device") or {}
    return str(dev.get("name") or dev.get("type") or "unknown device")


def series_case_id(record: Mapping[str, Any]) -> str:
    """The case id without its frequency and power-limit fields."""
    parts = str(record["case_id"]).split("/")
    if len(parts) > 3 and (parts[3].startswith("f")):
        del parts[3]
    return "/".join(p for p in parts if not _POWER_PART.fullmatch(p))


_POWER_PART = re.compile(r"pl\d+w")


def power_of(record: Mapping[str, Any]) -> int | None:
    """The requested power limit of a record in W (None: the GPU's own limit; records before the axis have none)."""
    case = record.get("case") or {}
    p = case.get("power_limit_w")
    return int(p) if p is not None else None


def freq_of(record: Mapping[str, Any]) -> int | None:
    """The requested SM clock of a record (None: default clocks)."""
    case = record.get("case") or {}
    f = case.get("freq_mhz")
    return int(f) if f is not None else None


def run_rows(record: Mapping[str, Any], series: SeriesKey) -> tuple[RunRow, ...]:
    """Per-run rows of an ok record (empty otherwise)."""
    if record.get("status") != "ok":
        return ()
    m = record.get("metrics") or {}
    lat = (m.get("latency_s") or {}).get("samples") or []
    windows = record.get("energy_windows") or []
    batch = int((record.get("case") or {}).get("batch_size") or 1) * int(
        (record.get("case") or {}).get("images_per_prompt") or 1
    )
    rows = []
    usable = windows and all(w.get("available") and w.get("duration_s") for w in windows)
    n = len(windows) if usable else len(lat)
    for i in range(n):
        if usable:
            w = windows[i]
            g = max(int(w.get("generations", 1)), 1)
            t, e = w["duration_s"] / g, w["energy_j"] / g
            src = "energy_window"
            sm = (w.get("sm_clock_mhz") or {}).get("mean")
            bound = w.get("energy_uncertainty_rel")
        else:
            t, e, src, sm, bound = lat[i], None, "latency", None, None
        rows.append(
            RunRow(
                series=series,
                freq_mhz=freq_of(record),
                record_id=str(record.get("record_id", "")),
                run_id=str(record.get("run_id", "")),
                run_index=i,
                time_s=t,
                time_source=src,
                latency_s=lat[i] if i < len(lat) else None,
                energy_j=e,
                energy_per_image_j=e / batch if e is not None else None,
                avg_power_w=e / t if e is not None and t > 0 else None,
                edp_js=e * t if e is not None else None,
                ed2p_js2=e * t * t if e is not None else None,
                observed_sm_mhz=sm,
                energy_bound_rel=float(bound) if bound is not None else None,
                power_limit_w=power_of(record),
            )
        )
    return tuple(rows)


def collect_points(sets: Sequence[ResultSet]) -> dict[SeriesKey, list[PointRecord]]:
    """Group records into series and points; per point the latest ok record wins (older ones are counted)."""
    multi = len(sets) > 1
    chosen: dict[tuple[SeriesKey, int | None, int | None], list[Mapping[str, Any]]] = {}
    for rs in sets:
        for rec in rs.records:
            if not isinstance(rec.get("case"), dict):
                raise InputFileError(
                    f"{rs.path / RESULTS_FILE}: record {rec.get('record_id')} has no case object; "
                    f"not an sdsuite record."
                )
            key = SeriesKey(rs.label if multi else "", gpu_label(rec), bool(rec.get("simulated")), series_case_id(rec))
            chosen.setdefault((key, freq_of(rec), power_of(rec)), []).append(rec)
    series: dict[SeriesKey, list[PointRecord]] = {}
    for (key, freq, power), recs in chosen.items():
        ok = [r for r in recs if r.get("status") == "ok"]
        pool = ok or recs
        # Latest first by finish time (ISO-8601 UTC strings sort in time order).
        best = max(pool, key=lambda r: (str(r.get("finished_at") or ""), str(r.get("record_id") or "")))
        dupes = len(ok) - 1 if ok else 0
        series.setdefault(key, []).append(PointRecord(key, freq, best, run_rows(best, key), dupes, power))
    for pts in series.values():
        pts.sort(
            key=lambda p: (p.freq_mhz is None, -(p.freq_mhz or 0), p.power_limit_w is None, -(p.power_limit_w or 0))
        )
    return dict(sorted(series.items(), key=lambda kv: (kv[0].source, kv[0].gpu, kv[0].case)))
