"""pytest plugin: gate every benchmark record against its stored baseline (``--baselines DIR``).

Each benchmark test compares its own record (through the ``pytest_sdsuite_record`` hook of
sdsuite.plugin.hooks) and fails on its own with a table and the command that accepts the new
numbers; ``<name>.obtained.json`` is written beside the baseline. All decisions are made by
sdsuite.baselines.gate, the same code ``sdsuite compare`` runs. Off unless ``--baselines`` (or an
update flag) is given, so a plain ``pytest -n 2`` never gates noisy timings by accident.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sdsuite.baselines.entries import cpu_latency_samples
from sdsuite.baselines.gate import GateConfig, GateResult, Status, UpdateMode, gate_record
from sdsuite.baselines.gate_options import add_pytest_gate_options, gate_config, plugin_gate_getter
from sdsuite.baselines.render import text_table
from sdsuite.core.errors import SdsuiteError
from sdsuite.measure.calibration import Calibration, append_calibration, combine, measure_calibration

DEFAULT_DIR = "baselines"
USER_PROPERTY = "sdsuite_baseline"
BENCH_FIXTURES = ("sd_benchmark", "sd_run_case")


@dataclass
class BaselineGate:
    """The session's gate: configuration plus what is needed to print update commands."""

    cfg: GateConfig
    directory: str
    replay_args: list[str] = field(default_factory=list)

    @property
    def calibrates(self) -> bool:
        """Calibrated timings are part of the portable scope only."""
        return self.cfg.portable


GATE_KEY = pytest.StashKey[BaselineGate]()
CALIB_BEFORE = pytest.StashKey[Calibration]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Baseline options, grouped and prefixed (declared with the CLI's in sdsuite.baselines.gate_options)."""
    add_pytest_gate_options(parser)


def _replay_args(config: pytest.Config, directory: str) -> list[str]:
    """The options that select and measure the same case and gate it the same way."""
    opt = config.getoption
    args = ["--baselines", directory]
    if opt("baseline_key") != "auto":
        args += ["--baseline-key", opt("baseline_key")]
        if opt("benchmark_timer", None) and "process_time" in str(opt("benchmark_timer")):
            args += ["--benchmark-timer", "time.process_time"]  # the calibrated time needs per-run CPU time
    for name, flag in (
        ("variant", "--variant"),
        ("scheduler", "--scheduler"),
        ("precision", "--precision"),
        ("steps", "--steps"),
        ("resolution", "--resolution"),
    ):
        for v in opt(name, None) or []:
            args += [flag, str(v)]
    for name, flag, default in (("device", "--device", "auto"), ("weights", "--weights", "auto")):
        if opt(name, default) != default:
            args += [flag, str(opt(name))]
    if opt("full", False):
        args.append("--full")
    return args


def pytest_configure(config: pytest.Config) -> None:
    """Build the gate once (bad options: one usage error)."""
    opt = config.getoption
    update = (
        UpdateMode.ALL if opt("regen_baselines") else UpdateMode.FAILING if opt("update_baselines") else UpdateMode.NONE
    )
    directory = opt("baselines") or (DEFAULT_DIR if update is not UpdateMode.NONE else None)
    if directory is None:
        return
    root = Path(directory) if Path(directory).is_absolute() else Path(config.invocation_params.dir) / directory
    try:
        cfg = gate_config(
            plugin_gate_getter(config), root, update=update, missing=opt("baseline_missing"), write_obtained=True
        )
    except SdsuiteError as exc:
        raise pytest.UsageError(str(exc)) from None
    gate = BaselineGate(cfg, directory, _replay_args(config, directory))
    config.stash[GATE_KEY] = gate
    config.pluginmanager.register(GateReporter(gate), "sdsuite-baselines-reporter")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--baseline-gated-only``: keep only the tests whose records are gated."""
    if not config.getoption("baseline_gated_only"):
        return
    keep, drop = [], []
    for it in items:
        (keep if any(f in getattr(it, "fixturenames", ()) for f in BENCH_FIXTURES) else drop).append(it)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _sdsuite_session(config: pytest.Config):
    from sdsuite.plugin.session import CONFIG_KEY

    return config.stash.get(CONFIG_KEY, None)


def _calibration_device(config: pytest.Config):
    sd = _sdsuite_session(config)
    return sd.device if sd is not None else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Portable gate: time the calibration workload just before the benchmark (and again just after)."""
    gate = item.config.stash.get(GATE_KEY, None)
    device = _calibration_device(item.config)
    if (
        gate is not None
        and gate.calibrates
        and device is not None
        and device.type == "cpu"
        and any(f in getattr(item, "fixturenames", ()) for f in BENCH_FIXTURES)
    ):
        item.stash[CALIB_BEFORE] = measure_calibration(device)
    return (yield)


def _env_for(config: pytest.Config, record: dict) -> dict | None:
    """The run's environment as written to run.json (so pytest and ``sdsuite compare`` derive the same key)."""
    from sdsuite.store.results import ResultsDir

    sd = _sdsuite_session(config)
    if sd is not None:
        try:
            info = ResultsDir(sd.out).run_info() or {}
            env = (info.get("runs") or {}).get((record.get("env") or {}).get("run_id") or record.get("run_id"))
            if env:
                return env
        except SdsuiteError:
            pass
    from sdsuite.measure.envinfo import environment

    return environment()


def _cpu_samples(item: pytest.Item) -> list[float] | None:
    """Per-run CPU seconds, when pytest-benchmark timed the runs with ``--benchmark-timer time.process_time``.

    The runner records wall time only; pytest-benchmark wraps each measured run with its timer, so with
    the process-time timer its rounds are exactly the per-run CPU times the portable gate needs.
    """
    bench = getattr(item, "funcargs", {}).get("benchmark")
    request = getattr(item, "_request", None)
    from sdsuite.plugin.hooks import benchmark_disabled

    if (
        bench is None
        and request is not None
        and "sd_benchmark" in getattr(item, "fixturenames", ())
        and not benchmark_disabled(item.config)
    ):
        # sd_benchmark requests `benchmark` dynamically, so it is not in funcargs; this returns the cached instance.
        try:
            bench = request.getfixturevalue("benchmark")
        except Exception:  # pytest-benchmark absent or disabled: no CPU times, the gate says so
            bench = None
    meta = getattr(bench, "stats", None)
    if meta is None or getattr(meta, "options", {}).get("timer") is not time.process_time:
        return None
    data = list(getattr(getattr(meta, "stats", None), "data", []) or [])
    return data or None


def _calibration(item: pytest.Item, record: dict, cpu_samples: list[float] | None) -> Calibration | None:
    if record.get("calibration"):  # supplied by the caller (tests, or a runner that calibrates itself)
        return Calibration.from_dict(record["calibration"])
    device = _calibration_device(item.config)
    if device is None or device.type != "cpu":
        return None
    # Bracket the case: windows just before and just after it, so a load change during the case hits both sides.
    parts = [item.stash[CALIB_BEFORE]] if CALIB_BEFORE in item.stash else []
    parts.append(measure_calibration(device))
    calib = combine(*parts)
    sd = _sdsuite_session(item.config)
    if sd is not None and record.get("record_id"):
        append_calibration(sd.out, record["record_id"], calib, cpu_samples)
    return calib


def _update_command(gate: BaselineGate, item: pytest.Item) -> str:
    return " ".join(shlex.quote(a) for a in ["pytest", item.nodeid, *gate.replay_args, "--update-baselines"])


def _file_name(item: pytest.Item) -> str:
    return getattr(item, "originalname", None) or item.name.split("[")[0]


@pytest.hookimpl(optionalhook=True)
def pytest_sdsuite_record(record: dict, item: pytest.Item, config: pytest.Config) -> None:
    """Compare ``record`` with its baseline; fail, skip or pass this test on its own."""
    gate = config.stash.get(GATE_KEY, None)
    if gate is None or record.get("status") != "ok":
        return
    try:
        cpu = _cpu_samples(item) if gate.calibrates else None
        device = _calibration_device(config)
        if gate.calibrates and device is not None and device.type == "cpu" and cpu_latency_samples(record, cpu) is None:
            pytest.fail(
                "sdsuite baseline: the portable gate on the CPU needs per-run CPU time; "
                "add --benchmark-timer time.process_time "
                "and run without -n (pytest-benchmark times each run with it), as .ci/gate does.",
                pytrace=False,
            )
        calib = _calibration(item, record, cpu) if gate.calibrates else None
        result = gate_record(
            record, _env_for(config, record), gate.cfg, file_name=_file_name(item), calibration=calib, cpu_samples=cpu
        )
    except SdsuiteError as exc:
        pytest.fail(f"sdsuite baseline: {exc}", pytrace=False)
    item.user_properties.append((USER_PROPERTY, _summary(result)))
    if result.status is Status.OTHER_KEY:
        pytest.skip(f"{result.reason()}. To create one for this hardware: {_update_command(gate, item)}")
    if result.status is Status.MISSING:
        msg = (
            f"{result.reason()}.\nObtained values: {result.obtained_path}\n"
            f"Create it with:\n  {_update_command(gate, item)}\n"
            "(or pass --baseline-missing=skip to skip cases without a baseline)"
        )
        if result.missing_policy == "skip":
            pytest.skip(result.reason())
        pytest.fail(msg, pytrace=False)
    if result.failed:
        pytest.fail(_failure_message(result, gate, item), pytrace=False)


def _failure_message(result: GateResult, gate: BaselineGate, item: pytest.Item) -> str:
    comp = result.comparison
    assert comp is not None
    bad = [r.metric for r in comp.rows if r.verdict.failed]
    return (
        f"{result.case_id} does not match its baseline ({', '.join(bad)}) under hardware key {result.hardware_key}\n"
        f"baseline: {comp.baseline_file}\n\n{text_table(comp)}\n\n"
        f"obtained values: {result.obtained_path}\n"
        f"if the change is intended, accept it with:\n  {_update_command(gate, item)}"
    )


def _summary(result: GateResult) -> dict:
    comp = result.comparison
    return {
        "case_id": result.case_id,
        "key": result.hardware_key,
        "status": result.status.value,
        "file": str(result.baseline_path) if result.baseline_path else None,
        "failed": result.failed,
        "other_keys": list(result.other_keys),
        "improvements": [
            f"{r.metric} {r.delta_rel * 100:+.1f}%: {r.note}"
            for r in (comp.improvements if comp else [])
            if r.delta_rel is not None
        ],
        "noise": [r.metric for r in (comp.rows if comp else []) if r.verdict.value == "within noise"],
    }


class GateReporter:
    """Collects gate summaries from test reports (xdist workers' too: user_properties travel with the
    report to the controller) and prints them at the end of the session."""

    def __init__(self, gate: BaselineGate):
        self.gate = gate
        self.collected: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep the summary a gated test attached to its report."""
        if report.when != "call":
            return
        for name, value in getattr(report, "user_properties", ()):
            if name == USER_PROPERTY and isinstance(value, dict):
                self.collected.append(value)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        """Improvements ("faster than baseline: consider updating"), created and updated entries."""
        if not self.collected:
            return
        tr = terminalreporter
        tr.section("sdsuite baselines")
        by_status: dict[str, int] = {}
        for s in self.collected:
            by_status[s["status"]] = by_status.get(s["status"], 0) + 1
        counts = ", ".join(f"{n} {k}" for k, n in sorted(by_status.items()))
        cases = len({s["case_id"] for s in self.collected})
        # `sdsuite compare` (the gate's summary) compares the latest record of each case: say how many cases these are
        distinct = (
            f" of {cases} case(s) (a case measured by two tests is gated twice, compared once)"
            if cases != len(self.collected)
            else ""
        )
        tr.write_line(f"{len(self.collected)} record(s){distinct} against {self.gate.directory}: {counts}")
        if set(by_status) == {Status.OTHER_KEY.value}:
            from sdsuite.baselines.gate import portable_hint

            others = sorted({k for s in self.collected for k in s.get("other_keys") or ()})
            tr.write_line(f"nothing was gated: no baseline for this hardware{portable_hint(others) or ''}")
        for s in sorted(self.collected, key=lambda s: s["case_id"]):
            if s["status"] in (Status.CREATED.value, Status.UPDATED.value):
                tr.write_line(f"  {s['status']}: {s['case_id']} in {s['file']}")
            for imp in s["improvements"]:
                tr.write_line(f"  improvement: {s['case_id']}: {imp}")
            if s["noise"]:
                tr.write_line(
                    f"  within noise (beyond tolerance, not significant): {s['case_id']}: {', '.join(s['noise'])}"
                )


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Add the sdsuite hardware key to pytest-benchmark's machine id (the GPU itself is added by
    sdsuite.plugin.hooks)."""
    from sdsuite.baselines.keys import hardware_key
    from sdsuite.measure.envinfo import environment

    sd = _sdsuite_session(config)
    if sd is None:
        return
    import torch

    dev = sd.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    machine_info["sdsuite_hardware_key"] = hardware_key({"device": {"type": dev.type, "name": name}}, environment())
