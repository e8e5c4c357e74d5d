"""``sdsuite list`` and ``sdsuite env``: what can be measured, and on what."""

from __future__ import annotations

import argparse

from rich.table import Table

from sdsuite.cli.commands import help_of
from sdsuite.core.console import console as make_console
from sdsuite.core.console import print_json, readable
from sdsuite.measure.display import fmt_bytes
from sdsuite.pipelines.registry import DEFAULT_SCHEDULER, PRECISIONS, SCHEDULERS, VARIANTS

WHAT = ("variants", "schedulers", "precisions")


def register(sub) -> None:
    """Add ``list`` and ``env``."""
    p = sub.add_parser("list", help=help_of("list"))
    p.add_argument(
        "what",
        nargs="?",
        choices=WHAT + ("all",),
        default="all",
        help="which registry to list: variants, schedulers, precisions or all (default)",
    )
    from sdsuite.gpu.sim import SIM_MODELS
    from sdsuite.gpu.telemetry import BACKENDS
    from sdsuite.spec.flags import FORMATS

    p.add_argument(
        "--format", choices=FORMATS, default="table", help="table (default; one line per row when piped) or json"
    )
    p.set_defaults(handler=cmd_list)
    e = sub.add_parser("env", help=help_of("env"))
    e.add_argument("--format", choices=FORMATS, default="table", help="text (default) or json")
    e.add_argument(
        "--telemetry", choices=BACKENDS, default="auto", help="telemetry device to describe (default: NVML if present)"
    )
    e.add_argument(
        "--gpu-model", choices=SIM_MODELS, default=None, help="simulated GPU to describe (implies --telemetry sim)"
    )
    e.set_defaults(handler=cmd_env)


def _variants_data() -> list[dict]:
    return [
        {
            "name": v.name,
            "hub_id": v.hub_id,
            "pipeline": v.pipeline_class,
            "family": v.family,
            "default_resolution": f"{v.default_width}x{v.default_height}",
            "default_steps": v.default_steps,
            "default_guidance": v.default_guidance,
            "prediction_type": v.prediction_type,
            "default_precision": v.default_precision,
            "gpu_classes": list(v.gpu_classes),
            "approx_vram_gb": v.approx_vram_gb,
            "embedded": v.embedded,
            "description": v.description,
        }
        for v in VARIANTS.values()
    ]


def cell(column: str, value) -> str:
    """A table cell in words, never a Python repr: ``None`` is said, ``True`` is yes, dicts are ``key=value``."""
    if value is None:
        return "(embedded: none)" if column == "hub_id" else "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "any"
    return str(value)


# Columns a narrow terminal drops first (the name, hub id and description always stay).
DROP_ORDER = (
    "prediction_type",
    "default_precision",
    "family",
    "approx_vram_gb",
    "embedded",
    "default_guidance",
    "pipeline",
    "gpu_classes",
    "default_steps",
    "default_resolution",
    "overrides",
    "families",
)


def fit_columns(cols: list[str], cells: list[dict], width: int) -> tuple[list[str], list[str]]:
    """The columns that fit ``width`` at their natural widths (long descriptions may wrap to 30), and the ones left
    out."""

    def need(cs: list[str]) -> int:
        natural = {c: max(len(c), *(len(r[c]) for r in cells)) for c in cs}
        return sum(min(w, 30) if c == "description" else w for c, w in natural.items()) + 3 * len(cs) + 1

    shown, hidden = list(cols), []
    for c in DROP_ORDER:
        if need(shown) <= width:
            break
        if c in shown:
            shown.remove(c)
            hidden.append(c)
    return shown, hidden


def cmd_list(args: argparse.Namespace) -> int:
    """Print the registries."""
    data = {
        "variants": _variants_data(),
        "schedulers": [
            {
                "name": DEFAULT_SCHEDULER,
                "class": "(checkpoint's own)",
                "overrides": {},
                "families": ["sd", "sdxl", "sd3", "flux"],
                "description": "the scheduler the weights ship with",
            }
        ]
        + [
            {
                "name": s.name,
                "class": s.class_name,
                "overrides": s.overrides,
                "families": list(s.families),
                "description": s.description,
            }
            for s in SCHEDULERS.values()
        ],
        "precisions": [{"name": k, "dtype": v} for k, v in PRECISIONS.items()],
    }
    keys = WHAT if args.what == "all" else (args.what,)
    if args.format == "json":
        print_json({k: data[k] for k in keys})
        return 0
    console = make_console()
    for k in keys:
        rows = data[k]
        cells = [{c: cell(c, v) for c, v in r.items()} for r in rows]
        cols, hidden = fit_columns(list(rows[0]), cells, console.width)
        t = Table(title=k, title_justify="left")
        for c in cols:
            t.add_column(c.replace("_", " "))
        for r in cells:
            t.add_row(*[r[c] for c in cols])
        console.print(readable(t, "name", "hub id", "class", "dtype"))
        if hidden:
            console.print(
                f"{len(hidden)} column(s) left out at {console.width} columns: {', '.join(hidden)}; "
                "a wider terminal, a pipe or --format json shows them",
                style="dim",
            )
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print the environment fingerprint; say plainly when there is no GPU or NVML."""
    from sdsuite.gpu.telemetry import describe_telemetry
    from sdsuite.measure.envinfo import environment  # imports torch: only `sdsuite env` asks it

    env = environment()
    env["telemetry"] = describe_telemetry(getattr(args, "telemetry", "auto"), getattr(args, "gpu_model", None))
    if args.format == "json":
        print_json(env)
        return 0
    c = make_console()
    c.print(f"sdsuite {env['packages']['sdsuite']}  fingerprint {env['fingerprint']}")
    c.print(
        f"CPU: {env['cpu']['model']} ({env['cpu']['logical_cores']} logical cores, "
        f"{fmt_bytes(env['cpu']['memory_bytes'])})"
    )
    c.print(
        f"Python {env['python']} on {env['platform']['system']} {env['platform']['release']} "
        f"({env['platform']['machine']})"
    )
    c.print("Packages: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in env["packages"].items()))
    gpus = env["cuda"]["gpus"]
    if gpus:
        for g in gpus:
            c.print(
                f"GPU {g['index']}: {g['name']} (class {g['class']}, {fmt_bytes(g['memory_bytes'])}, "
                f"sm {g['compute_capability']})"
            )
        c.print(f"CUDA (torch build): {env['cuda']['torch_cuda']}")
    else:
        c.print(
            f"GPU: none visible to torch (CUDA build: {env['cuda']['torch_cuda'] or 'no, CPU-only torch'}); "
            "benchmarks run on the CPU."
        )
    nv = env["nvml"]
    if nv["available"]:
        c.print(f"NVML: driver {nv['driver']}, {nv['device_count']} device(s)")
    else:
        c.print(f"NVML: unavailable ({nv['reason']}); GPU energy, power and clocks cannot be measured here.")
    tel = env["telemetry"]
    for d in tel["devices"]:
        sim = " [simulated]" if d["simulated"] else ""
        clocks = "; ".join(
            f"mem {m}: {v['count']} SM clocks {v['min']}-{v['max']} MHz" for m, v in d["supported_clocks_mhz"].items()
        )
        c.print(
            f"Telemetry ({tel['backend']}){sim} GPU {d['index']}: {d['name']} "
            f"(class {d['gpu_class']}, uuid {d['uuid']}, "
            f"sm {d['compute_capability']}, {fmt_bytes(d['memory_bytes'])}, driver {d['driver']}, "
            f"power limit {d['power_limit_w']} W{_settable(d)}; {clocks or 'no clock table'})"
        )
        c.print("  " + _measurement_line(d), highlight=False)
    if not tel["devices"]:
        c.print(
            f"Telemetry: none ({tel.get('reason')}); "
            "try `sdsuite env --telemetry sim --gpu-model a100` for the simulated device."
        )
    if env["git_commit"]:
        c.print(f"git commit: {env['git_commit']}")
    return 0


def _yes_no(v) -> str:
    return "unknown" if v is None else ("on" if v else "off")


def _settable(d: dict) -> str:
    """`` (settable 150-250 W)``: the range --power-limit accepts, where the GPU reports one."""
    r = d.get("power_limit_range_w")
    return f" (settable {r[0]}-{r[1]} W)" if r else ""


def _measurement_line(d: dict) -> str:
    """Persistence, MIG, how power is read and the energy counter's period (measured or assumed) of one GPU."""
    period = d.get("counter_period") or {}
    if period.get("period_s") is None:
        counter = "energy counter period unknown"
    elif period.get("source") == "measured":
        spread = (
            f", {period['min_s'] * 1e3:.1f}-{period['max_s'] * 1e3:.1f} ms" if period.get("min_s") is not None else ""
        )
        counter = (
            f"energy counter updates every {period['period_s'] * 1e3:.1f} ms (measured, n={period.get('n')}{spread})"
        )
    else:
        why = (period.get("measurement") or {}).get("reason")
        counter = (
            f"energy counter period {period['period_s'] * 1e3:.0f} ms "
            f"({period.get('source')}{': ' + why if why else ''})"
        )
    reading = d.get("power_reading") or {}
    power = f"power: {reading.get('method', 'unknown')}{' (~1 s average)' if reading.get('averaged') else ''}"
    return (
        f"persistence mode {_yes_no(d.get('persistence_mode'))}, MIG {_yes_no(d.get('mig_mode'))}, {power}, {counter}"
    )
