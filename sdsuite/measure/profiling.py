"""Named profiling spans (load, text encode, denoise, decode, per-option setup) with time and memory,
and an optional torch.profiler trace.

Spans synchronize the device at their boundaries, so use them on a profiling run, not inside the
runner's measured window (whose Timeline deliberately avoids host syncs). Every span is also a
``torch.profiler.record_function`` range, so it shows up by name in a trace.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdsuite.core.denoiser import denoiser_attr
from sdsuite.core.errors import UsageError
from sdsuite.measure.meters.memory import PeakMemoryMeter
from sdsuite.measure.meters.timing import synchronize

# Stage names the runner and reports agree on.
LOAD, TEXT_ENCODE, DENOISE, DECODE = "load", "text_encode", "denoise", "decode"
SETUP_PREFIX = "setup:"


@dataclass(frozen=True)
class Span:
    """One closed span: times in seconds from the recorder's start, memory in bytes (None: not exposed)."""

    name: str
    start_s: float
    duration_s: float
    depth: int
    parent: str | None
    memory_peak_bytes: int | None
    memory_start_bytes: int | None
    memory_end_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass
class _Open:
    name: str
    t0: float
    mem0: int | None
    running_peak: int | None
    ctx: Any


def _current_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    from sdsuite.measure.envinfo import proc_status_bytes

    return proc_status_bytes("/proc/self/status", "VmRSS")


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class SpanRecorder:
    """Records nested named spans; ``with rec.span("denoise"): ...`` or ``begin``/``end`` for hook pairs.

    Peak memory per span: the device peak counter (CUDA allocator peak, or the process peak RSS on
    the CPU) is reset at every span start; the peak seen so far by the enclosing span is carried over
    first, so nested spans do not hide an outer span's peak.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    sync: bool = True
    spans: list[Span] = field(default_factory=list)
    _stack: list[_Open] = field(default_factory=list)
    _t0: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self._memory = PeakMemoryMeter(self.device)

    @property
    def memory_kind(self) -> str:
        """What the memory figures measure (``cuda_max_allocated`` or ``process_peak_rss``)."""
        return self._memory.kind

    def begin(self, name: str) -> None:
        """Open a span (closed by ``end(name)``, innermost first)."""
        if self.sync:
            synchronize(self.device)
        if self._stack:
            parent = self._stack[-1]
            parent.running_peak = _max(parent.running_peak, self._memory.peak())
        self._memory.reset()
        ctx = torch.profiler.record_function(name)
        ctx.__enter__()
        self._stack.append(_Open(name, time.perf_counter(), _current_memory(self.device), None, ctx))

    def end(self, name: str) -> Span:
        """Close the innermost span, which must be ``name``."""
        if not self._stack or self._stack[-1].name != name:
            open_name = self._stack[-1].name if self._stack else None
            raise UsageError(f"profiling span {name!r} ended while {open_name!r} is the innermost open span.")
        if self.sync:
            synchronize(self.device)
        t1 = time.perf_counter()
        top = self._stack.pop()
        top.ctx.__exit__(None, None, None)
        peak = _max(top.running_peak, self._memory.peak())
        if self._stack:
            self._stack[-1].running_peak = _max(self._stack[-1].running_peak, peak)
        span = Span(
            name=name,
            start_s=top.t0 - self._t0,
            duration_s=t1 - top.t0,
            depth=len(self._stack),
            parent=self._stack[-1].name if self._stack else None,
            memory_peak_bytes=peak,
            memory_start_bytes=top.mem0,
            memory_end_bytes=_current_memory(self.device),
        )
        self.spans.append(span)
        return span

    def is_open(self, name: str) -> bool:
        """True while a span of this name is open."""
        return any(o.name == name for o in self._stack)

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        """Context manager around ``begin``/``end``; the span is closed even when the body raises."""
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def add(self, name: str, duration_s: float, parent: str | None = None) -> Span:
        """Record a span measured elsewhere (e.g. per-option setup times): no memory figures."""
        span = Span(
            name,
            time.perf_counter() - self._t0 - duration_s,
            float(duration_s),
            0 if parent is None else 1,
            parent,
            None,
            None,
            None,
        )
        self.spans.append(span)
        return span

    def add_setup(self, setup_s: Mapping[str, float]) -> None:
        """Record per-option setup times (``AppliedOptimizations.setup_s``) as ``setup:<option>`` spans."""
        for name, seconds in setup_s.items():
            self.add(SETUP_PREFIX + name, seconds)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per name: count, total and max seconds, largest peak memory."""
        out: dict[str, dict[str, Any]] = {}
        for s in self.spans:
            agg = out.setdefault(s.name, {"count": 0, "total_s": 0.0, "max_s": 0.0, "memory_peak_bytes": None})
            agg["count"] += 1
            agg["total_s"] += s.duration_s
            agg["max_s"] = max(agg["max_s"], s.duration_s)
            agg["memory_peak_bytes"] = _max(agg["memory_peak_bytes"], s.memory_peak_bytes)
        return out

    def to_record(self) -> dict[str, Any]:
        """JSON-ready: the spans in closing order, the per-name summary and the memory kind."""
        return {
            "memory_kind": self.memory_kind,
            "memory_note": self._memory.note,
            "spans": [s.to_dict() for s in self.spans],
            "summary": self.summary(),
        }


@contextlib.contextmanager
def instrument_pipeline(pipe, recorder: SpanRecorder, per_step: bool = False) -> Iterator[SpanRecorder]:
    """Record ``text_encode``, ``denoise`` (first UNet call to the start of decoding) and ``decode`` spans of pipeline
    calls.

    With ``per_step`` every UNet evaluation is a nested ``unet`` span (``transformer`` for a DiT); the DiT pipelines'
    CLIP and T5 encoders get nested ``text_encode:clip`` and ``text_encode:t5`` spans. Wrappers are removed on exit.
    """
    net_name = denoiser_attr(pipe)
    unet = getattr(pipe, net_name)
    had_encode = "encode_prompt" in vars(pipe)
    encode = pipe.encode_prompt
    nested = [m for m in ("_get_clip_prompt_embeds", "_get_t5_prompt_embeds") if hasattr(pipe, m)]
    saved_nested = {m: (m in vars(pipe), getattr(pipe, m)) for m in nested}

    def nested_span(fn, name):
        def timed(*a, **k):
            with recorder.span(name):
                return fn(*a, **k)

        return timed

    for m in nested:
        setattr(pipe, m, nested_span(saved_nested[m][1], TEXT_ENCODE + (":clip" if "clip" in m else ":t5")))
    had_decode = "decode" in vars(pipe.vae)
    decode = pipe.vae.decode

    def timed_encode(*a, **k):
        with recorder.span(TEXT_ENCODE):
            return encode(*a, **k)

    def timed_decode(*a, **k):
        if recorder.is_open(DENOISE):
            recorder.end(DENOISE)
        with recorder.span(DECODE):
            return decode(*a, **k)

    def pre_hook(module, args):
        if not recorder.is_open(DENOISE):
            recorder.begin(DENOISE)
        if per_step:
            recorder.begin(net_name)

    def post_hook(module, args, output):
        if per_step:
            recorder.end(net_name)

    handles = [unet.register_forward_pre_hook(pre_hook), unet.register_forward_hook(post_hook)]
    pipe.encode_prompt = timed_encode
    pipe.vae.decode = timed_decode
    try:
        yield recorder
    finally:
        for h in handles:
            h.remove()
        if had_encode:
            pipe.encode_prompt = encode
        else:
            del pipe.encode_prompt
        if had_decode:
            pipe.vae.decode = decode
        else:
            del pipe.vae.decode
        for m, (had, fn) in saved_nested.items():
            if had:
                setattr(pipe, m, fn)
            else:
                delattr(pipe, m)
        if recorder.is_open(DENOISE):  # output_type="latent": no decode closed it
            recorder.end(DENOISE)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("_") or "trace"


@dataclass
class TraceResult:
    """Where a trace went; ``path`` is set once the profiler has exported it."""

    path: Path | None = None
    table: str | None = None


@contextlib.contextmanager
def trace(
    trace_dir: str | Path | None,
    name: str,
    device: torch.device | str = "cpu",
    record_shapes: bool = True,
    profile_memory: bool = True,
) -> Iterator[TraceResult]:
    """torch.profiler around the body, exported as ``<trace_dir>/<name>.trace.json`` (Chrome/Perfetto format).

    ``trace_dir=None`` profiles nothing (so callers can always wrap). CUDA activity is recorded when
    ``device`` is a GPU. ``name`` is sanitized into a file name (case ids hold slashes).
    """
    result = TraceResult()
    if trace_dir is None:
        yield result
        return
    out_dir = Path(trace_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"trace directory {out_dir} cannot be created ({exc}); pass a writable --trace directory."
        ) from None
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(
        activities=activities, record_shapes=record_shapes, profile_memory=profile_memory
    ) as prof:
        yield result
    path = out_dir / f"{_safe_name(name)}.trace.json"
    prof.export_chrome_trace(str(path))
    result.path = path
    result.table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
