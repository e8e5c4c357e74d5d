"""Split the points still to run into tasks: one per GPU, or one per (variant, frequency chunk).

Points of one group (the same case with different optimization sets) stay in one task: the option
effects of a case are formed against its reference set in the same process (sdsuite.quality.effects).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sdsuite.core.errors import UsageError


@dataclass(frozen=True)
class PointRef:
    """A sweep point as a launcher needs it: identity key, readable id, variant and clock."""

    key: str
    case_id: str
    variant: str
    freq_mhz: int | None
    group: str | None = None  # points sharing a group run in one task (None: a group of its own)


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


def _groups(points: Sequence[PointRef]) -> list[list[PointRef]]:
    """Points by group, groups in order of first appearance, points in their given order."""
    groups: dict[object, list[PointRef]] = {}
    for i, p in enumerate(points):
        groups.setdefault(p.group if p.group is not None else ("point", i), []).append(p)
    return list(groups.values())


def _split_groups(groups: Sequence[Sequence[PointRef]], n: int) -> list[tuple[PointRef, ...]]:
    """``n`` contiguous runs of whole groups, as even as the groups allow: the split with the least sum of squared part
    sizes (a GPU stays idle only when there are fewer groups than GPUs); greedy where that search would be slow."""
    if n < 1:
        raise UsageError(f"need at least one worker, got {n}.")
    sizes = [len(g) for g in groups]
    bounds = _even_bounds(sizes, n) if len(sizes) ** 2 * n <= 2_000_000 else _greedy_bounds(sizes, n)
    return [tuple(p for g in groups[a:b] for p in g) for a, b in zip(bounds, bounds[1:], strict=False)]


def _even_bounds(sizes: Sequence[int], n: int) -> list[int]:
    """Group indices 0 = b0 <= b1 <= ... <= bn = len(sizes) minimising the sum of squared part sizes (dynamic
    programming)."""
    m = len(sizes)
    prefix = [0]
    for x in sizes:
        prefix.append(prefix[-1] + x)
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    cut = [[0] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for k in range(1, n + 1):
        for i in range(m + 1):
            for j in range(i + 1):
                c = cost[k - 1][j] + (prefix[i] - prefix[j]) ** 2
                if c <= cost[k][i]:  # ties: the later cut, so earlier parts take the remainder
                    cost[k][i], cut[k][i] = c, j
    bounds, i = [m], m
    for k in range(n, 0, -1):
        i = cut[k][i]
        bounds.append(i)
    return bounds[::-1]


def _greedy_bounds(sizes: Sequence[int], n: int) -> list[int]:
    """Move to the next part when adding a group would take the running total further from the part's target."""
    total, done, k, bounds = sum(sizes), 0, 0, [0]
    for i, x in enumerate(sizes):
        target = total * (k + 1) / n
        if i > bounds[-1] and k < n - 1 and abs(done + x - target) > abs(done - target):
            bounds.append(i)
            k += 1
        done += x
    return bounds + [len(sizes)] * (n + 1 - len(bounds))


def split_even(points: Sequence[PointRef], n: int) -> list[tuple[PointRef, ...]]:
    """``n`` contiguous slices of sizes differing by at most one where groups allow (contiguous: each worker loads
    few pipelines, changes few clocks); a group is never split."""
    return _split_groups(_groups(points), n)


def tasks_per_gpu(points: Sequence[PointRef], gpus: Sequence[int]) -> list[TaskSpec]:
    """One task per GPU (empty GPUs get no task)."""
    pairs = [(gpu, chunk) for gpu, chunk in zip(gpus, split_even(points, len(gpus)), strict=True) if chunk]
    return [
        TaskSpec(i, chunk, gpu) for i, (gpu, chunk) in enumerate(pairs)
    ]  # index = position: workers look tasks up by it


def tasks_per_chunk(points: Sequence[PointRef], points_per_task: int) -> list[TaskSpec]:
    """One task per (variant, chunk of at most ``points_per_task`` points): a task loads one variant. Whole groups
    only: a group larger than ``points_per_task`` gets a task of its own."""
    if points_per_task < 1:
        raise UsageError(f"--points-per-task must be >= 1, got {points_per_task}.")
    by_variant: dict[str, list[list[PointRef]]] = {}
    for g in _groups(points):
        by_variant.setdefault(g[0].variant, []).append(g)
    chunks: list[tuple[PointRef, ...]] = []
    for groups in by_variant.values():
        current: list[PointRef] = []
        for g in groups:
            if current and len(current) + len(g) > points_per_task:
                chunks.append(tuple(current))
                current = []
            current.extend(g)
        if current:
            chunks.append(tuple(current))
    return [TaskSpec(i, c) for i, c in enumerate(chunks)]
