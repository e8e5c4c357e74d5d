"""Run a list of cases into a results directory: the loop behind ``sdsuite run`` (and sweeps)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sdsuite.gpu.clocks import ClockSession
from sdsuite.measure.context import RunContext
from sdsuite.measure.envinfo import environment
from sdsuite.measure.runner import measure_case
from sdsuite.spec.case import Case
from sdsuite.store.results import ResultsDir, check_writable_dir


def order_for_loading(cases: Sequence[Case]) -> list[Case]:
    """Group cases that share a loaded pipeline so each pipeline loads once, and within a pipeline
    the cases of one frequency, so clocks change once per (pipeline, frequency) (stable otherwise).
    Then cases sharing weight-mutating options (one cached pipeline each), reference-set cases
    (sdsuite.quality.effects.REFERENCE) first, so the others can report their effects against them."""
    from sdsuite.quality.effects import is_reference

    first_seen: dict[tuple[str, str], int] = {}
    freq_rank: dict[tuple, int] = {}  # (memory clock, clock, power limit): one change per setting
    weight_rank: dict[str, int] = {"": 0}  # the unmodified pipeline (and the reference set) first
    for i, c in enumerate(cases):
        first_seen.setdefault((c.variant, c.precision), i)
        freq_rank.setdefault((c.mem_freq_mhz, c.freq_mhz, c.power_limit_w), len(freq_rank))
        weight_rank.setdefault(c.options.weight_key, len(weight_rank))
    return sorted(
        cases,
        key=lambda c: (
            first_seen[(c.variant, c.precision)],
            freq_rank[(c.mem_freq_mhz, c.freq_mhz, c.power_limit_w)],
            weight_rank[c.options.weight_key],
            not is_reference(c),
        ),
    )


def run_grid(
    cases: Sequence[Case],
    ctx: RunContext,
    out: str,
    *,
    on_case_start: Callable[[Case], None] | None = None,
    on_run: Callable[[int], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
    annotate: Callable[[Case, dict], None] | None = None,
) -> list[dict]:
    """Measure every case in ``ctx``, appending each record as soon as it is done (Ctrl-C keeps finished ones).

    ``ctx.clock_session`` locks each case's frequency (once per change) and always restores the clocks;
    ``annotate`` adds fields to a record before it is written (a launched task's point key).
    """
    results = ResultsDir(check_writable_dir(out))
    env = environment()
    env["device"] = str(ctx.device)
    results.write_run_info(ctx.run_id, env)
    ctx = ctx.replace(env_fingerprint=env["fingerprint"])
    records = []
    with ctx.clock_session or ClockSession(None) as clocks:
        for case in order_for_loading(cases):
            if on_case_start:
                on_case_start(case)
            point = clocks.point(case.freq_mhz, case.power_limit_w, case.mem_freq_mhz)
            rec = measure_case(case, ctx, on_run=on_run)
            point.annotate(rec)
            if annotate:
                annotate(case, rec)
            results.append(rec)
            records.append(rec)
            if on_record:
                on_record(rec)
    return records
