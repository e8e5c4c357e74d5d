"""Human-readable tables of records (rich)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from sdsuite.core.console import console as make_console
from sdsuite.core.console import readable
from sdsuite.core.metrics import metric_center


def fmt_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fmt_seconds(s: float | None) -> str:
    """Seconds with a unit that keeps 3 significant digits."""
    if s is None:
        return "n/a"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.3f} s"


def fmt_flops(f: float | None) -> str:
    """FLOPs with an SI prefix."""
    if f is None:
        return "n/a"
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if f >= scale:
            return f"{f / scale:.2f} {unit}"
    return f"{f:.0f} FLOP"


def _spread(metric: dict) -> str:
    """`` ±1.8%`` (half the IQR over the median), or `` (n=1)``: one sample has no spread to show."""
    if not metric or not metric.get("available") or "iqr" not in metric:
        return ""
    if (metric.get("n") or len(metric.get("samples") or ())) < 2:
        return " (n=1)"
    return f" ±{max(metric['iqr'], 0.0) / 2 / metric['median'] * 100:.1f}%" if metric.get("median") else ""


def fmt_stages(metrics: dict) -> str:
    """Stage medians: ``text · denoise · decode``; the DiT variants' text time split ``[clip X + t5 Y]``."""

    def center(name: str) -> float | None:
        m = metrics.get(name) or {}
        return metric_center(m) if m.get("available") else None

    text, denoise, decode = center("text_encode_s"), center("denoise_s"), center("vae_decode_s")
    if text is None and denoise is None and decode is None:
        return "n/a"
    out = fmt_seconds(text)
    if "text_encode_clip_s" in metrics:
        clip, t5 = center("text_encode_clip_s"), center("text_encode_t5_s")
        split = [f"clip {fmt_seconds(clip)}", f"t5 {fmt_seconds(t5)}" if t5 is not None else "no t5"]
        out += f" [{' + '.join(split)}]"
    return f"{out} · {fmt_seconds(denoise)} · {fmt_seconds(decode)}"


def records_table(records: Sequence[dict], title: str = "sdsuite results") -> Table:
    """One row per record: latency median with half-IQR spread, per-step, stage medians, images/s, memory, energy,
    FLOPs."""

    t = Table(title=title, title_justify="left")
    for col, kw in [
        ("case", {}),
        ("status", {}),
        ("latency (median ±½IQR)", {"justify": "right"}),
        ("per step", {"justify": "right"}),
        ("stages: text · denoise · decode", {"justify": "right"}),
        ("images/s", {"justify": "right"}),
        ("peak mem", {"justify": "right"}),
        ("energy/img", {"justify": "right"}),
        ("FLOPs/img", {"justify": "right"}),
    ]:
        t.add_column(col, **kw)
    for r in records:
        m = r.get("metrics") or {}
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason') or ''}"
        if r.get("timing_warning"):
            status += " (noisy: see warning)"
        e = m.get("energy_per_image_j") or {}
        energy = f"{metric_center(e):.2f} J" if e.get("available") else "unavailable"
        if e.get("available") and r.get("simulated"):
            energy += " (sim)"
        ips = metric_center(m.get("images_per_s"))
        t.add_row(
            r["case_id"],
            status,
            fmt_seconds(metric_center(m.get("latency_s"))) + _spread(m.get("latency_s")),
            fmt_seconds(metric_center(m.get("step_latency_s"))),
            fmt_stages(m),
            f"{ips:.2f}" if ips is not None else "n/a",
            fmt_bytes(metric_center(m.get("peak_memory_bytes"))),
            energy,
            fmt_flops(metric_center(m.get("flops_per_image"))),
        )
    return t


def print_records(records: Sequence[dict], console: Console | None = None, notes: bool = True) -> None:
    """Print the table plus the reasons metrics were unavailable (once each)."""
    console = console or make_console()
    console.print(readable(records_table(records), "case"))
    if not notes:
        return
    reasons = {}
    for r in records:
        for name, m in (r.get("metrics") or {}).items():
            if m and not m.get("available") and m.get("reason"):
                reasons.setdefault(m["reason"], []).append(name)
        mem = (r.get("metrics") or {}).get("peak_memory_bytes") or {}
        if mem.get("kind") == "process_peak_rss":
            reasons.setdefault("peak mem is the process's peak resident set (CPU run), not device memory", []).append(
                "peak_memory_bytes"
            )
    for r in records:
        if r.get("timing_warning"):
            console.print(f"warning: {r['case_id']}: {r['timing_warning']}", style="yellow")
    untimed = [r.get("untimed_s") or {} for r in records]
    if any(untimed):
        total = {
            k: sum(u.get(k, 0.0) for u in untimed)
            for k in ("load", "first_call_and_warmup", "flop_count", "spans_and_checks")
        }
        console.print(
            "outside the timed runs: "
            + ", ".join(f"{k.replace('_', ' ')} {fmt_seconds(v)}" for k, v in total.items() if v)
            + " (--no-flops and --no-spans skip the FLOP count and the profiled generation)",
            style="dim",
        )
    if any(r.get("simulated") for r in records):
        reasons.setdefault(
            "(sim) values come from the simulated GPU (--telemetry sim): a dry run, not a measurement", []
        ).append("energy")
    for reason, names in reasons.items():
        console.print(f"note: {', '.join(sorted(set(names)))}: {reason}", style="dim")
