"""Peak memory of a window: CUDA allocator peak on a GPU, peak resident set size of the process on the CPU."""

from __future__ import annotations

from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _read_status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemoryMeter:
    """``reset()`` before a window, ``peak()`` after it; ``kind`` says what was measured."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss"
        self.note: str | None = None

    def reset(self) -> None:
        """Start a new peak window."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            # Writing 5 resets the kernel's peak-RSS watermark (VmHWM) for this process (Linux >= 4.0).
            _CLEAR_REFS.write_text("5")
            self.note = None
        except OSError:
            self.note = "peak RSS could not be reset: value is the process lifetime peak"

    def peak(self) -> int | None:
        """Peak bytes in the window, or None when the platform does not expose it."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        kb = _read_status_kb("VmHWM")
        return None if kb is None else kb * 1024
