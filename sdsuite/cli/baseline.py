"""``sdsuite compare`` and ``sdsuite baseline update``: gate a results directory against stored baselines.

Both run sdsuite.baselines.gate, the code the pytest plugin runs per test. ``compare`` only reads;
``baseline update`` writes failing and missing entries (``--all``: every entry of the results), and
never deletes entries of cases that are not in the results.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from sdsuite.baselines.baseline_store import default_file_name
from sdsuite.baselines.entries import obtained_entry, pool_entries
from sdsuite.baselines.gate import GateConfig, GateResult, Status, UpdateMode, gate_record
from sdsuite.baselines.gate_options import add_cli_gate_options, cli_gate_getter, gate_config
from sdsuite.baselines.keys import hardware_key
from sdsuite.baselines.render import markdown, text_table
from sdsuite.baselines.tolerance import check_layer_metrics
from sdsuite.cli.commands import help_of
from sdsuite.core.errors import UsageError
from sdsuite.measure.calibration import load_calibrations
from sdsuite.store.results import ResultsDir

FORMATS = ("table", "json", "markdown")
DEFAULT_FILE = "sdsuite"


def _add_gate_arguments(p: argparse.ArgumentParser, *, missing: bool = False) -> None:
    """RESULTS_DIR and the gate options (declared with the pytest plugin's in sdsuite.baselines.gate_options)."""
    p.add_argument("results", metavar="RESULTS_DIR", help="results directory (holds results.jsonl and run.json)")
    add_cli_gate_options(p, missing=missing)


def register(sub) -> None:
    """Add ``compare`` and ``baseline update``."""
    p = sub.add_parser(
        "compare",
        help=help_of("compare"),
        description=(
            "Compare each record with its baseline entry; exit 0 pass, 1 regression or missing baseline, 2 bad input."
        ),
    )
    _add_gate_arguments(p, missing=True)
    p.add_argument("--format", choices=FORMATS, default="table", help="table (default), json or markdown")
    p.set_defaults(handler=cmd_compare)

    b = sub.add_parser("baseline", help=help_of("baseline"), description="Manage the baseline store.")
    bsub = b.add_subparsers(dest="baseline_command", metavar="ACTION")  # inherits the CLI parser class: errors exit 2
    bsub.required = True
    u = bsub.add_parser(
        "update",
        help="write failing and missing entries from a results directory (--all: every entry)",
        description="Write baseline entries from a results directory; other entries are kept.",
    )
    _add_gate_arguments(u)
    u.add_argument(
        "--all", action="store_true", help="rewrite every entry of the results, not only failing and missing ones"
    )
    u.add_argument(
        "--file",
        default=DEFAULT_FILE,
        metavar="NAME",
        help=f"file for new entries: DIR/<key>/NAME.json (default {DEFAULT_FILE}); existing entries stay in their file",
    )
    u.add_argument(
        "--pool",
        action="store_true",
        help="pool the samples of every record of a case in RESULTS_DIR (several sessions) into one entry",
    )
    u.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")
    u.set_defaults(handler=cmd_update)


@dataclass(frozen=True)
class _Loaded:
    records: list[dict]  # the latest record of each case
    history: dict[str, list[dict]]  # every record of each case, oldest first
    envs: dict[str, dict]
    calibrations: dict


def _load_results(args: argparse.Namespace) -> _Loaded:
    path = Path(args.results)
    results = ResultsDir(path)
    if not results.results_path.exists():
        raise UsageError(
            f"{path} holds no results.jsonl; give the --out directory of `sdsuite run` or --sdsuite-out of pytest."
        )
    records = [r for r in results.records() if r.get("status") == "ok"]
    if args.run:
        records = [r for r in records if (r.get("env") or {}).get("run_id", r.get("run_id")) == args.run]
        if not records:
            raise UsageError(f"{path} has no successful record of run {args.run!r}; see run ids in {results.run_path}.")
    history: dict[str, list[dict]] = {}
    for r in records:  # appended in time order: the last record of a case is its latest measurement
        history.setdefault(r["case_id"], []).append(r)
    info = results.run_info() or {}
    return _Loaded([h[-1] for h in history.values()], history, info.get("runs") or {}, load_calibrations(path))


def _gate_config(args: argparse.Namespace, update: UpdateMode, missing: str) -> GateConfig:
    return gate_config(cli_gate_getter(args), args.baselines, update=update, missing=missing)


def _run(args: argparse.Namespace, cfg: GateConfig, file_name: str, pool: bool = False) -> list[GateResult]:
    loaded = _load_results(args)
    store = Path(args.baselines)
    if (
        cfg.update is UpdateMode.NONE and not store.is_dir()
    ):  # compare reads the store: a typo must not pass or "regress"
        raise UsageError(
            f"--baselines {args.baselines!r} {'is not a directory' if store.exists() else 'does not exist'}; "
            "give the baseline store (DIR/<hardware-key>/*.json), or create it with `sdsuite baseline update`."
        )

    def inputs(rec: dict) -> dict:
        run_id = (rec.get("env") or {}).get("run_id") or rec.get("run_id")
        calib, cpu = loaded.calibrations.get(rec.get("record_id"), (None, None)) if cfg.portable else (None, None)
        return {"env": loaded.envs.get(run_id), "calibration": calib, "cpu_samples": cpu}

    if (
        cfg.rules.command_line is not None and cfg.rules.command_line.overrides
    ):  # a mistyped metric is an error, before anything is written
        known = set()
        for rec in loaded.records:
            i = inputs(rec)
            known |= set(rec["metrics"]) | set(
                obtained_entry(rec, portable=cfg.portable, calibration=i["calibration"], cpu_samples=i["cpu_samples"])[
                    "metrics"
                ]
            )
        check_layer_metrics(cfg.rules.command_line, known)

    out = []
    for rec in sorted(loaded.records, key=lambda r: r["case_id"]):
        entry = None
        if pool:
            key = hardware_key(rec, inputs(rec)["env"], cfg.scope)
            # Only sessions measured under the same hardware key pool: others are other numbers.
            sessions = [
                r for r in loaded.history[rec["case_id"]] if hardware_key(r, inputs(r)["env"], cfg.scope) == key
            ]
            pooled = []
            for r in sessions:
                i = inputs(r)
                pooled.append(
                    obtained_entry(r, portable=cfg.portable, calibration=i["calibration"], cpu_samples=i["cpu_samples"])
                )
            entry = pool_entries(pooled)
        i = inputs(rec)
        out.append(
            gate_record(
                rec,
                i["env"],
                cfg,
                file_name=file_name,
                calibration=i["calibration"],
                cpu_samples=i["cpu_samples"],
                entry=entry,
            )
        )
    return out


def _print_table(results: list[GateResult]) -> None:
    for r in results:
        if r.comparison is not None:
            head = "FAILED" if r.failed else "passed"
            print(f"{r.case_id}  [{r.hardware_key}]  {head}  ({r.comparison.baseline_file})")
            print(text_table(r.comparison))
            print()
        else:
            print(f"{r.case_id}  [{r.hardware_key}]  {r.status.value}: {r.reason() or r.baseline_path}")
            print()


def _summary_line(results: list[GateResult]) -> str:
    compared = [r for r in results if r.comparison is not None]
    failed = [r for r in results if r.failed]
    skipped = [r for r in results if r.skipped]
    improved = sum(len(r.comparison.improvements) for r in compared if r.comparison)
    return (
        f"{len(compared)} case(s) compared, {len(failed)} failed, {len(skipped)} not compared, "
        f"{improved} improvement(s) beyond tolerance (consider updating)"
    )


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare; exit 1 when any case regressed or lacks a baseline (unless --missing skip)."""
    cfg = _gate_config(args, UpdateMode.NONE, args.missing)
    results = _run(args, cfg, DEFAULT_FILE)
    if args.format == "json":
        from sdsuite.core.console import print_json

        print_json({"passed": not any(r.failed for r in results), "results": [r.to_json() for r in results]})
    elif args.format == "markdown":
        skipped = [(r.case_id, r.reason()) for r in results if r.comparison is None]
        sys.stdout.write(markdown([r.comparison for r in results if r.comparison is not None], skipped))
    else:
        _print_table(results)
        print(_summary_line(results))
    if not any(r.comparison is not None for r in results):
        print("sdsuite: warning: no record was compared with a baseline.", file=sys.stderr)
    if any(r.failed for r in results):
        print(
            "sdsuite: regression or missing baseline; accept intended changes with "
            f"`sdsuite baseline update {args.results} "
            f"--baselines {args.baselines}`.",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    """Write failing and missing entries (``--all``: every entry); report what was written."""
    cfg = _gate_config(args, UpdateMode.ALL if args.all else UpdateMode.FAILING, "fail")
    results = _run(args, cfg, default_file_name(args.file), pool=args.pool)
    written = [r for r in results if r.status in (Status.CREATED, Status.UPDATED)]
    if args.format == "json":
        from sdsuite.core.console import print_json

        print_json(
            {"written": [r.to_json() for r in written], "unchanged": [r.case_id for r in results if r not in written]}
        )
        return 0
    for r in results:
        where = r.baseline_path
        print(f"{r.status.value:9s} {r.case_id}  -> {where}" if r in written else f"unchanged {r.case_id}  ({where})")
    print(f"{len(written)} entr{'y' if len(written) == 1 else 'ies'} written, {len(results) - len(written)} unchanged.")
    return 0


__all__ = ["cmd_compare", "cmd_update", "register"]
