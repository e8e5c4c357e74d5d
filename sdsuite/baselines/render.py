"""Comparison tables: plain text (terminal, pytest failure messages), markdown and JSON."""

from __future__ import annotations

from collections.abc import Sequence

from sdsuite.baselines.compare import CaseComparison, MetricComparison, Verdict
from sdsuite.measure.display import fmt_bytes, fmt_flops, fmt_seconds

COLUMNS = ("metric", "baseline", "obtained", "delta %", "tolerance", "verdict")


def fmt_value(value: float | None, unit: str) -> str:
    """A metric value with its unit in readable form."""
    if value is None:
        return "-"
    if unit == "s":
        return fmt_seconds(value)
    if unit == "B":
        return fmt_bytes(value)
    if unit == "FLOP":
        return fmt_flops(value) if value < 1e6 or value != int(value) else f"{int(value):,} FLOP"
    if unit.startswith("x "):
        return f"{value:.3f}x"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.6g}" + (f" {unit}" if unit not in ("", "1") else "")


def fmt_delta(row: MetricComparison) -> str:
    """Relative change in percent with a sign."""
    d = row.delta_rel
    if d is None:
        return "-"
    return f"{d * 100:+.2f}%" if abs(d) >= 1e-4 or d == 0 else f"{d * 100:+.2e}%"


def _verdict(row: MetricComparison) -> str:
    text = row.verdict.value
    if row.note and row.verdict not in (Verdict.PASS,):
        text += f" ({row.note})"
    return text


def row_cells(row: MetricComparison) -> list[str]:
    """The six cells of a row."""
    return [
        row.metric,
        fmt_value(row.baseline, row.unit),
        fmt_value(row.obtained, row.unit),
        fmt_delta(row),
        row.tolerance.describe(),
        _verdict(row),
    ]


def text_table(comp: CaseComparison) -> str:
    """Fixed-width table of one case (no colours: it ends up in logs and CI annotations)."""
    rows = [list(COLUMNS)] + [row_cells(r) for r in comp.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for i, r in enumerate(rows):
        cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r[:-1], widths, strict=True))]
        lines.append("  ".join(cells + [r[-1]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(COLUMNS[-1]))
    return "\n".join(lines)


def markdown(comparisons: Sequence[CaseComparison], skipped: Sequence[tuple[str, str]] = ()) -> str:
    """A markdown report (for CI job summaries and PR comments)."""
    out = ["## sdsuite baseline comparison", ""]
    failed = sum(c.failed for c in comparisons)
    out.append(f"{len(comparisons)} case(s) compared, {failed} failed, {len(skipped)} not compared.")
    for c in comparisons:
        status = "FAILED" if c.failed else "passed"
        out += [
            "",
            f"### `{c.case_id}` ({c.hardware_key}): {status}",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
        for r in c.rows:
            out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row_cells(r)) + " |")
    if skipped:
        out += ["", "### Not compared", ""]
        out += [f"- `{case}`: {why}" for case, why in skipped]
    return "\n".join(out) + "\n"
