"""The energy meter interface the runner wraps around every measured window.

The runner calls ``begin()`` right after synchronizing the device and ``end()`` right after the
next synchronization. A meter that cannot measure says so: every window then reports
``available: False`` with the reason, never an estimate.
"""

from __future__ import annotations

from typing import Any, Protocol


class EnergyMeter(Protocol):
    """Measures GPU energy over a window."""

    available: bool
    reason: str | None
    simulated: bool

    def begin(self) -> None:
        """Start a window (the device has just been synchronized)."""

    def end(self) -> dict[str, Any]:
        """Close the window: ``energy_j``, ``avg_power_w``, ... or ``available: False`` with ``reason``."""


class UnavailableEnergyMeter:
    """Energy cannot be measured here; every window says why."""

    available = False
    simulated = False

    def __init__(self, reason: str):
        self.reason = reason

    def begin(self) -> None:
        """Nothing to start."""

    def end(self) -> dict[str, Any]:
        """An unavailable window with its reason."""
        return {"available": False, "reason": self.reason}


def default_energy_meter(device_type: str) -> EnergyMeter:
    """The meter for a device when no telemetry backend is configured."""
    if device_type != "cuda":
        return UnavailableEnergyMeter(
            f"no GPU energy counter on device type {device_type!r} (CPU energy needs RAPL, absent on this machine)"
        )
    return UnavailableEnergyMeter("no telemetry backend selected: GPU energy needs NVML (nvidia-ml-py) telemetry")
