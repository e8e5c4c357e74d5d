"""Effects of an optimization set against the reference set of the same case: speedup, peak-memory
reduction, energy change and output fidelity (max abs diff, PSNR, SSIM, LPIPS when local).

The reference is :data:`REFERENCE` (the ``baseline`` preset: plain-math ``attn=eager``). Its results
live in a small per-process store: a measured reference case puts its images and metrics there; a
case with other options takes them from there, or, when the reference was not measured in this
process (another pytest-xdist worker, not in the grid), generates the reference images itself with
one untimed call, so fidelity is always checked while speed/memory/energy effects are reported
unavailable with the reason (never estimated).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdsuite.core.metrics import metric_center, unavailable_metric, value_metric
from sdsuite.optimizations.sets import BASELINE, OptimizationSet

if TYPE_CHECKING:  # torch (and sdsuite.quality.fidelity, which imports it) only where images are compared: the
    # flags (sdsuite.spec.flags) and the reports take FIDELITY_MODES and the tables from here without it
    import torch

    from sdsuite.quality.fidelity import FidelityTolerance

REFERENCE: OptimizationSet = BASELINE
FIDELITY_MODES = (
    "auto",
    "all",
    "off",
)  # auto: non-default sets (default set only if a reference is at hand); all: every set


def reference_case(case):
    """The same case with the reference optimization set."""
    return dataclasses.replace(case, options=REFERENCE)


def is_reference(case) -> bool:
    """True when ``case`` runs the reference set (it is compared with nothing, others with it)."""
    return case.options == REFERENCE


@dataclass
class ReferenceResult:
    """Reference images (CPU) of one case, plus its measured metrics when the case was measured here."""

    case_id: str
    images: torch.Tensor | None
    record_id: str | None = None  # None: images from an untimed generation, no metrics
    metrics: dict[str, dict] | None = None
    problem: str | None = None  # why the images cannot serve as a reference (failed generation, NaN...)


class ReferenceStore:
    """Bounded LRU of reference results keyed on (reference case, weights, device)."""

    def __init__(self, max_entries: int = 16):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, ReferenceResult] = OrderedDict()

    @staticmethod
    def key(case, weights: str, device: torch.device | str) -> tuple:
        """Store key of ``case``'s reference (the prompt text is part of the case, unlike its id)."""
        return (reference_case(case), weights, str(device))

    def get(self, case, weights: str, device: torch.device | str) -> ReferenceResult | None:
        """The reference result for ``case`` or None."""
        k = self.key(case, weights, device)
        if k in self._entries:
            self._entries.move_to_end(k)
        return self._entries.get(k)

    def put(self, case, weights: str, device: torch.device | str, result: ReferenceResult) -> None:
        """Store (or replace) the reference result for ``case``; a measured result is never replaced by an unmeasured
        one."""
        k = self.key(case, weights, device)
        old = self._entries.get(k)
        if old is not None and old.metrics is not None and result.metrics is None:
            return
        self._entries[k] = result
        self._entries.move_to_end(k)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (tests)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


REFERENCES = ReferenceStore()


def fidelity_wanted(case, mode: str, store: ReferenceStore, weights: str, device) -> bool:
    """Whether ``case`` gets a fidelity check under ``mode`` (see FIDELITY_MODES)."""
    if mode == "off" or is_reference(case):
        return False
    if mode == "all" or not case.options.is_default:
        return True
    return store.get(case, weights, device) is not None


_LPIPS: dict[str, Any] = {}


def _lpips():
    """LPIPS callable and reason, loaded once per process (only when its weights are local)."""
    if "fn" not in _LPIPS:
        from sdsuite.quality.fidelity import load_lpips, lpips_unavailable_reason

        reason = lpips_unavailable_reason()
        _LPIPS["fn"], _LPIPS["reason"] = load_lpips() if reason is None else (None, reason)
    return _LPIPS["fn"], _LPIPS["reason"]


def _ratio_effect(name: str, unit: str, mine: dict | None, ref: dict | None, fn, ref_result: ReferenceResult) -> dict:
    if ref_result.metrics is None:
        return unavailable_metric(
            unit,
            f"the reference case {ref_result.case_id} was not measured in this process (its images were generated "
            "for the fidelity check only); measure it in the same run, e.g. `sdsuite run ... --compare-options`",
        )
    a, b = metric_center(mine), metric_center(ref)
    if a is None or b is None:
        why = (mine or {}).get("reason") or (ref or {}).get("reason") or "not measured"
        return unavailable_metric(unit, f"{name} unavailable: {why}")
    if b == 0 or a == 0:
        return unavailable_metric(unit, f"{name}: a zero measurement cannot form a ratio")
    return value_metric(fn(a, b), unit, reference=b, this=a)


def speed_memory_energy(metrics: dict[str, dict], ref: ReferenceResult) -> dict[str, dict]:
    """Speedup (reference latency / this latency), peak-memory reduction (1 - this/reference) and
    energy change (this/reference - 1, per image), each unavailable with the reason when it cannot be formed."""
    rm = ref.metrics or {}
    return {
        "speedup": _ratio_effect(
            "latency", "x", metrics.get("latency_s"), rm.get("latency_s"), lambda a, b: b / a, ref
        ),
        "peak_memory_reduction": _ratio_effect(
            "peak memory",
            "1",
            metrics.get("peak_memory_bytes"),
            rm.get("peak_memory_bytes"),
            lambda a, b: 1.0 - a / b,
            ref,
        ),
        "energy_change": _ratio_effect(
            "energy per image",
            "1",
            metrics.get("energy_per_image_j"),
            rm.get("energy_per_image_j"),
            lambda a, b: a / b - 1.0,
            ref,
        ),
    }


def fidelity(images: torch.Tensor, ref: ReferenceResult, tolerance: FidelityTolerance) -> dict[str, Any]:
    """Image difference from the reference and the tolerance verdict:
    ``{"checked", "passed", "violation", "metrics", ...}``."""
    base = {
        "reference_options": REFERENCE.id,
        "reference_case_id": ref.case_id,
        "tolerance": dataclasses.asdict(tolerance),
    }
    if ref.problem is not None or ref.images is None:
        return {
            **base,
            "checked": False,
            "passed": None,
            "violation": None,
            "reason": f"no usable reference images: {ref.problem}",
        }
    if tuple(images.shape) != tuple(ref.images.shape):
        return {
            **base,
            "checked": False,
            "passed": None,
            "violation": None,
            "reason": f"reference images have shape {tuple(ref.images.shape)}, these {tuple(images.shape)}",
        }
    from sdsuite.quality.fidelity import compare_images

    fn, reason = _lpips()
    metrics = compare_images(images.detach().cpu(), ref.images, lpips=fn, lpips_reason=reason)
    violation = tolerance.check(metrics)
    return {**base, "checked": True, "passed": violation is None, "violation": violation, "metrics": metrics}


def effects_for(case, metrics: dict[str, dict], images: torch.Tensor, ref: ReferenceResult) -> tuple[dict, dict]:
    """(effects, fidelity) record entries of ``case`` against its reference result."""
    from sdsuite.quality.fidelity import default_tolerance

    eff = {"reference_options": REFERENCE.id, "reference_case_id": ref.case_id, "reference_record_id": ref.record_id}
    eff.update(speed_memory_energy(metrics, ref))
    return eff, fidelity(images, ref, default_tolerance(case.options, case.precision))


# -- reports ------------------------------------------------------------------------------------

EFFECT_COLUMNS = (
    "case",
    "options",
    "status",
    "latency",
    "speedup",
    "peak mem",
    "mem reduction",
    "energy change",
    "max abs diff",
    "PSNR",
    "SSIM",
    "fidelity",
)


def _fmt(metric: dict | None, fmt: str) -> str:
    if not metric:
        return "-"
    if not metric.get("available"):
        return "n/a"
    if metric.get("infinite"):
        return "inf"
    v = metric.get("value")
    return "-" if v is None else format(v, fmt)


def _case_without_options(rec: dict) -> str:
    opts = (rec.get("options") or {}).get("id") or (rec.get("case") or {}).get("options")
    cid = rec.get("case_id", "")
    suffix = "/" + opts if opts else None
    return cid[: -len(suffix)] if suffix and cid.endswith(suffix) else cid


def effect_rows(records: Sequence[dict]) -> list[list[str]]:
    """One row per record: the case without its options, the options id and the effects, as display strings."""
    rows = []
    for r in records:
        eff = r.get("effects") or {}
        fid = r.get("fidelity") or {}
        fm = fid.get("metrics") or {}
        lat = (r.get("metrics") or {}).get("latency_s")
        mem = (r.get("metrics") or {}).get("peak_memory_bytes")
        c_lat = metric_center(lat)
        c_mem = metric_center(mem)
        if is_reference_record(r):
            verdict = "reference"
        elif fid.get("checked"):
            verdict = "ok" if fid.get("passed") else "FAIL"
        else:
            verdict = "not checked"
        energy = eff.get("energy_change")
        rows.append(
            [
                _case_without_options(r),
                (r.get("options") or {}).get("id") or (r.get("case") or {}).get("options") or "",
                r.get("status", ""),
                "n/a" if c_lat is None else f"{c_lat * 1e3:.1f} ms",
                "1.00x"
                if is_reference_record(r)
                else (_fmt(eff.get("speedup"), ".2f") + ("x" if (eff.get("speedup") or {}).get("available") else "")),
                "n/a" if c_mem is None else f"{c_mem / 2**20:.0f} MiB",
                "-" if is_reference_record(r) else _fmt(eff.get("peak_memory_reduction"), "+.1%"),
                "-"
                if is_reference_record(r)
                else (_fmt(energy, "+.1%") if (energy or {}).get("available") else ("unavailable" if energy else "-")),
                _fmt(fm.get("max_abs_diff"), ".2e"),
                _fmt(fm.get("psnr_db"), ".1f"),
                _fmt(fm.get("ssim"), ".5f"),
                verdict,
            ]
        )
    return rows


def is_reference_record(rec: dict) -> bool:
    """True for a record measured with the reference optimization set."""
    return ((rec.get("options") or {}).get("id") or (rec.get("case") or {}).get("options")) == REFERENCE.id


def effects_table(records: Sequence[dict], title: str = "optimization effects (vs attn=eager of the same case)"):
    """Rich table of :func:`effect_rows`."""
    from rich.table import Table

    from sdsuite.core.console import readable

    t = Table(title=title, title_justify="left")
    for col in EFFECT_COLUMNS:
        t.add_column(col, justify="left" if col in ("case", "options", "status", "fidelity") else "right")
    for row in effect_rows(records):
        t.add_row(*row)  # the sdsuite console prints text verbatim (markup off)
    return readable(t, "case", "options")


def effects_markdown(records: Sequence[dict]) -> str:
    """GitHub markdown table of :func:`effect_rows`, plus the reasons of failed fidelity checks and unavailable
    effects."""
    lines = ["| " + " | ".join(EFFECT_COLUMNS) + " |", "|" + "---|" * len(EFFECT_COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in effect_rows(records)]
    notes = effect_notes(records)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def effect_notes(records: Sequence[dict]) -> list[str]:
    """Distinct reasons behind failed or unavailable entries (each once)."""
    seen: dict[str, None] = {}
    for r in records:
        fid = r.get("fidelity") or {}
        if fid.get("violation"):
            seen[f"{r.get('case_id')}: {fid['violation']}"] = None
        elif fid.get("reason") and not is_reference_record(r):
            seen[f"fidelity not checked: {fid['reason']}"] = None
        for name, m in (r.get("effects") or {}).items():
            if isinstance(m, dict) and m.get("available") is False:
                seen[f"{name}: {m.get('reason')}"] = None
        if r.get("status") == "skipped":
            seen[f"{r.get('case_id')} skipped: {r.get('reason')}"] = None
    return list(seen)
