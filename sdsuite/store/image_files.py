"""Generated images on disk: saving sampled PNGs with their provenance, and cleaning the images root.

Layout: ``<out>/images/`` is the images root (it holds a ``.sdsuite-images`` marker); each sweep writes
into ``job_<SLURM_JOB_ID>/`` under SLURM, ``<run-id>/`` otherwise. Every PNG carries the prompt, seed,
variant, scheduler, precision, steps and frequency in its text chunks (``sdsuite_*`` keys).

Cleaning only ever touches PNG files below the root it is given: symlinks are never followed or
removed, every path is checked to resolve inside the root, and a root without the marker is refused.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import re
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sdsuite.core.errors import UsageError
from sdsuite.spec.case import Case
from sdsuite.store.results import default_file_mode

IMAGES_DIR = "images"
MARKER = ".sdsuite-images"
ARCHIVE_DIR = "_archive"
IMAGE_MODES = ("none", "sample", "all")
PNG_OVERHEAD_BYTES = 2048  # header, text chunks and zlib framing of one PNG, rounded up
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def images_root(out: str | os.PathLike) -> Path:
    """The images root of a results directory."""
    return Path(out) / IMAGES_DIR


def run_dir_name(run_id: str, environ: Mapping[str, str] = os.environ) -> str:
    """``job_<SLURM_JOB_ID>`` under SLURM (array jobs keep their task suffix), else the run id."""
    job = environ.get("SLURM_JOB_ID", "").strip()
    task = environ.get("SLURM_ARRAY_TASK_ID", "").strip()
    if job:
        name = f"job_{job}_{task}" if task else f"job_{job}"
        # A job id is digits in practice; anything else is reduced to safe characters, never a path.
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def image_file_stem(case: Case) -> str:
    """File stem of a case's images: the case id with ``__`` between fields (ids never contain ``__``)."""
    return case.case_id.replace("/", "__")


def sample_selection(cases: Sequence[Case], mode: str) -> set[Case]:
    """The cases whose images a sweep keeps: all, none, or per case group the lowest, middle and highest clock."""
    if mode not in IMAGE_MODES:
        raise UsageError(f"unknown --save-images {mode!r}; valid choices: {', '.join(IMAGE_MODES)}.")
    if mode == "none":
        return set()
    if mode == "all":
        return set(cases)
    groups: dict[Case, list[Case]] = {}
    for c in cases:
        groups.setdefault(replace(c, freq_mhz=None), []).append(c)
    keep: set[Case] = set()
    for members in groups.values():
        locked = sorted((c for c in members if c.freq_mhz is not None), key=lambda c: c.freq_mhz)
        if not locked:
            keep.update(members)
            continue
        keep.update({locked[0], locked[len(locked) // 2], locked[-1]})
    return keep


def estimate_bytes(cases: Iterable[Case], mode: str) -> int:
    """Upper bound on the disk use of the PNGs a sweep will write (uncompressed RGB plus overhead)."""
    per = 0
    for c in cases:
        n = c.num_images if mode == "all" else 1
        per += n * ((c.width or 0) * (c.height or 0) * 3 + PNG_OVERHEAD_BYTES)
    return per


def png_metadata(case: Case, extra: Mapping[str, object]) -> dict[str, str]:
    """Text chunks of a PNG: the case's provenance plus ``extra`` (GPU, run id, simulated...)."""
    meta = {
        "prompt": case.prompt,
        "negative_prompt": case.negative_prompt or "",
        "seed": case.seed,
        "variant": case.variant,
        "scheduler": case.scheduler,
        "precision": case.precision,
        "steps": case.steps,
        "guidance_scale": case.guidance_scale,
        "resolution": f"{case.width}x{case.height}",
        "freq_mhz": "default" if case.freq_mhz is None else case.freq_mhz,
        "case_id": case.case_id,
        "task": getattr(case, "task", ""),
        "options": getattr(getattr(case, "options", None), "id", ""),
        **extra,
    }
    return {f"sdsuite_{k}": str(v) for k, v in meta.items()}


def write_png(image, path: Path, text: Mapping[str, str]) -> None:
    """Write one (3, H, W) float image in 0..1 as PNG with text chunks, atomically (temp file + rename)."""
    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(arr, "RGB").save(tmp, format="PNG", pnginfo=info)
        os.chmod(tmp, default_file_mode())  # mkstemp makes it private; the umask decides, as for any new file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class ImageSaver:
    """Saves the images of the selected cases under ``root/run_dir`` (creating the root's marker)."""

    root: Path
    run_dir: str
    mode: str
    selected: frozenset[Case]
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        """Where this sweep's images go."""
        return self.root / self.run_dir

    def wants(self, case: Case) -> bool:
        """True when this case's images are kept."""
        return case in self.selected

    def save(self, case: Case, images) -> list[Path]:
        """Write the case's images (the first of the batch in sample mode, all in all mode); returns the paths."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MARKER).touch(exist_ok=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        batch = images if self.mode == "all" else images[:1]
        text = png_metadata(case, self.extra)
        paths = []
        for i, img in enumerate(batch):
            path = self.directory / f"{image_file_stem(case)}__img{i}.png"
            write_png(img, path, {**text, "sdsuite_batch_index": str(i)})
            paths.append(path)
        return paths


# --- cleaning ----------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2}
_UNITS.update({"g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4})


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GiB``, ``800k`` or plain bytes -> bytes (binary units: K = 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise UsageError(f"--max-size {text!r} is not a size; use e.g. 500M, 2G, 1.5GiB or a number of bytes.")
    from sdsuite.core.limits import SIZE_BYTES

    value = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value > SIZE_BYTES.hi:
        raise UsageError(f"--max-size {text!r} is too large; the most is {SIZE_BYTES.hi} bytes (4 EiB).")
    return int(value)


@dataclass(frozen=True)
class ImageFile:
    """One PNG below the images root."""

    path: Path
    rel: str
    size: int
    mtime: float


@dataclass(frozen=True)
class CleanPlan:
    """What a clean would do: files selected (oldest first), files kept, paths refused and why."""

    root: Path
    selected: tuple[ImageFile, ...]
    kept: tuple[ImageFile, ...]
    refused: tuple[str, ...]

    @property
    def selected_bytes(self) -> int:
        """Bytes the clean frees."""
        return sum(f.size for f in self.selected)

    @property
    def kept_bytes(self) -> int:
        """Bytes left under the root."""
        return sum(f.size for f in self.kept)


@dataclass(frozen=True)
class CleanResult:
    """What a clean did."""

    plan: CleanPlan
    dry_run: bool
    deleted: tuple[str, ...]
    archive: Path | None
    removed_dirs: tuple[str, ...]


def _inside(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([os.path.realpath(path), str(root)]) == str(root)
    except ValueError:  # different drives
        return False


def check_images_root(root: str | os.PathLike) -> Path:
    """The resolved images root, refusing a path that is not one (UsageError): missing, or without the marker."""
    given = Path(root)
    if not given.is_dir():
        raise UsageError(
            f"images root {str(given)!r} does not exist or is not a directory; point at <out>/{IMAGES_DIR}."
        )
    if not (given / MARKER).is_file() and (given / IMAGES_DIR / MARKER).is_file():
        given = given / IMAGES_DIR  # a results directory: its images root
    if not (given / MARKER).is_file():
        raise UsageError(
            f"{str(given)!r} is not an sdsuite images root (no {MARKER} marker), so nothing there is cleaned; "
            f"point at the <out>/{IMAGES_DIR} directory a sweep wrote."
        )
    return Path(os.path.realpath(given))


def scan_images(root: Path) -> tuple[list[ImageFile], list[str]]:
    """Every PNG below ``root`` (not following symlinks, skipping the archive) and the paths refused."""
    files: list[ImageFile] = []
    refused: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            p = here / d
            if p.is_symlink():
                refused.append(f"{p.relative_to(root)}: symlink to a directory (never followed)")
                dirnames.remove(d)
            elif here == root and d == ARCHIVE_DIR:
                dirnames.remove(d)  # archives are kept, never cleaned
        for name in filenames:
            p = here / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                refused.append(f"{rel}: symlink (never followed or removed)")
                continue
            if not stat.S_ISREG(st.st_mode) or not name.lower().endswith(".png"):
                continue  # only PNGs are ever touched (and never the marker)
            if not _inside(p, root):
                refused.append(f"{rel}: resolves outside the images root")
                continue
            files.append(ImageFile(p, rel, st.st_size, st.st_mtime))
    files.sort(key=lambda f: (f.mtime, f.rel))
    return files, refused


def job_dir_name(job: str) -> str:
    """``job_<ID>`` for a SLURM job id; an id with path characters is refused (UsageError)."""
    job = str(job).strip()
    if not _SAFE_NAME.fullmatch(job):
        raise UsageError(f"--job {job!r} is not a job id (letters, digits, '_', '.', '-'; no paths).")
    return f"job_{job}"


def plan_clean(
    root: str | os.PathLike,
    *,
    job: str | None = None,
    older_than_days: float | None = None,
    max_size_bytes: int | None = None,
    now: float | None = None,
) -> CleanPlan:
    """Select files to clean: all of ``--job`` alone, files older than N days, and/or the oldest files
    until the root holds at most ``max_size_bytes`` (deleting only among the ``--job`` files if given)."""
    if job is None and older_than_days is None and max_size_bytes is None:
        raise UsageError(
            "say what to clean: --job ID, --older-than DAYS and/or --max-size SIZE (add --dry-run to preview)."
        )
    if older_than_days is not None:
        from sdsuite.core.limits import FLAG_RANGES

        FLAG_RANGES["older_than"].check(older_than_days, "--older-than")
    if max_size_bytes is not None and max_size_bytes < 0:
        raise UsageError("--max-size must be >= 0.")
    base_root = check_images_root(root)
    files, refused = scan_images(base_root)
    candidates = files
    if job is not None:
        name = job_dir_name(job)
        if not (base_root / name).is_dir():
            jobs = sorted(p.name for p in base_root.iterdir() if p.is_dir() and p.name.startswith("job_"))
            raise UsageError(f"no {name} under {base_root}; jobs there: {', '.join(jobs) or 'none'}.")
        candidates = [f for f in files if f.rel.split(os.sep, 1)[0] == name]
    selected: set[Path] = set()
    if older_than_days is None and max_size_bytes is None:
        selected = {f.path for f in candidates}
    if older_than_days is not None:
        cutoff = (time.time() if now is None else now) - older_than_days * 86400
        selected |= {f.path for f in candidates if f.mtime < cutoff}
    if max_size_bytes is not None:
        total = sum(f.size for f in files if f.path not in selected)
        for f in candidates:  # oldest first
            if total <= max_size_bytes:
                break
            if f.path not in selected:
                selected.add(f.path)
                total -= f.size
    chosen = tuple(f for f in files if f.path in selected)
    kept = tuple(f for f in files if f.path not in selected)
    return CleanPlan(base_root, chosen, kept, tuple(refused))


def check_archive_dir(root: Path) -> Path:
    """``<root>/_archive``, refused when it is a symlink or not a directory (archives are written inside the root
    only)."""
    adir = root / ARCHIVE_DIR
    if adir.is_symlink():
        raise UsageError(
            f"{adir} is a symlink; archives are only written inside the images root. "
            f"Remove the link, or clean without --archive."
        )
    if adir.exists() and not adir.is_dir():
        raise UsageError(f"{adir} is not a directory; move it away, or clean without --archive.")
    return adir


def _archive(plan: CleanPlan) -> Path:
    adir = check_archive_dir(plan.root)
    adir.mkdir(exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = adir / f"images-{stamp}.tar.gz"
    n = 1
    while target.exists():
        n += 1
        target = adir / f"images-{stamp}-{n}.tar.gz"
    fd, tmp = tempfile.mkstemp(prefix=".archive.", suffix=".tmp", dir=adir)
    os.fchmod(fd, default_file_mode())
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for f in plan.selected:
                tar.add(f.path, arcname=f.rel, recursive=False)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def apply_clean(plan: CleanPlan, *, archive: bool = False, dry_run: bool = False) -> CleanResult:
    """Archive (optional) and delete the selected files, then remove directories left empty.

    Nothing is deleted unless the archive was written completely; a dry run touches nothing.
    """
    if archive:
        check_archive_dir(plan.root)  # before anything, dry run included
    if dry_run or not plan.selected:
        return CleanResult(plan, dry_run, tuple(f.rel for f in plan.selected), None, ())
    target = _archive(plan) if archive else None
    deleted = []
    for f in plan.selected:
        # Re-check right before unlinking: the tree may have changed since the scan.
        if f.path.is_symlink() or not _inside(f.path, plan.root):
            continue
        with contextlib.suppress(FileNotFoundError):
            f.path.unlink()
            deleted.append(f.rel)
    removed = []
    for dirpath, _dirs, _files in sorted(os.walk(plan.root, followlinks=False), key=lambda t: -len(t[0])):
        p = Path(dirpath)
        if p == plan.root or p == plan.root / ARCHIVE_DIR or p.is_symlink():
            continue
        with contextlib.suppress(OSError):
            p.rmdir()  # only succeeds when empty
            removed.append(str(p.relative_to(plan.root)))
    return CleanResult(plan, False, tuple(deleted), target, tuple(removed))
