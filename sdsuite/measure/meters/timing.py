"""Device-synchronized timeline of a measured window.

On CUDA, intermediate marks are CUDA events (no host sync inside the window, so timing does not
distort what it measures); the window itself is bracketed by synchronizations. On the CPU, marks
are ``time.perf_counter`` readings.
"""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - no Apple hardware here
        torch.mps.synchronize()


class Timeline:
    """Marks named points of one window; ``stop`` resolves them to seconds since ``start``."""

    def __init__(self, device: torch.device):
        self.device = device
        self._cuda = device.type == "cuda"
        self._marks: list[tuple[str, object]] = []
        self._t0 = 0.0
        self._ev0 = None
        self.wall_s = float("nan")

    def start(self) -> None:
        """Synchronize, then start the window."""
        self._marks.clear()
        synchronize(self.device)
        if self._cuda:
            self._ev0 = torch.cuda.Event(enable_timing=True)
            self._ev0.record()
        self._t0 = time.perf_counter()

    def mark(self, name: str) -> None:
        """Record a point in the window without synchronizing."""
        if self._cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self._marks.append((name, ev))
        else:
            self._marks.append((name, time.perf_counter()))

    def stop(self) -> float:
        """Synchronize, close the window and return its wall time in seconds."""
        synchronize(self.device)
        self.wall_s = time.perf_counter() - self._t0
        return self.wall_s

    def marks(self) -> list[tuple[str, float]]:
        """(name, seconds since start) for every mark, in order; call after ``stop``."""
        if self._cuda:
            return [(n, self._ev0.elapsed_time(ev) / 1e3) for n, ev in self._marks]
        return [(n, t - self._t0) for n, t in self._marks]
