"""``sdsuite status OUT``: progress of a scale-out sweep or run (local ``--gpus`` or SLURM array), merging finished
tasks first."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdsuite.cli.commands import help_of
from sdsuite.core.errors import UsageError
from sdsuite.launch.progress import status_of
from sdsuite.spec.flags import FORMATS


def register(sub) -> None:
    """Add the ``status`` subcommand."""
    p = sub.add_parser("status", help=help_of("status"), description=__doc__)
    p.add_argument("out", metavar="OUT", help="the --out directory of a launched sweep or run")
    p.add_argument(
        "--no-merge", action="store_true", help="only read; do not merge task directories into OUT/results.jsonl"
    )
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    """Print the progress; exit 0 (2 when OUT is not a results directory)."""
    out = Path(args.out)
    if not (out / "results.jsonl").exists() and not (out / "launch").is_dir() and not (out / "tasks").is_dir():
        raise UsageError(f"{str(out)!r} holds no sdsuite results; give the --out of a sweep or of a launched run.")
    st = status_of(out, merge=not args.no_merge)
    if args.format == "json":
        from sdsuite.core.console import print_json

        print_json(st)
        return 0
    if st["planned"] is None:
        print(f"{out}: {st['finished']} finished point(s); no scale-out submission recorded")
        return 0
    job = f", SLURM job {st['job_id']}" if st.get("job_id") else ""
    print(
        f"{out}: {st['finished']}/{st['planned']} point(s) finished, {st['missing']} missing "
        f"(submission {st['submission']}, {st['launcher']}{job})"
    )
    for t in st["tasks"]:
        gpu = f" gpu {t['gpu']}" if t["gpu"] is not None else ""
        print(f"  task {t['index']}{gpu}: {t['finished']}/{t['points']} {t['state']}")
    if st["missing"]:
        print(f"  resubmit the missing points: rerun the same sdsuite {st['command']} command with --resume")
    return 0
