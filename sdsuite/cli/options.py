"""``sdsuite options``: the optimization tokens and presets and whether each runs here (with the reason
when not); with ``--results DIR``, the effect table (speedup, memory, energy, fidelity against the
reference set) of the records in a results directory, as a table or markdown."""

from __future__ import annotations

import argparse
import sys

from rich.table import Table

from sdsuite.cli.commands import help_of
from sdsuite.core.console import console as make_console
from sdsuite.core.console import readable
from sdsuite.core.errors import UsageError


def register(sub) -> None:
    """Add the ``options`` subcommand."""
    p = sub.add_parser("options", help=help_of("options"), description=__doc__)
    p.add_argument("--device", default="auto", help="device to check support on: auto (default), cpu, cuda, cuda:<i>")
    p.add_argument("--precision", default="fp32", help="precision to check support in (default fp32)")
    p.add_argument(
        "--results", default=None, metavar="DIR", help="report the option effects recorded in this results directory"
    )
    p.add_argument("--run", default="last", metavar="ID", help="with --results: a run id, 'last' (default) or 'all'")
    p.add_argument("--markdown", action="store_true", help="with --results: print a markdown table")
    p.set_defaults(handler=cmd_options)


def _catalogue() -> list[tuple[str, str, str]]:
    from sdsuite.optimizations.sets import (
        ATTENTION_KERNELS,
        COMPILE_MODES,
        OFFLOAD_MODES,
        QUANTIZATIONS,
        WEIGHT_MUTATING,
    )

    rows = [(f"attn={k}", "attention kernel" + (" (default)" if k == "sdpa" else ""), "no") for k in ATTENTION_KERNELS]
    rows += [
        ("kv-cache", "cross-attention K/V computed once per generation (UNet only)", "no"),
        ("vae-slicing", "VAE decodes one image at a time", "no"),
        ("vae-tiling", "VAE decodes in tiles", "no"),
        ("channels-last", "UNet and VAE in channels_last", "no"),
        ("fused-qkv", WEIGHT_MUTATING["fused_qkv"], "yes"),
        ("no-t5", WEIGHT_MUTATING["drop_t5"], "yes"),
    ]
    rows += [
        (f"compile={m}" if m != "default" else "compile", f"torch.compile the UNet or DiT, mode {m}", "no")
        for m in COMPILE_MODES
    ]
    rows += [(f"{m}-offload", f"{m} CPU offload", "yes") for m in OFFLOAD_MODES]
    rows += [(q, what, "yes") for q, what in QUANTIZATIONS.items()]
    return rows


def cmd_options(args: argparse.Namespace) -> int:
    """List the options (or report effects from results); exit 2 on bad input."""
    if args.results is not None:
        return _report(args)
    from sdsuite.measure.hardware import resolve_device_name
    from sdsuite.optimizations.sets import PRESETS, parse_optimization_set
    from sdsuite.optimizations.support import supported
    from sdsuite.pipelines.registry import get_precision

    device = resolve_device_name(args.device)  # torch is imported only where a GPU may be (a CUDA build, --device cuda)
    dtype = get_precision(args.precision)
    console = make_console()
    t = Table(
        title=f"optimization tokens (join with +; comma lists make a grid) on {device}, {args.precision}",
        title_justify="left",
    )
    # One column per model generation: the UNet families (SD 1.x/2.x, SDXL) and the diffusion transformers.
    families = {"UNet (SD 1/2, SDXL)": "sd", "SD 3/3.5": "sd3", "FLUX.1": "flux"}
    for col in ("token", "what", "mutates weights", *(f"runs here: {f}" for f in families)):
        t.add_column(col)

    def verdict(s, family: str) -> str:
        reason = supported(s, device, dtype, family=family)
        return "yes" if reason is None else f"no: {reason}"

    for token, what, mutates in _catalogue():
        s = parse_optimization_set(token)
        t.add_row(token, what, mutates, *(verdict(s, f) for f in families.values()))
    console.print(readable(t, "token"))
    p = Table(title="presets (--recipe)", title_justify="left")
    for col in ("preset", "set", *(f"runs here: {f}" for f in families)):
        p.add_column(col)
    for name, s in PRESETS.items():
        p.add_row(name, s.id, *(verdict(s, f) for f in families.values()))
    console.print(readable(p, "preset", "set"))
    console.print(
        "effects of each set are measured against attn=eager (the baseline preset) of the same case: "
        "sdsuite run ... --compare-options",
        style="dim",
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sdsuite.quality.effects import effect_notes, effects_markdown, effects_table
    from sdsuite.store.results import ResultsDir

    if not (Path(args.results) / "results.jsonl").is_file():
        raise UsageError(
            f"--results {args.results!r} holds no results.jsonl; pass a directory written by `sdsuite run`."
        )
    records = ResultsDir(args.results).records()
    if args.run == "last":
        run = records[-1]["run_id"] if records else None
        records = [r for r in records if r["run_id"] == run]
    elif args.run != "all":
        runs = sorted({r["run_id"] for r in records})
        if args.run not in runs:
            raise UsageError(f"run {args.run!r} is not in {args.results}; runs there: {', '.join(runs) or 'none'}.")
        records = [r for r in records if r["run_id"] == args.run]
    if args.markdown:
        sys.stdout.write(effects_markdown(records))
        return 0
    console = make_console()
    console.print(readable(effects_table(records), "case", "options"))
    for note in effect_notes(records):
        console.print(f"note: {note}", style="dim")
    return 0
