"""Energy metrics of a case from its measured windows: J per call/image/step, power, EDP, ED2P, clocks.

A window may hold several generations (the runner repeats the call until the window is long enough
for the energy counter); energy and time are divided by that count, so every metric here is per
pipeline call (or per image / per step) and honest about it.
"""

from __future__ import annotations

from sdsuite.core.metrics import samples_metric as _metric


def energy_metrics(windows: list[dict], batch_size: int, steps: int) -> dict[str, dict]:
    """Metrics from available energy windows (each may carry ``generations``; default 1)."""
    gens = [max(int(w.get("generations", 1)), 1) for w in windows]
    e_call = [w["energy_j"] / g for w, g in zip(windows, gens, strict=True)]
    t_call = [w["duration_s"] / g for w, g in zip(windows, gens, strict=True)]
    common = {"source": windows[0].get("source"), "simulated": bool(windows[0].get("simulated", False))}
    # Each window's measurement bound (tick timing, counter resolution, edges), per pipeline call like the energy.
    bounds = [w.get("energy_uncertainty_j") for w in windows]
    bound = (
        {
            "uncertainty_j": [b / g for b, g in zip(bounds, gens, strict=True)],
            "uncertainty_rel_max": max(
                b / w["energy_j"] for b, w in zip(bounds, windows, strict=True) if w["energy_j"] > 0
            )
            if any(w["energy_j"] > 0 for w in windows)
            else None,
        }
        if all(b is not None for b in bounds)
        else {"uncertainty_j": None, "uncertainty_note": "no measurement bound recorded for these windows"}
    )
    m: dict[str, dict] = {
        "energy_j": _metric(e_call, "J", per="pipeline call", generations_per_window=gens, **bound, **common),
        "energy_per_image_j": _metric(
            [e / batch_size for e in e_call], "J", uncertainty_rel_max=bound.get("uncertainty_rel_max"), **common
        ),
        "energy_per_step_j": _metric(
            [e / steps for e in e_call], "J", note="whole call (text encoding and VAE included) / steps", **common
        ),
        "avg_power_w": _metric([e / t for e, t in zip(e_call, t_call, strict=True) if t > 0], "W", **common),
        # EDP/ED2P of one pipeline call: the quantities DVFS studies minimise.
        "edp_js": _metric([e * t for e, t in zip(e_call, t_call, strict=True)], "J*s", per="pipeline call"),
        "ed2p_js2": _metric([e * t * t for e, t in zip(e_call, t_call, strict=True)], "J*s^2", per="pipeline call"),
    }
    peaks = [w["peak_power_w"] for w in windows if w.get("peak_power_w") is not None]
    if peaks:
        m["peak_power_w"] = _metric(peaks, "W", note="highest polled reading (NVML power is often a ~1 s average)")
    for name in ("sm_clock_mhz", "mem_clock_mhz"):
        means = [w[name]["mean"] for w in windows if (w.get(name) or {}).get("mean") is not None]
        if means:
            lo = min(w[name]["min"] for w in windows if w[name].get("min") is not None)
            hi = max(w[name]["max"] for w in windows if w[name].get("max") is not None)
            m[name] = _metric(means, "MHz", observed_min=lo, observed_max=hi, note="mean observed clock per window")
    reasons = sorted({r for w in windows for r in (w.get("throttle_reasons") or [])})
    short = sum(1 for w in windows if w.get("short_window"))
    m["energy_j"]["throttle_reasons"] = reasons
    m["energy_j"]["short_windows"] = short
    temps = [w.get("temperature_c") or {} for w in windows]
    if all(t.get("start") is not None and t.get("end") is not None for t in temps):
        m["temperature_c"] = _metric(
            [t["end"] for t in temps], "C", start=[t["start"] for t in temps], note="at the end of each window"
        )
    return m
