"""The baseline-gate options, declared once for ``sdsuite compare``/``sdsuite baseline update`` (argparse)
and the pytest plugin (``--baselines``, sdsuite.plugin.baseline_hooks).

Each entry names the option by a key, its spelling on each side (pytest prefixes the generic names with
``--baseline-``; ``None``: that side does not have it), the keywords both share and the ones that differ.
``gate_config`` builds the GateConfig from either side through ``get(key)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdsuite.baselines.baseline_store import BaselineStore
from sdsuite.baselines.compare import SIGNIFICANCE_METHODS, Significance
from sdsuite.baselines.gate import MISSING_POLICIES, GateConfig, UpdateMode
from sdsuite.baselines.keys import SCOPES
from sdsuite.baselines.tolerance import ToleranceRules, layer_from_cli, load_tolerances_file

PYTEST_GROUP = ("sdsuite-baselines", "sdsuite baseline gating (see docs/baselines.md)")


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class GateOption:
    """One gate option; ``cli``/``pytest`` are its spellings (None: that front end does not have it)."""

    key: str
    cli: str | None
    pytest: str | None
    help: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # the same on both sides
    cli_overrides: Mapping[str, Any] = field(default_factory=dict)
    pytest_overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cli_dest(self) -> str:
        return _dest(self.cli or "")

    @property
    def pytest_dest(self) -> str:
        return _dest(self.pytest or "")

    def cli_kwargs(self) -> dict[str, Any]:
        return {"help": self.help, **self.kwargs, **self.cli_overrides}

    def pytest_kwargs(self) -> dict[str, Any]:
        return {"help": self.help, **self.kwargs, **self.pytest_overrides}


def table() -> tuple[GateOption, ...]:
    """Every gate option, in ``--help`` order (a fresh table per parser: list defaults are not shared)."""
    switch = {"action": "store_true", "default": False}
    return (
        GateOption(
            "baselines",
            "--baselines",
            "--baselines",
            "compare each benchmark record with its entry under DIR/<hardware-key>/ (off when absent)",
            {"metavar": "DIR"},
            cli_overrides={"required": True, "help": "baseline store: DIR/<hardware-key>/*.json"},
            pytest_overrides={"default": None},
        ),
        GateOption(
            "key",
            "--hardware-key",
            "--baseline-key",
            "auto: this exact hardware, all metrics (default); "
            "portable: machine-independent metrics and calibrated timings",
            {"choices": SCOPES, "default": "auto"},
            cli_overrides={
                "help": "auto: the exact hardware of each record, all metrics (default); "
                "portable: machine-independent metrics"
            },
        ),
        GateOption(
            "run",
            "--run",
            None,
            "only records of this run (default: the latest record of each case)",
            {"metavar": "RUN_ID", "default": None},
        ),
        GateOption(
            "update", None, "--update-baselines", "rewrite failing and missing baseline entries of this run", switch
        ),
        GateOption("regen", None, "--regen-baselines", "rewrite every baseline entry of this run", switch),
        GateOption(
            "missing",
            "--missing",
            "--baseline-missing",
            "a case without a baseline fails (default) or skips",
            {"choices": MISSING_POLICIES, "default": "fail"},
            cli_overrides={"help": "a case without a baseline fails (default) or is skipped"},
        ),
        GateOption(
            "tolerance",
            "--tolerance",
            "--baseline-tolerance",
            "override a tolerance, e.g. latency_s=7.5%% or 'latency_*=rtol=10%%,atol=0.001' (repeatable)",
            {"action": "append", "default": [], "metavar": "METRIC=SPEC"},
            cli_overrides={
                "help": "override a tolerance, e.g. latency_s=7.5%% or 'image_*=atol=1e-5' "
                "(repeatable; beats the files)"
            },
        ),
        GateOption(
            "tolerances",
            "--tolerances",
            "--baseline-tolerances",
            "tolerances file (JSON: metrics and per-case overrides)",
            {"metavar": "FILE", "default": None},
            cli_overrides={"help": "tolerances file (JSON; see docs/baselines.md)"},
        ),
        GateOption(
            "significance",
            "--significance",
            "--baseline-significance",
            "test confirming a beyond-tolerance change: auto (Mann-Whitney U if scipy, else bootstrap), "
            "mannwhitney, bootstrap, none",
            {"choices": SIGNIFICANCE_METHODS, "default": "auto"},
            cli_overrides={
                "help": "confirm beyond-tolerance changes with Mann-Whitney U (auto, needs scipy), "
                "a bootstrap, or not at all"
            },
        ),
        GateOption(
            "alpha",
            "--alpha",
            "--baseline-alpha",
            "significance level (default 0.01)",
            {"type": float, "default": 0.01},
        ),
        GateOption(
            "min_samples",
            "--min-samples",
            "--baseline-min-samples",
            "samples each side needs before significance is tested (default 5)",
            {"type": int, "default": 5},
        ),
        GateOption(
            "gated_only",
            None,
            "--baseline-gated-only",
            "deselect tests that produce no sdsuite record (no sd_benchmark/sd_run_case): "
            "a gate run measures only what it gates",
            switch,
        ),
    )


def add_cli_gate_options(p, *, missing: bool = False) -> None:
    """The gate options of ``sdsuite compare`` (``missing=True``: with ``--missing``) and ``baseline update``."""
    options = [o for o in table() if o.cli is not None and o.key != "missing"]
    for o in options + ([o for o in table() if o.key == "missing"] if missing else []):  # --missing last
        p.add_argument(o.cli, dest=o.cli_dest, **o.cli_kwargs())


def add_pytest_gate_options(parser) -> None:
    """The gate options of the pytest plugin, in their own group of ``pytest --help``."""
    g = parser.getgroup(*PYTEST_GROUP)
    for o in table():
        if o.pytest is not None:
            g.addoption(o.pytest, dest=o.pytest_dest, **o.pytest_kwargs())


def cli_gate_getter(args) -> Callable[[str], Any]:
    """``get(key)`` over parsed ``sdsuite compare``/``baseline update`` flags."""
    by_key = {o.key: o for o in table()}
    return lambda key: getattr(args, by_key[key].cli_dest)


def plugin_gate_getter(config) -> Callable[[str], Any]:
    """``get(key)`` over the pytest plugin's options."""
    by_key = {o.key: o for o in table()}
    return lambda key: config.getoption(by_key[key].pytest_dest)


def gate_config(
    get: Callable[[str], Any],
    store: str | Path,
    *,
    update: UpdateMode,
    missing: str,
    write_obtained: bool = False,
) -> GateConfig:
    """The GateConfig of the store at ``store`` from the options read by ``get(key)`` (either front end)."""
    policy = load_tolerances_file(get("tolerances")) if get("tolerances") else ()
    return GateConfig(
        store=BaselineStore(store),
        scope=get("key"),
        rules=ToleranceRules(policy=policy, command_line=layer_from_cli(get("tolerance"))),
        significance=Significance(method=get("significance"), alpha=get("alpha"), min_samples=get("min_samples")),
        missing=missing,
        update=update,
        write_obtained=write_obtained,
    )
