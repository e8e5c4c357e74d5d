"""pytest plugin: options, strict markers, GPU gating, cached pipelines and measured-case fixtures.

Registered as a pytest11 entry point (usable from any project once sdsuite is installed) and
activated in this repository through conftest.py. All measuring happens in sdsuite.measure.runner, the
same engine the CLI uses.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from sdsuite.core.errors import UsageError
from sdsuite.core.metrics import metric_center
from sdsuite.gpu.clocks import ClockControlNotAllowed, ClockLock, ClockPermissionError, clock_control_allowed
from sdsuite.measure.hardware import device_gpu_class
from sdsuite.measure.runner import CaseRun, measure_case
from sdsuite.pipelines.cache import PIPELINES
from sdsuite.pipelines.registry import SCHEDULERS
from sdsuite.plugin.session import CONFIG_KEY, SdsuiteConfig, build_session
from sdsuite.spec.case import Case
from sdsuite.spec.flags import add_pytest_options
from sdsuite.store.results import ResultsDir

GPU_CLASS_MARKERS = ("v100", "a100", "h100")
MARKERS = {
    "quick": "fast benchmark on the embedded tiny models (CPU, seconds)",
    "full": "the wider grid: all schedulers, more precisions, real variants",
    "gpu": "needs a CUDA GPU; skipped with the reason on other hardware",
    "v100": "runs only on an NVIDIA V100",
    "a100": "runs only on an NVIDIA A100",
    "h100": "runs only on an NVIDIA H100",
    "slow": "starts processes or runs the tiny pipelines end to end for seconds (`-m quick` leaves it out)",
}


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Offer ``pytest_sdsuite_record`` to other plugins."""
    from sdsuite.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """sdsuite options (repeat a flag or give a comma list to make a grid), declared with the CLI's in
    sdsuite.spec.flags."""
    add_pytest_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Register markers; validate the sdsuite options once (bad input: one clear usage error)."""
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    from sdsuite.launch.xdist import apply_worker_gpu

    apply_worker_gpu(getattr(config, "workerinput", {}))  # one GPU per xdist worker, before torch initialises CUDA
    config.stash[CONFIG_KEY] = build_session(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Release the telemetry device (clock locks are restored by their own context managers)."""
    cfg = config.stash.get(CONFIG_KEY, None)
    if cfg is not None and cfg.telemetry is not None:
        cfg.telemetry.close()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Under pytest-xdist (controller only) after benchmarks ran: say how they were measured."""
    if (
        getattr(config, "workerinput", None) is not None
        or config.getoption("dist", "no") == "no"
        or not benchmark_disabled(config)
    ):
        return
    cfg = config.stash.get(CONFIG_KEY, None)
    if cfg is None:
        return
    path = Path(cfg.out) / "results.jsonl"
    try:
        n = (
            sum(1 for line in path.read_text().splitlines() if f'"run_id": "{cfg.run_id}"' in line)
            if path.is_file()
            else 0
        )
    except OSError:
        n = 0
    if n:
        terminalreporter.write_line(
            f"sdsuite: pytest-benchmark is off under pytest-xdist; the {n} benchmark case(s) were measured with "
            f"sdsuite's own timing (every run, records in {path}); run without -n for pytest-benchmark's table "
            "and --benchmark-json, and for timings no other worker disturbs."
        )


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller: every worker writes its records under the same run id."""
    cfg = node.config.stash[CONFIG_KEY]
    node.workerinput["sdsuite_run_id"] = cfg.run_id
    from sdsuite.launch.xdist import assign_worker_gpu, visible_gpus

    simulated = cfg.telemetry is not None and cfg.telemetry.simulated
    if cfg.device.type == "cuda" or simulated:  # CPU runs keep the machine's GPUs untouched
        assign_worker_gpu(node.workerinput, node.gateway.id, visible_gpus(simulated))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parameterize tests that take ``sd_case`` over the selected grid; ids are the readable case ids."""
    if "sd_case" not in metafunc.fixturenames:
        return
    cfg = metafunc.config.stash[CONFIG_KEY]
    params = [pytest.param(c, id=c.param_id, marks=[getattr(pytest.mark, m) for m in marks]) for c, marks in cfg.cases]
    metafunc.parametrize("sd_case", params)


def _skip_reason(item: pytest.Item, cfg: SdsuiteConfig) -> str | None:
    classes = [m for m in GPU_CLASS_MARKERS if item.get_closest_marker(m)]
    needs_gpu = item.get_closest_marker("gpu") is not None or bool(classes)
    if not needs_gpu:
        return None
    sim = cfg.telemetry.telemetry if cfg.telemetry is not None and cfg.telemetry.simulated else None
    if classes and sim is not None and item.get_closest_marker("gpu") is None:
        # On the simulated device a GPU-class test runs against the simulated class (dry runs of DVFS logic).
        have = sim.info().gpu_class
        if have not in classes:
            return (
                f"needs a {'/'.join(c.upper() for c in classes)} GPU; "
                f"this one is the simulated {sim.info().name} (class {have})"
            )
        return None
    if cfg.device.type != "cuda":
        why = "torch sees no CUDA GPU" if not torch.cuda.is_available() else f"--device is {cfg.device}"
        return f"needs a CUDA GPU: {why} (torch {torch.__version__}); run it on a GPU host, e.g. `nox -s gpu`"
    if classes:
        have = device_gpu_class(cfg.device)
        if have not in classes:
            return (
                f"needs a {'/'.join(c.upper() for c in classes)} GPU; "
                f"this one is {torch.cuda.get_device_name(cfg.device)} (class {have})"
            )
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip GPU and GPU-class tests with a clear reason on other hardware."""
    reason = _skip_reason(item, item.config.stash[CONFIG_KEY])
    if reason:
        pytest.skip(reason)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    """--benchmark-json: a case parameter as its case id and fields (not ``UNSERIALIZABLE[Case(...)]``)."""
    for bench in output_json.get("benchmarks", []):
        params = bench.get("params") or {}
        for key, value in list(params.items()):
            if isinstance(value, Case):  # json.dump would write it as UNSERIALIZABLE[Case(...)]
                params[key] = (bench.get("extra_info") or {}).get("case_id") or value.case_id


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Put the GPU (or its absence) into pytest-benchmark's machine id."""
    from sdsuite.measure.envinfo import gpu_info

    cfg = config.stash[CONFIG_KEY]
    machine_info["sdsuite_device"] = str(cfg.device)
    machine_info["gpus"] = gpu_info()


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sdsuite_config(request: pytest.FixtureRequest) -> SdsuiteConfig:
    """The sdsuite options of this session."""
    return request.config.stash[CONFIG_KEY]


@pytest.fixture(scope="session")
def sdsuite_device(sdsuite_config: SdsuiteConfig) -> torch.device:
    """The torch device benchmarks run on."""
    return sdsuite_config.device


@pytest.fixture(scope="session")
def sd_pipeline(sdsuite_config: SdsuiteConfig):
    """Factory for cached pipelines: ``sd_pipeline("tiny-sd", "fp32")`` -> LoadedPipeline (loads lazily)."""

    def get(variant: str = "tiny-sd", precision: str = "fp32", weights: str | None = None):
        return PIPELINES.get(variant, weights or sdsuite_config.weights, precision, sdsuite_config.device)

    yield get
    PIPELINES.release()


@pytest.fixture(scope="session")
def sdsuite_results(sdsuite_config: SdsuiteConfig) -> ResultsDir:
    """The results directory benchmark records are appended to (run.json written once per process)."""
    return sdsuite_config.results()


@contextlib.contextmanager
def _frequency_point(cfg: SdsuiteConfig, case: Case):
    """Lock the case's frequency and power limit for the block and restore after; skip when they may not be
    changed."""
    from sdsuite.gpu.clocks import ClockSession

    session = cfg.telemetry.clock_session() if cfg.telemetry is not None else ClockSession(None)
    with session:
        try:
            point = session.point(case.freq_mhz, case.power_limit_w, case.mem_freq_mhz)
        except (ClockControlNotAllowed, ClockPermissionError) as exc:
            pytest.skip(str(exc))
        yield point


@pytest.fixture(scope="session")
def sd_telemetry(sdsuite_config: SdsuiteConfig):
    """The session's telemetry device (NVML or simulated); skips the test when there is none."""
    setup = sdsuite_config.telemetry
    if setup is None or setup.telemetry is None:
        pytest.skip("no GPU telemetry: run on a GPU with NVML (--telemetry nvml), or use --telemetry sim for a dry run")
    return setup.telemetry


@pytest.fixture
def sd_clock_lock(sdsuite_config: SdsuiteConfig):
    """Factory of clock locks: ``with sd_clock_lock(1410) as lock: lock.readback.observed_sm_mhz``.

    Skips the test with the remedy when clock control is not opted in, not permitted or there is no
    telemetry; an unsupported clock fails it naming the nearest ones. Every lock is restored.
    """
    held: list[ClockLock] = []

    @contextlib.contextmanager
    def lock(freq_mhz: int, mem_mhz: int | None = None):
        setup = sdsuite_config.telemetry
        if setup is None or setup.telemetry is None:
            pytest.skip(
                "clock locking needs GPU telemetry: run on a GPU with --telemetry nvml, "
                "or use --telemetry sim for a dry run"
            )
        lk = ClockLock(
            setup.telemetry,
            freq_mhz,
            mem_mhz=mem_mhz,
            allowed=clock_control_allowed(setup.options.allow_clock_control),
            settle_s=setup.options.settle_s,
        )
        try:
            lk.__enter__()
        except (ClockControlNotAllowed, ClockPermissionError) as exc:
            pytest.skip(str(exc))
        except UsageError as exc:
            pytest.fail(str(exc), pytrace=False)
        held.append(lk)
        try:
            yield lk
        finally:
            lk.restore()

    yield lock
    for lk in held:
        lk.restore()


def _outcome(record: dict) -> None:
    if record["status"] == "skipped":
        pytest.skip(record["reason"])
    if record["status"] == "failed":
        pytest.fail(f"{record['case_id']}: {record['reason']}", pytrace=False)


@pytest.fixture
def sd_run_case(request: pytest.FixtureRequest, sdsuite_config: SdsuiteConfig, sdsuite_results: ResultsDir):
    """Factory: measure a case with the session's options, append its record, return it."""

    def run(case: Case, **overrides) -> dict:
        ctx = sdsuite_config.context(sdsuite_results.env_fingerprint, **overrides)
        with _frequency_point(sdsuite_config, case) as point:
            rec = measure_case(case, ctx)
            point.annotate(rec)
        sdsuite_results.append(rec)
        request.config.hook.pytest_sdsuite_record(record=rec, item=request.node, config=request.config)
        return rec

    return run


def benchmark_disabled(config: pytest.Config) -> bool:
    """True where pytest-benchmark does not measure: under pytest-xdist (it switches itself off there), with
    --benchmark-disable, or when it is not installed."""
    session = getattr(config, "_benchmarksession", None)
    return session is None or bool(getattr(session, "disabled", True))


class Unbenchmarked:
    """Stand-in for pytest-benchmark's fixture where it does not measure (see benchmark_disabled).

    The sdsuite benchmarks time every run themselves (synchronized, in the record), so they keep measuring: this
    runs ``pedantic``'s warm-up and rounds as asked, instead of the disabled fixture's single call. Nothing reaches
    pytest-benchmark's table or --benchmark-json here; requesting the real, disabled fixture would only print
    "Benchmark fixture was not used" for every test."""

    disabled = True

    def __init__(self) -> None:
        self.extra_info: dict = {}
        self.group: str | None = None

    def pedantic(self, target, args=(), kwargs=None, setup=None, rounds=1, warmup_rounds=0, iterations=1):
        result = None
        for _ in range(warmup_rounds + rounds):
            call_args, call_kwargs = setup() if setup else (args, kwargs or {})
            for _ in range(iterations):
                result = target(*call_args, **(call_kwargs or {}))
        return result

    def __call__(self, function, *args, **kwargs):
        return function(*args, **kwargs)


@pytest.fixture
def sd_pytest_benchmark(request: pytest.FixtureRequest):
    """pytest-benchmark's ``benchmark`` where it measures, else an Unbenchmarked stand-in (same pedantic/extra_info)."""
    if benchmark_disabled(request.config):
        return Unbenchmarked()
    return request.getfixturevalue("benchmark")


def case_family(case: Case) -> str:
    """pytest-benchmark group of a case: its variant and task (schedulers, precisions and options compare within)."""
    return case.variant + ("" if case.task in (None, "text-to-image") else f" {case.task}")


@pytest.fixture
def sd_benchmark(request: pytest.FixtureRequest, sdsuite_config: SdsuiteConfig, sdsuite_results: ResultsDir):
    """Factory: measure a case through pytest-benchmark's ``pedantic`` (our timing inside), append the
    record, copy the metric medians into ``extra_info`` (numbers, or null with the reason under ``unavailable``),
    group the benchmark by case family and fail/skip the test with the case's reason. Where pytest-benchmark is
    off (pytest-xdist) the case is measured all the same, by sdsuite's own timing, without requesting the fixture."""
    benchmark = request.getfixturevalue("sd_pytest_benchmark")

    def run(case: Case) -> dict:
        ctx = sdsuite_config.context(sdsuite_results.env_fingerprint)
        with _frequency_point(sdsuite_config, case) as point, CaseRun(case, ctx) as run:
            if run.ready:
                benchmark.group = benchmark.group or case_family(case)
                benchmark.pedantic(run.measure_once, rounds=ctx.options.runs, iterations=1, warmup_rounds=0)
        rec = point.annotate(run.record)
        sdsuite_results.append(rec)
        benchmark.extra_info["case_id"] = rec["case_id"]
        benchmark.extra_info["status"] = rec["status"]
        unavailable = {}
        for name, metric in (rec.get("metrics") or {}).items():
            value = metric_center(metric)
            benchmark.extra_info[name] = value  # a number, or None (JSON null)
            if value is None:
                unavailable[name] = metric.get("reason")
        if unavailable:
            benchmark.extra_info["unavailable"] = unavailable
        request.node.user_properties.append(("sdsuite_record_id", rec["record_id"]))
        _outcome(rec)
        request.config.hook.pytest_sdsuite_record(record=rec, item=request.node, config=request.config)
        return rec

    return run


__all__ = ["SCHEDULERS", "SdsuiteConfig"]
