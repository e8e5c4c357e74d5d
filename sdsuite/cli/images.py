"""``sdsuite images clean``: keep the disk use of saved images in check.

Selects PNGs under an images root (<out>/images; a results directory is accepted too): all of one
SLURM job (--job), those older than N days (--older-than), and/or the oldest until the root holds at
most SIZE (--max-size). --archive writes them into <root>/_archive/images-<UTC>.tar.gz before deleting;
--dry-run only says what would happen. Only PNG files below the root are ever touched: symlinks are
never followed or removed, and a directory without the .sdsuite-images marker is refused.
"""

from __future__ import annotations

import argparse

from sdsuite.cli.commands import help_of
from sdsuite.measure.display import fmt_bytes
from sdsuite.store.image_files import apply_clean, parse_size, plan_clean


def register(sub) -> None:
    """Add ``images clean``."""
    p = sub.add_parser("images", help=help_of("images"), description=__doc__)
    isub = p.add_subparsers(dest="images_command", metavar="ACTION")
    isub.required = True
    c = isub.add_parser(
        "clean", help="delete (optionally archive) saved images by job, age or total size", description=__doc__
    )
    c.add_argument(
        "root",
        nargs="?",
        default="sdsuite-sweep/images",
        metavar="ROOT",
        help="images root (default: sdsuite-sweep/images)",
    )
    c.add_argument("--job", default=None, metavar="ID", help="only the images of SLURM job ID (job_<ID>)")
    c.add_argument(
        "--older-than", type=float, default=None, metavar="DAYS", help="images last modified more than DAYS ago"
    )
    c.add_argument(
        "--max-size",
        default=None,
        metavar="SIZE",
        help="delete the oldest images until the root holds at most SIZE (e.g. 500M, 2G)",
    )
    c.add_argument(
        "--archive", action="store_true", help="tar.gz the selected images into <root>/_archive before deleting"
    )
    c.add_argument("--dry-run", action="store_true", help="say what would be done, touch nothing")
    c.set_defaults(handler=cmd_clean)


def cmd_clean(args: argparse.Namespace) -> int:
    """Plan, then archive/delete (or only list with --dry-run); always say what was done."""
    cap = parse_size(args.max_size) if args.max_size is not None else None
    plan = plan_clean(args.root, job=args.job, older_than_days=args.older_than, max_size_bytes=cap)
    result = apply_clean(plan, archive=args.archive, dry_run=args.dry_run)
    for why in plan.refused:
        print(f"skipped {why}")
    verb = "would delete" if args.dry_run else "deleted"
    if args.dry_run:
        for f in plan.selected:
            print(f"{verb} {f.rel} ({fmt_bytes(f.size)})")
        if args.archive and plan.selected:
            print(f"would archive {len(plan.selected)} file(s) into {plan.root / '_archive'} first")
    n = len(result.deleted)
    freed = plan.selected_bytes if args.dry_run else sum(f.size for f in plan.selected if f.rel in set(result.deleted))
    print(
        f"{verb} {n} image(s), {fmt_bytes(freed)}, under {plan.root}; "
        f"kept {len(plan.kept)} image(s), {fmt_bytes(plan.kept_bytes)}"
        + (f"; archive: {result.archive}" if result.archive else "")
        + (
            f"; removed {len(result.removed_dirs)} empty director{'y' if len(result.removed_dirs) == 1 else 'ies'}"
            if result.removed_dirs
            else ""
        )
    )
    return 0
