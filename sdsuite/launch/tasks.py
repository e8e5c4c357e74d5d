"""Split the points still to run into tasks: one per GPU, or one per (variant, frequency chunk)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sdsuite.errors import UsageError


@dataclass(frozen=True)
class PointRef:
    """A sweep point as a launcher needs it: identity key, readable id, variant and clock."""

    key: str
    case_id: str
    variant: str
    freq_mhz: int | None


@dataclass(frozen=True)
class TaskSpec:
    """One unit of work: the points one worker measures, in sweep order."""

    index: int
    points: tuple[PointRef, ...]
    gpu: int | None = None  # local launcher: the visible GPU it runs on

    @property
    def keys(self) -> tuple[str, ...]:
        """Point keys of this task."""
        return tuple(p.key for p in self.points)


def split_even(points: Sequence[PointRef], n: int) -> list[tuple[PointRef, ...]]:
    """``n`` contiguous slices of sizes differing by at most one (contiguous: each worker loads few pipelines, changes few clocks)."""
    if n < 1:
        raise UsageError(f"need at least one worker, got {n}.")
    base, extra = divmod(len(points), n)
    out, start = [], 0
    for i in range(n):
        size = base + (1 if i < extra else 0)
        out.append(tuple(points[start : start + size]))
        start += size
    return out


def tasks_per_gpu(points: Sequence[PointRef], gpus: Sequence[int]) -> list[TaskSpec]:
    """One task per GPU (empty GPUs get no task)."""
    pairs = [(gpu, chunk) for gpu, chunk in zip(gpus, split_even(points, len(gpus)), strict=True) if chunk]
    return [TaskSpec(i, chunk, gpu) for i, (gpu, chunk) in enumerate(pairs)]  # index = position: workers look tasks up by it


def tasks_per_chunk(points: Sequence[PointRef], points_per_task: int) -> list[TaskSpec]:
    """One task per (variant, chunk of at most ``points_per_task`` consecutive points): a task loads one variant."""
    if points_per_task < 1:
        raise UsageError(f"--points-per-task must be >= 1, got {points_per_task}.")
    by_variant: dict[str, list[PointRef]] = {}
    for p in points:
        by_variant.setdefault(p.variant, []).append(p)
    chunks = [tuple(ps[i : i + points_per_task]) for ps in by_variant.values() for i in range(0, len(ps), points_per_task)]
    return [TaskSpec(i, c) for i, c in enumerate(chunks)]
