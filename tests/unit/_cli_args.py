"""Argument lists the CLI tests share (tests/unit is on sys.path: ``from _cli_args import ...``).

The quickest sweep and run on the simulated device: one step, one measured run, 0.1 s energy windows (a generation
is repeated in real time until its window lasts --min-energy-window, 1 s by default), no FLOP count, no profiling
spans, no progress bar (and for a sweep no images, no report)."""

from __future__ import annotations

# ``sdsuite sweep`` on the simulated A100, allowed to lock its clocks; add --freq and --out.
SIM_SWEEP = ("sweep", "--telemetry", "sim", "--gpu-model", "a100", "--allow-clock-control")
FAST_SWEEP = (
    "--steps", "1", "--runs", "1", "--min-energy-window", "0.1", "--no-flops", "--no-spans", "--no-progress",
    "--save-images", "none", "--no-report",
)  # fmt: skip
# ``sdsuite run`` on the simulated device, no warm-up; add --out.
FAST_RUN = (
    "run", "--telemetry", "sim", "--runs", "1", "--warmup", "0", "--steps", "1", "--min-energy-window", "0.1",
    "--no-flops", "--no-spans", "--no-progress",
)  # fmt: skip
