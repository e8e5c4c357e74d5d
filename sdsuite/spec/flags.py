"""The one table of the case, optimization and telemetry flags that ``sdsuite run``/``sdsuite sweep``
(argparse, through sdsuite.cli.args) and the pytest plugin (sdsuite.plugin.hooks) both read.

Each entry says once what a flag is: its name, where pytest spells it differently (generic names get
an ``--sdsuite-`` prefix there), action/type/default/choices/metavar/help, its group and which front
ends have it. Choices and defaults come from the constants of the modules that check them. Those
modules are imported when a parser is built (``table()``), not when this module is, and the two
adapters, ``add_argparse_flags`` and ``add_pytest_options``, turn the entries into arguments.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("table", "json")  # --format of sdsuite run/sweep


@dataclass(frozen=True)
class Group:
    """A group of flags: its argparse title (``sdsuite run --help``) and the pytest group it joins."""

    title: str
    pytest_group: str


# In the order of ``sdsuite run --help``.
GROUPS: dict[str, Group] = {
    "case": Group("case (repeat a flag or give a comma list to make a grid)", "sdsuite"),
    "measurement": Group("measurement", "sdsuite"),
    "optimizations": Group(
        "optimizations (comma lists make a grid; `sdsuite options` lists them and what runs here)",
        "sdsuite-optimizations",
    ),
    "task": Group("task and prompts", "sdsuite-optimizations"),
    "profiling": Group("profiling", "sdsuite-optimizations"),
    "telemetry": Group("GPU telemetry and clocks", "sdsuite-telemetry"),
}

# pytest group name -> its title in ``pytest --help``, in the order the groups are created.
PYTEST_GROUPS: dict[str, str] = {
    "sdsuite": "sdsuite Stable Diffusion benchmarks",
    "sdsuite-telemetry": "sdsuite GPU telemetry and clocks",
    "sdsuite-optimizations": "sdsuite optimization and task axes (comma lists make a grid)",
}


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Flag:
    """One flag of the table; ``pytest_overrides`` holds the argparse keywords that differ on the pytest side."""

    name: str  # the CLI's long option, e.g. "--variant"
    group: str  # key of GROUPS
    help: str
    action: str | None = None
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: tuple | None = None
    metavar: str | None = None
    nargs: str | None = None
    const: Any = None
    aliases: tuple[str, ...] = ()  # more CLI spellings of the same flag
    pytest_name: str | None = None  # pytest's spelling where it differs
    in_cli: bool = True
    in_pytest: bool = True
    pytest_overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        """Attribute of the argparse namespace (``args.<dest>``)."""
        return _dest(self.name)

    @property
    def pytest_option(self) -> str:
        return self.pytest_name or self.name

    @property
    def pytest_dest(self) -> str:
        """Name for ``config.getoption``."""
        return _dest(self.pytest_option)

    def kwargs(self, pytest: bool = False) -> dict[str, Any]:
        """``add_argument``/``addoption`` keywords; ``default`` is always given (pytest wants it explicit)."""
        kw = {
            "action": self.action,
            "type": self.type,
            "default": self.default,
            "choices": self.choices,
            "metavar": self.metavar,
            "nargs": self.nargs,
            "const": self.const,
            "help": self.help,
        }
        if pytest:
            kw.update(self.pytest_overrides)
        default = kw.pop("default")
        if default is None and kw["action"] == "store_true":
            default = False
        return {
            **{k: v for k, v in kw.items() if v is not None},
            "default": default,
            "dest": self.pytest_dest if pytest else self.dest,
        }


@functools.cache
def table() -> tuple[Flag, ...]:
    """Every flag, in ``--help`` order within its group."""
    from sdsuite.gpu.freqspec import DEFAULT_FLOOR_MHZ, MEM_SPEC_HELP, SPEC_HELP
    from sdsuite.gpu.powerspec import POWER_SPEC_HELP
    from sdsuite.gpu.sim import SIM_MODELS
    from sdsuite.gpu.telemetry import BACKENDS
    from sdsuite.gpu.telemetry_meter import ENERGY_SOURCES
    from sdsuite.pipelines.registry import DEFAULT_SCHEDULER
    from sdsuite.quality.effects import FIDELITY_MODES

    grid = {"action": "append"}  # repeat the flag or give a comma list
    switch = {"action": "store_true"}
    cli = {"in_pytest": False}
    pytest = {"in_cli": False}
    return (
        # case
        Flag(
            "--variant", "case", "model variant (default: tiny-sd); see `sdsuite list variants`",
            metavar="NAME", **grid,
            pytest_overrides={"help": "model variant (default: the embedded tiny models); see `sdsuite list variants`"},
        ),
        Flag(
            "--scheduler", "case", f"sampler (default: {DEFAULT_SCHEDULER} = the checkpoint's own)",
            metavar="NAME", **grid,
            pytest_overrides={
                "help": f"sampler (default: a quick set on the tiny models, else {DEFAULT_SCHEDULER} "
                "= the checkpoint's own)"
            },
        ),
        Flag(
            "--precision", "case", "fp32, fp16, bf16 (default: the variant's: bf16 for the real DiT ones, else fp32)",
            metavar="P", **grid,
        ),
        Flag("--steps", "case", "denoising steps (default: the variant's)", metavar="N", **grid),
        Flag("--resolution", "case", "image size, e.g. 512x512 (default: the variant's)", metavar="WxH", **grid),
        Flag("--batch-size", "case", "images per call (default: 1)", metavar="N", **grid, **cli),
        Flag("--seed", "case", "seed of the fixed latents (default: 0)", metavar="N", **grid, **cli),
        Flag("--prompt", "case", "prompt text", **cli),
        Flag("--negative-prompt", "case", "negative prompt text", **cli),
        Flag("--guidance-scale", "case", "classifier-free guidance (default: the variant's)", type=float, **cli),
        Flag("--full", "case", "add the full grid to the quick one", **switch, **pytest),
        # measurement
        Flag(
            "--runs", "measurement", "measured runs per case (default: 5)", type=int, default=5,
            pytest_name="--sdsuite-runs",
        ),
        Flag(
            "--warmup", "measurement", "warm-up runs per case, not measured (default: 1)", type=int, default=1,
            pytest_name="--sdsuite-warmup",
        ),
        Flag("--device", "measurement", "auto (default), cpu, cuda, cuda:<i>", default="auto"),
        Flag(
            "--threads", "measurement",
            "torch CPU threads (default: torch's, one per core; under pytest-xdist the cores split "
            "between workers); 1 gives steady CPU timings on a shared machine; "
            "recorded and part of a CPU baseline key (-1t)",
            type=int, metavar="N", pytest_name="--sdsuite-threads",
        ),
        Flag(
            "--weights", "measurement", "auto (local path / HF cache, offline), random (real architecture), or PATH",
            default="auto",
        ),
        Flag("--no-flops", "measurement", "skip the extra FLOP-counting generation", **switch, **cli),
        Flag(
            "--out", "measurement", "results directory (default: sdsuite-results)", default="sdsuite-results",
            pytest_name="--sdsuite-out",
            pytest_overrides={
                "default": "sdsuite-results/pytest",
                "help": "results directory for benchmark records (default: sdsuite-results/pytest)",
            },
        ),
        Flag("--format", "measurement", "output format (default: table)", choices=FORMATS, default="table", **cli),
        Flag("--no-progress", "measurement", "no progress bar", **switch, **cli),
        Flag(
            "--allow-large", "measurement",
            "lift the plan-time limits on steps, resolution, batch size and runs (or SDSUITE_ALLOW_LARGE=1)",
            **switch, **cli,
        ),
        # optimizations
        Flag(
            "--attention", "optimizations", "attention kernel: sdpa (default), eager, sliced, xformers",
            metavar="K", **grid,
        ),
        Flag(
            "--kv-cache", "optimizations", "cross-attention K/V cache computed once per generation",
            metavar="on|off", **grid,
        ),
        Flag("--vae-slicing", "optimizations", "decode one image at a time", **switch),
        Flag("--vae-tiling", "optimizations", "decode in tiles", **switch),
        Flag(
            "--drop-t5", "optimizations",
            "SD 3/3.5: build or load the pipeline without its T5-XXL encoder (CLIP-only prompts; fidelity with "
            "--compare-options)",
            **switch,
        ),
        Flag(
            "--offload", "optimizations", "CPU offload (needs a GPU): model, sequential, none", metavar="MODE", **grid,
        ),
        Flag(
            "--compile", "optimizations",
            "torch.compile the UNet or DiT: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs, none",
            nargs="?", const="default", metavar="MODE", **grid,
        ),
        Flag("--channels-last", "optimizations", "UNet and VAE in channels_last memory format", **switch),
        Flag("--fuse-qkv", "optimizations", "fused QKV projections (a separate cached pipeline)", **switch),
        Flag(
            "--quantize", "optimizations", "torchao: int8wo, int8dq, int4wo, fp8 (= fp8dq), fp8wo, none",
            metavar="Q", **grid,
        ),
        Flag(
            "--recipe", "optimizations", "baseline, memory-saver, fast, or a set like fast+attn=eager",
            metavar="SET", aliases=("--opt",), **grid,
        ),
        Flag(
            "--compare-options", "optimizations",
            "also run the reference set (baseline) and print every set's effect against it", **switch, **cli,
        ),
        Flag("--no-fidelity", "optimizations", "skip the output comparison with the reference set", **switch, **cli),
        Flag(
            "--sdsuite-fidelity", "optimizations",
            "compare outputs with the reference set (baseline): auto (default), all, off",
            choices=FIDELITY_MODES, default="auto", **pytest,
        ),
        # task and prompts
        Flag("--task", "task", "text-to-image (default), image-to-image, inpainting", metavar="T", **grid),
        Flag(
            "--strength", "task", "image-to-image / inpainting strength in (0, 1] (default 0.75)", metavar="S", **grid,
        ),
        Flag("--images-per-prompt", "task", "images per prompt (default 1)", metavar="N", **grid),
        Flag(
            "--prompts", "task", "prompt set, one case per prompt: builtin, a COCO captions .json or a text file",
            metavar="builtin|PATH", **cli,
        ),
        Flag(
            "--num-prompts", "task", "prompts taken from --prompts (COCO: a seed-42 subset)",
            type=int, metavar="N", **cli,
        ),
        # profiling
        Flag(
            "--trace", "profiling", "torch.profiler trace per case into DIR (default: <out>/traces)",
            nargs="?", const="", metavar="DIR", pytest_name="--sdsuite-trace",
            pytest_overrides={"nargs": None, "const": None, "help": "torch.profiler trace per case into DIR"},
        ),
        Flag(
            "--no-spans", "profiling", "skip the profiled generation (load/encode/denoise/decode spans)",
            **switch, **cli,
        ),
        # GPU telemetry and clocks
        Flag(
            "--telemetry", "telemetry", "auto (NVML when a GPU and driver are present, else none), nvml, sim, none",
            choices=BACKENDS, default="auto",
        ),
        Flag("--gpu-model", "telemetry", "simulated GPU for --telemetry sim (default: a100)", choices=SIM_MODELS),
        Flag(
            "--sim-fault", "telemetry", "inject into the simulated GPU: permission-denied, gpu-lost[:N], no-counter",
            metavar="FAULT", **grid,
        ),
        Flag(
            "--freq", "telemetry", f"SM clock axis: {SPEC_HELP} (default: default, no lock)",
            default="default", metavar="SPEC",
        ),
        Flag(
            "--freq-floor", "telemetry", f"lowest clock for all/step/sample (default: {DEFAULT_FLOOR_MHZ})",
            type=int, default=DEFAULT_FLOOR_MHZ, metavar="MHZ",
        ),
        Flag(
            "--mem-freq", "telemetry",
            f"memory-clock axis, locked with the SM clock: {MEM_SPEC_HELP} (default: default, left alone); "
            "every (memory, SM) pair must be supported",
            default="default", metavar="SPEC",
        ),
        Flag(
            "--power-limit", "telemetry",
            f"power-limit axis in W, within the GPU's constraints: {POWER_SPEC_HELP} (default: default, untouched)",
            default="default", metavar="SPEC",
        ),
        Flag(
            "--allow-clock-control", "telemetry",
            "allow changing GPU clocks and power limits (or SDSUITE_ALLOW_CLOCK_CONTROL=1); always restored",
            **switch,
        ),
        Flag(
            "--clock-settle", "telemetry", "wait after a clock change (default: 2 s real GPU, 0 simulated)",
            type=float, metavar="S",
        ),
        Flag(
            "--energy-source", "telemetry", "auto (counter where supported, else polled power), counter, poll",
            choices=ENERGY_SOURCES, default="auto", **cli,
        ),
        Flag(
            "--poll-interval-ms", "telemetry", "power polling interval (default: 20)",
            type=float, default=20.0, metavar="MS",
            pytest_name="--sdsuite-poll-interval-ms",
        ),
        Flag(
            "--min-energy-window", "telemetry",
            "repeat generations inside an energy window until it lasts S seconds (default: 1; 0: never)",
            type=float, default=1.0, metavar="S", pytest_name="--sdsuite-min-energy-window",
        ),
        Flag(
            "--power-trace", "telemetry", "save the polled power trace with each record", **switch,
            pytest_name="--sdsuite-power-trace",
        ),
        Flag(
            "--idle-baseline", "telemetry",
            "measure idle power for S seconds at each frequency point (default: 0, off)",
            type=float, default=0.0, metavar="S", **cli,
        ),
        Flag(
            "--cooldown", "telemetry", "between frequency points: SECONDS, or temp:CELSIUS (until cooler)",
            metavar="SPEC", **cli,
        ),
    )  # fmt: skip


def cli_flags(*groups: str) -> list[Flag]:
    """The CLI's flags of ``groups`` (all groups when none is named)."""
    return [f for f in table() if f.in_cli and (not groups or f.group in groups)]


def pytest_flags(pytest_group: str | None = None) -> list[Flag]:
    """The pytest options (of one pytest group, or all)."""
    return [
        f for f in table() if f.in_pytest and (pytest_group is None or GROUPS[f.group].pytest_group == pytest_group)
    ]


def add_argparse_flags(p: argparse.ArgumentParser, *groups: str) -> None:
    """Add the named groups (keys of GROUPS) to an argparse parser, one argument group each."""
    for key in groups:
        g = p.add_argument_group(GROUPS[key].title)
        for f in cli_flags(key):
            g.add_argument(f.name, *f.aliases, **f.kwargs())


def add_pytest_options(parser) -> None:
    """Add every pytest option of the table to a ``pytest.Parser``, in the groups of PYTEST_GROUPS."""
    for name, title in PYTEST_GROUPS.items():
        g = parser.getgroup(name, title)
        for f in pytest_flags(name):
            g.addoption(f.pytest_option, **f.kwargs(pytest=True))


def pytest_getter(config) -> Callable[[str], Any]:
    """``get(dest)`` for the pytest plugin, by the CLI's dest: the pytest option's value, or the CLI default of a flag
    pytest does not have (so one function builds the same options object from either front end)."""
    by_dest = {f.dest: f for f in table()}

    def get(dest: str) -> Any:
        f = by_dest[dest]
        return config.getoption(f.pytest_dest) if f.in_pytest else f.kwargs()["default"]

    return get


def pytest_flag_name(dest: str) -> str:
    """The pytest spelling of the flag with CLI dest ``dest`` (for error messages)."""
    return next(f.pytest_option for f in table() if f.dest == dest)
