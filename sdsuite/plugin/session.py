"""The pytest plugin's session state: the command line, device, telemetry, cases and results directory.

Built once per process by ``build_session`` (from sdsuite.plugin.hooks' ``pytest_configure``) and kept in the
config's stash under ``CONFIG_KEY``; the hooks and fixtures read it from there. The case grid comes from
sdsuite.spec.grid, the one builder the CLI uses too.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from sdsuite.core.errors import SdsuiteError, UsageError
from sdsuite.measure.context import RunContext, RunOptions, new_run_id
from sdsuite.measure.hardware import apply_threads, resolve_device
from sdsuite.pipelines.build import validate_weights
from sdsuite.pipelines.registry import VARIANTS
from sdsuite.spec.case import Case
from sdsuite.spec.flags import pytest_flag_name, pytest_getter
from sdsuite.spec.grid import QUICK_DIT_SCHEDULERS, QUICK_SCHEDULERS, build_grids, expand_grids
from sdsuite.store.results import ResultsDir


@dataclass
class SdsuiteConfig:
    """The plugin's view of the command line, built once per session."""

    device: torch.device
    device_explicit: bool
    weights: str
    runs: int
    warmup: int
    out: str
    full: bool
    explicit_grid: bool
    cases: list[tuple[Case, tuple[str, ...]]] = field(default_factory=list)
    run_id: str = ""
    telemetry: Any = None  # sdsuite.gpu.telemetry.TelemetrySetup: device, energy meter, frequency axis
    min_energy_window_s: float = 1.0
    trace_dir: str | None = None  # --sdsuite-trace: torch.profiler trace per case
    fidelity: str = "auto"  # comparison with the reference optimization set (sdsuite.quality.effects.FIDELITY_MODES)
    _results: ResultsDir | None = field(default=None, repr=False)

    def options(self) -> RunOptions:
        """RunOptions for this session."""
        return RunOptions(
            runs=self.runs,
            warmup=self.warmup,
            device=str(self.device),
            weights=self.weights,
            min_energy_window_s=self.min_energy_window_s,
            trace_dir=self.trace_dir,
            fidelity=self.fidelity,
        )

    def results(self) -> ResultsDir:
        """The results directory of this process, its run.json entry written on first use."""
        if self._results is None:
            from sdsuite.measure.envinfo import environment

            results = ResultsDir(self.out)
            env = environment()
            env["device"] = str(self.device)
            env["pytest_worker"] = os.environ.get("PYTEST_XDIST_WORKER")
            results.write_run_info(self.run_id, env)
            results.env_fingerprint = env["fingerprint"]
            self._results = results
        return self._results

    def context(self, env_fingerprint: str | None = None, **overrides) -> RunContext:
        """The RunContext of this session's cases (``overrides``: RunOptions fields of one test)."""
        meter = self.telemetry.meter if self.telemetry is not None else None
        return RunContext(self.options(), self.device, self.run_id, env_fingerprint, meter).with_options(**overrides)


CONFIG_KEY = pytest.StashKey[SdsuiteConfig]()


def _marks_for(case: Case, cfg_device: torch.device, device_explicit: bool) -> tuple[str, ...]:
    spec = VARIANTS[case.variant]
    if spec.embedded:
        samplers = QUICK_DIT_SCHEDULERS if spec.is_dit else QUICK_SCHEDULERS
        quick = (
            case.precision == "fp32" and case.scheduler in samplers and not case.freq_mhz and case.power_limit_w is None
        )
        if case.options.compile_mode:  # compiling takes minutes on a CPU
            return ("full", "slow")
        return ("quick",) if quick else ("full",)
    marks = ["full", "slow"]
    if not (device_explicit and cfg_device.type == "cpu"):
        marks.append("gpu")
    return tuple(marks)


def _build_cases(config: pytest.Config, device: torch.device, device_explicit: bool) -> tuple[list, bool]:
    """The session's cases with their marks (the grid of sdsuite.spec.grid.build_grids, as the CLI builds it)."""
    grids, explicit = build_grids(pytest_getter(config), suite=True)
    return [(c, _marks_for(c, device, device_explicit)) for c in expand_grids(grids)], explicit


def build_session(config: pytest.Config) -> SdsuiteConfig:
    """Validate the sdsuite options once (bad input: one clear usage error) and open the session's devices."""
    try:
        device = resolve_device(config.getoption("device"))
        validate_weights(config.getoption("weights"))
        runs, warmup = config.getoption("sdsuite_runs"), config.getoption("sdsuite_warmup")
        if runs < 1 or warmup < 0:
            raise pytest.UsageError(f"--sdsuite-runs must be >= 1 and --sdsuite-warmup >= 0 (got {runs}, {warmup}).")
        device_explicit = config.getoption("device") != "auto"
        cases, explicit = _build_cases(config, device, device_explicit)
        telemetry = _open_telemetry(config, device)
        if (telemetry.freqs_mhz, telemetry.power_limits_w, telemetry.mem_freqs_mhz) != ((None,), (None,), (None,)):
            # memory clock, frequency, then power limit, are the last axes of every grid
            cases = [
                (fc, _marks_for(fc, device, device_explicit))
                for c, _ in cases
                for fc in (
                    dataclasses.replace(c, freq_mhz=f, power_limit_w=pl, mem_freq_mhz=m)
                    for m in telemetry.mem_freqs_mhz
                    for f in telemetry.freqs_mhz
                    for pl in telemetry.power_limits_w
                )
            ]
    except SdsuiteError as exc:
        raise pytest.UsageError(str(exc)) from None
    workerinput = getattr(config, "workerinput", {})
    if workerinput and device.type == "cpu":
        # N xdist workers each running torch's default (one thread per core) oversubscribe the CPU and
        # busy-waiting OpenMP threads slow every worker down several-fold: split the cores instead.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workerinput.get("workercount", 1))))
    try:
        apply_threads(config.getoption("sdsuite_threads"), "--sdsuite-threads")  # an explicit count wins
    except SdsuiteError as exc:
        raise pytest.UsageError(str(exc)) from None
    run_id = workerinput.get("sdsuite_run_id") or new_run_id()
    return SdsuiteConfig(
        device=device,
        device_explicit=device_explicit,
        weights=config.getoption("weights"),
        runs=runs,
        warmup=warmup,
        out=config.getoption("sdsuite_out"),
        full=config.getoption("full"),
        explicit_grid=explicit,
        cases=cases,
        run_id=run_id,
        telemetry=telemetry,
        min_energy_window_s=config.getoption("sdsuite_min_energy_window"),
        trace_dir=config.getoption("sdsuite_trace"),
        fidelity=config.getoption("sdsuite_fidelity"),
    )


def _open_telemetry(config: pytest.Config, device: torch.device):
    """Open the telemetry device and resolve --freq (the opt-in is checked per test: it skips)."""
    from sdsuite.gpu.telemetry import open_setup, telemetry_options_from

    options = telemetry_options_from(pytest_getter(config), pytest_flag_name)
    setup = open_setup(options, device.type, device.index or 0, check_opt_in=False)
    from sdsuite.launch.xdist import visible_gpus, workers_share_gpus

    # Workers were checked by the controller and each sees its own GPU; the controller checks -n against the GPU count.
    n_workers = getattr(config.option, "numprocesses", None)
    if (
        setup.freq_spec.locks
        and not setup.simulated
        and n_workers
        and not hasattr(config, "workerinput")
        and workers_share_gpus(n_workers, visible_gpus(False))
    ):
        setup.close()
        raise UsageError(
            f"locking the clocks of a real GPU from {n_workers} pytest-xdist workers with {visible_gpus(False)} GPU(s) "
            "puts two workers on one GPU; use -n <= the GPU count."
        )
    return setup
