"""The gate both front ends call: one record -> its hardware key, its baseline entry, a verdict,
and (when asked) an updated baseline. The pytest plugin and ``sdsuite compare``/``baseline update``
hold no comparison logic of their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sdsuite.baselines.baseline_store import BaselineStore
from sdsuite.baselines.compare import CaseComparison, Significance, compare_entry
from sdsuite.baselines.entries import obtained_entry
from sdsuite.baselines.keys import hardware_key, is_portable_key
from sdsuite.baselines.tolerance import ToleranceRules
from sdsuite.core.errors import InputFileError, UsageError

if TYPE_CHECKING:
    from sdsuite.measure.calibration import Calibration

MISSING_POLICIES = ("fail", "skip")


class UpdateMode(str, enum.Enum):
    """What to write back: nothing, failing and missing entries, or every entry of the run."""

    NONE = "none"
    FAILING = "failing"
    ALL = "all"


class Status(str, enum.Enum):
    """What happened to one record."""

    COMPARED = "compared"
    MISSING = "missing"  # no baseline for this case under any key
    OTHER_KEY = "other-key"  # baselines exist, but only for other hardware: never compared
    CREATED = "created"
    UPDATED = "updated"


@dataclass(frozen=True)
class GateConfig:
    """Everything that decides a verdict, shared by the CLI and pytest."""

    store: BaselineStore
    scope: str = "auto"
    rules: ToleranceRules = field(default_factory=ToleranceRules)
    significance: Significance = field(default_factory=Significance)
    missing: str = "fail"
    update: UpdateMode = UpdateMode.NONE
    write_obtained: bool = False

    def __post_init__(self) -> None:
        if self.missing not in MISSING_POLICIES:
            raise UsageError(
                f"unknown missing-baseline policy {self.missing!r}; valid choices: {', '.join(MISSING_POLICIES)}."
            )

    @property
    def portable(self) -> bool:
        """True when only machine-independent metrics are gated."""
        return self.scope == "portable"


@dataclass(frozen=True)
class GateResult:
    """The outcome for one record."""

    case_id: str
    hardware_key: str
    status: Status
    comparison: CaseComparison | None = None
    baseline_path: Path | None = None
    obtained_path: Path | None = None
    other_keys: tuple[str, ...] = ()
    missing_policy: str = "fail"

    @property
    def failed(self) -> bool:
        """True when this record fails the gate."""
        if self.status is Status.COMPARED:
            return self.comparison is not None and self.comparison.failed
        return self.status is Status.MISSING and self.missing_policy == "fail"

    @property
    def skipped(self) -> bool:
        """True when nothing was compared and that is not a failure."""
        return self.status is Status.OTHER_KEY or (self.status is Status.MISSING and self.missing_policy == "skip")

    def reason(self) -> str:
        """One sentence on why the record was not compared (for skips and missing baselines)."""
        if self.status is Status.OTHER_KEY:
            return (
                f"baseline for {self.case_id} exists only for hardware key(s) {', '.join(self.other_keys)}; "
                f"this run is {self.hardware_key}, and numbers from other hardware are never compared"
                + portable_hint(self.other_keys)
            )
        if self.status is Status.MISSING:
            return (
                f"no baseline for {self.case_id} under hardware key {self.hardware_key} "
                f"(looked in {self.baseline_path})"
            )
        return ""

    def to_json(self) -> dict:
        """JSON form."""
        return {
            "case_id": self.case_id,
            "hardware_key": self.hardware_key,
            "status": self.status.value,
            "failed": self.failed,
            "skipped": self.skipped,
            "reason": self.reason() or None,
            "baseline_file": str(self.baseline_path) if self.baseline_path else None,
            "comparison": self.comparison.to_json() if self.comparison else None,
        }


def is_simulated(record: dict) -> bool:
    """True for records measured on the simulated device."""
    return bool(record.get("simulated") or (record.get("device") or {}).get("simulated"))


def gate_record(
    record: dict,
    env: dict | None,
    cfg: GateConfig,
    *,
    file_name: str,
    calibration: Calibration | None = None,
    cpu_samples: list[float] | None = None,
    entry: dict | None = None,
) -> GateResult:
    """Compare ``record`` with its baseline entry; create/update it as ``cfg.update`` says.

    ``file_name`` is the file a new entry goes to (an existing entry stays in the file that holds it);
    ``calibration`` and ``cpu_samples`` (per-run CPU seconds) feed the portable scope's calibrated time;
    ``entry`` replaces the entry built from ``record`` (e.g. several sessions pooled).
    InputFileError propagates for corrupt baseline files (which are left untouched).
    """
    if (record.get("telemetry") or {}).get("device_mismatch"):
        raise InputFileError(
            f"record {record.get('case_id')!r} was measured with SDSUITE_NVML_ON_CPU=1 "
            f"(GPU telemetry while the case ran on the CPU, "
            "a test of the NVML path): it can never be a baseline or be compared with one."
        )
    rec = dict(record, simulated=is_simulated(record))
    key = hardware_key(rec, env, cfg.scope)
    case_id = rec["case_id"]
    if entry is None:
        entry = obtained_entry(rec, portable=cfg.portable, calibration=calibration, cpu_samples=cpu_samples)
    located = cfg.store.load_key(key).get(case_id)
    name = located.file.path.name[: -len(".json")] if located else file_name
    path = cfg.store.key_dir(key) / f"{name}.json"
    common = {"case_id": case_id, "hardware_key": key, "baseline_path": path, "missing_policy": cfg.missing}

    if located is None:
        others = tuple(cfg.store.keys_with_case(case_id, exclude=key))
        if cfg.update is not UpdateMode.NONE:
            cfg.store.merge(key, name, {case_id: entry}, hardware=_hardware_summary(rec, env, key))
            return GateResult(status=Status.CREATED, **common)
        if others:
            return GateResult(status=Status.OTHER_KEY, other_keys=others, **common)
        obtained = cfg.store.write_obtained(key, name, {case_id: entry}) if cfg.write_obtained else None
        return GateResult(status=Status.MISSING, obtained_path=obtained, **common)

    comparison = compare_entry(
        case_id,
        key,
        located.entry,
        entry,
        cfg.rules,
        cfg.significance,
        baseline_layers=located.file.tolerance_layers(case_id),
        baseline_file=str(located.file.path),
    )
    obtained = cfg.store.write_obtained(key, name, {case_id: entry}) if cfg.write_obtained else None
    if cfg.update is UpdateMode.ALL or (cfg.update is UpdateMode.FAILING and comparison.failed):
        cfg.store.merge(key, name, {case_id: entry}, hardware=_hardware_summary(rec, env, key))
        return GateResult(status=Status.UPDATED, comparison=comparison, obtained_path=obtained, **common)
    return GateResult(status=Status.COMPARED, comparison=comparison, obtained_path=obtained, **common)


def _hardware_summary(record: dict, env: dict | None, key: str) -> dict:
    """What the key stands for, written once at the top of the file (documentation, not compared)."""
    env = env or {}
    device = record.get("device") or {}
    if is_portable_key(key):
        from sdsuite.measure.calibration import WORKLOAD

        return {
            "device_type": device.get("type"),
            "torch_threads": env.get("torch_threads"),
            "calibration_workload": WORKLOAD,
        }
    if device.get("type") == "cuda":
        gpus = [g for g in ((env.get("cuda") or {}).get("gpus") or []) if g.get("name") == device.get("name")]
        return {"gpu": device.get("name"), "gpu_memory_bytes": gpus[0].get("memory_bytes") if gpus else None}
    return {"cpu_model": (env.get("cpu") or {}).get("model"), "torch_threads": env.get("torch_threads")}


__all__ = ["GateConfig", "GateResult", "Status", "UpdateMode", "gate_record"]


def portable_hint(other_keys) -> str:
    """Where the other keys include portable ones: how to gate on them (any CPU can)."""
    from sdsuite.baselines.keys import is_portable_key

    portable = [k for k in other_keys if is_portable_key(k)]
    if not portable:
        return ""
    return (
        f"; the portable baselines ({', '.join(portable)}) gate any CPU: add --baseline-key portable "
        "--benchmark-timer time.process_time --sdsuite-threads 1, without -n (as .ci/gate does)"
    )
