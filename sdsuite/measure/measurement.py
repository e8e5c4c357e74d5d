"""One resolved case measured on a loaded pipeline: fixed latents, the timed call, per-run samples, metrics.

Each run is one device-synchronized window with per-step marks (a step callback), stage marks (prompt
encoding, VAE decode), peak memory and an energy window around it. sdsuite.measure.runner drives it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from sdsuite.core.denoiser import denoiser
from sdsuite.core.metrics import samples_metric, unavailable_metric, value_metric
from sdsuite.gpu.derived import energy_metrics
from sdsuite.measure.meters.energy import EnergyMeter
from sdsuite.measure.meters.memory import PeakMemoryMeter
from sdsuite.measure.meters.timing import Timeline, synchronize
from sdsuite.pipelines.cache import LoadedPipeline
from sdsuite.pipelines.dit import initial_latents, t5_attribute
from sdsuite.pipelines.registry import get_variant
from sdsuite.spec.case import Case
from sdsuite.spec.tasks import TEXT_TO_IMAGE, task_call_kwargs

BLANK_STD = 1e-4  # an image whose pixel std is below this is constant (blank)
# A window may grow to this many times --min-energy-window while its counter ticks do not yet time its energy to 0.5%.
MAX_WINDOW_FACTOR = 4


def image_fingerprint(images: torch.Tensor) -> dict:
    """Mean/std of pixels (0..1) and NaN/inf/blank flags of a batch of output images."""
    x = images.detach().float()
    finite = torch.isfinite(x)
    nan = bool(torch.isnan(x).any())
    inf = bool(torch.isinf(x).any())
    xf = x[finite] if not bool(finite.all()) else x
    mean = float(xf.mean()) if xf.numel() else float("nan")
    std = float(xf.std()) if xf.numel() > 1 else 0.0
    return {
        "shape": list(x.shape),
        "mean": mean,
        "std": std,
        "channel_means": [float(c) for c in x.mean(dim=(0, 2, 3))] if x.dim() == 4 else [],
        "has_nan": nan,
        "has_inf": inf,
        "blank": (not nan and not inf and std < BLANK_STD),
    }


def _stage_total(marks: list[tuple[str, float]], name: str) -> float | None:
    """Total seconds between ``<name>_start`` and ``<name>_end`` marks (a stage may run several times per call)."""
    total, opened, seen = 0.0, None, False
    for mark, t in marks:
        if mark == name + "_start":
            opened = t
        elif mark == name + "_end" and opened is not None:
            total, opened, seen = total + t - opened, None, True
    return total if seen else None


@dataclass
class Sample:
    """One measured run."""

    wall_s: float
    step_s: list[float]
    text_encode_s: float | None
    denoise_s: float | None
    vae_decode_s: float | None
    peak_memory_bytes: int | None
    energy: dict
    text_encode_clip_s: float | None = None  # DiT variants: the CLIP towers' share of text_encode_s
    text_encode_t5_s: float | None = None  # DiT variants: the T5 encoder's share (None when it was dropped)


@dataclass
class CaseMeasurement:
    """Measures one resolved case on a loaded pipeline. Use ``with`` so the hooks are removed."""

    case: Case
    loaded: LoadedPipeline
    device: torch.device
    energy_meter: EnergyMeter
    samples: list[Sample] = field(default_factory=list)
    first_call_s: float | None = None
    _timeline: Timeline | None = None
    _reference_image: torch.Tensor | None = None
    _last_images: torch.Tensor | None = None
    _deterministic: bool = True
    min_window_s: float = 0.0
    pipe: Any = None  # what is called: the loaded pipeline, or a task pipeline sharing its modules (sdsuite.spec.tasks)

    def __post_init__(self) -> None:
        if self.pipe is None:
            self.pipe = self.loaded.pipe
        self.loaded.set_scheduler(self.case.scheduler)
        if self.pipe is not self.loaded.pipe:  # a from_pipe task pipeline holds its own scheduler reference
            self.pipe.scheduler = self.loaded.pipe.scheduler
        pipe = self.pipe
        # Fixed latents drawn on the CPU from the case seed (as MLPerf does), so a case gives the
        # same starting point on every device.
        self.latents = initial_latents(pipe, self.case.num_images, self.case.height, self.case.width, self.case.seed)
        self.latents = self.latents.to(self.device, denoiser(pipe).dtype)
        self._memory = PeakMemoryMeter(self.device)
        self._timeline = Timeline(self.device)

    # -- the call ------------------------------------------------------------------------------

    def call_kwargs(self) -> dict[str, Any]:
        """Arguments of one pipeline call for this case (fresh CPU generator for stochastic samplers)."""
        c = self.case
        kwargs = {
            "prompt": [c.prompt] * c.batch_size,
            "negative_prompt": [c.negative_prompt] * c.batch_size if c.negative_prompt else None,
            "height": c.height,
            "width": c.width,
            "num_inference_steps": c.steps,
            "guidance_scale": c.guidance_scale,
            "latents": self.latents,
            "generator": torch.Generator("cpu").manual_seed(c.seed),
            "output_type": "pt",
        }
        if c.images_per_prompt != 1:
            kwargs["num_images_per_prompt"] = c.images_per_prompt
        max_seq = get_variant(c.variant).max_sequence_length
        if max_seq is not None:  # the DiT pipelines' T5 token count
            kwargs["max_sequence_length"] = max_seq
        if c.task != TEXT_TO_IMAGE:  # deterministic input image (and mask) from the case seed; latents dropped
            kwargs = task_call_kwargs(self.pipe, c.task, kwargs, strength=c.strength, image_seed=c.seed)
        return kwargs

    def _on_step_end(self, pipe, step, timestep, callback_kwargs):
        self._timeline.mark("step")
        return callback_kwargs

    def __enter__(self) -> CaseMeasurement:
        pipe = self.pipe
        timeline = self._timeline
        encode, decode = pipe.encode_prompt, pipe.vae.decode

        def timed_encode(*a, **k):
            timeline.mark("encode_start")
            out = encode(*a, **k)
            timeline.mark("encode_end")
            return out

        def timed_decode(*a, **k):
            timeline.mark("decode_start")
            out = decode(*a, **k)
            timeline.mark("decode_end")
            return out

        def stage(fn, name):
            def timed(*a, **k):
                timeline.mark(name + "_start")
                out = fn(*a, **k)
                timeline.mark(name + "_end")
                return out

            return timed

        wrapped = [(pipe, "encode_prompt", timed_encode), (pipe.vae, "decode", timed_decode)]
        # The DiT pipelines encode with CLIP and T5 in separate methods: each gets its own stage.
        for method, name in (("_get_clip_prompt_embeds", "clip"), ("_get_t5_prompt_embeds", "t5")):
            if hasattr(pipe, method):
                wrapped.append((pipe, method, stage(getattr(pipe, method), name)))
        # Instance attributes shadow the methods; whatever was there before is put back on exit.
        self._saved = [(obj, name, vars(obj).get(name)) for obj, name, _ in wrapped]
        for obj, name, fn in wrapped:
            setattr(obj, name, fn)
        return self

    def __exit__(self, *exc) -> None:
        for obj, name, previous in getattr(self, "_saved", []):
            if previous is None:
                vars(obj).pop(name, None)
            else:
                setattr(obj, name, previous)
        self._saved = []

    def generate(self) -> torch.Tensor:
        """One generation with the case's fixed inputs; returns the images (N, 3, H, W) in 0..1."""
        return self.pipe(
            **self.call_kwargs(), callback_on_step_end=self._on_step_end, callback_on_step_end_tensor_inputs=[]
        ).images

    # -- phases --------------------------------------------------------------------------------

    def first_call(self) -> float:
        """Time the first call of this case (includes lazy initialisation, cuDNN autotuning...)."""
        synchronize(self.device)
        t0 = time.perf_counter()
        self.generate()
        synchronize(self.device)
        self.first_call_s = time.perf_counter() - t0
        return self.first_call_s

    def warmup(self, n: int) -> None:
        """Untimed runs before measuring."""
        for _ in range(n):
            self.generate()
        synchronize(self.device)

    def measure_once(self) -> Sample:
        """One measured window: sync, energy begin, run, sync, energy end; bookkeeping after."""
        tl = self._timeline
        self._memory.reset()
        # The energy window opens first (its counter and sensor reads stay outside the timed region), then the timeline.
        synchronize(self.device)
        self.energy_meter.begin()
        tl.start()
        images = self.generate()
        tl.stop()
        marks, wall_s = tl.marks(), tl.wall_s
        # The energy counter updates only every ~100 ms: repeat the same generation inside the window
        # until it lasts min_window_s (and its counter ticks time it to 0.5%), and let the metrics divide by the
        # count. The sample's timing stays the first call's; the spread of every call's wall time is kept with the
        # window (generation_s).
        calls_s = [wall_s]
        precise = getattr(self.energy_meter, "precise_enough", lambda: True)
        while getattr(self.energy_meter, "available", False) and (
            sum(calls_s) < self.min_window_s
            or (self.min_window_s > 0 and not precise() and sum(calls_s) < MAX_WINDOW_FACTOR * self.min_window_s)
        ):
            tl.start()
            self.generate()
            tl.stop()
            calls_s.append(tl.wall_s)
        energy = {**self.energy_meter.end(), "generations": len(calls_s)}
        if len(calls_s) > 1:  # a summary, not the list: a fast GPU repeats a short call hundreds of times per window
            ordered = sorted(calls_s)
            energy["generation_s"] = {
                "n": len(ordered),
                "median": statistics.median(ordered),
                "min": ordered[0],
                "max": ordered[-1],
            }
        sample = self._sample_from(marks, wall_s, energy)
        self.samples.append(sample)
        if self._reference_image is None:
            self._reference_image = images
        elif self._deterministic and not torch.equal(images, self._reference_image):
            self._deterministic = False
        self._last_images = images
        return sample

    def _sample_from(self, marks: list[tuple[str, float]], wall_s: float, energy: dict) -> Sample:
        at = {}
        steps = []
        for name, t in marks:
            if name == "step":
                steps.append(t)
            else:
                at.setdefault(name, t)
        enc_end = at.get("encode_end")
        step_s = [b - a for a, b in zip([enc_end if enc_end is not None else 0.0, *steps], steps, strict=False)]
        denoise = (steps[-1] - enc_end) if steps and enc_end is not None else None
        text = (enc_end - at["encode_start"]) if "encode_start" in at and enc_end is not None else None
        dec = (at["decode_end"] - at["decode_start"]) if "decode_start" in at and "decode_end" in at else None
        clip, t5 = _stage_total(marks, "clip"), _stage_total(marks, "t5")
        if t5 is not None and getattr(self.pipe, t5_attribute(self.pipe) or "", None) is None:
            t5 = None  # SD 3 without its T5 encoder: the pipeline only fills zeros, there is no encoder to time
        return Sample(wall_s, step_s, text, denoise, dec, self._memory.peak(), energy, clip, t5)

    def last_images(self) -> torch.Tensor | None:
        """Images of the last measured run."""
        return self._last_images

    def metrics(self) -> dict[str, dict]:
        """All metrics of the measured runs so far."""
        s = self.samples
        b = self.case.num_images
        m: dict[str, dict] = {
            "latency_s": samples_metric([x.wall_s for x in s], "s"),
            "images_per_s": samples_metric([b / x.wall_s for x in s], "images/s"),
            "step_latency_s": samples_metric(
                [d for x in s for d in x.step_s], "s", per_run_steps=len(s[0].step_s) if s else 0
            ),
        }
        for name in ("text_encode_s", "denoise_s", "vae_decode_s"):
            vals = [getattr(x, name) for x in s]
            m[name] = (
                samples_metric(vals, "s")
                if all(v is not None for v in vals)
                else unavailable_metric("s", "stage not observed")
            )
        if t5_attribute(self.pipe) is not None:  # the DiT pipelines: CLIP and T5 encoding apart
            for name, reason in (
                ("text_encode_clip_s", "stage not observed"),
                ("text_encode_t5_s", "no T5 encoder in this pipeline (dropped: --drop-t5)"),
            ):
                vals = [getattr(x, name) for x in s]
                m[name] = (
                    samples_metric(vals, "s") if vals and all(v is not None for v in vals) else
                    unavailable_metric("s", reason)
                )  # fmt: skip
        mems = [x.peak_memory_bytes for x in s]
        if all(v is not None for v in mems):
            m["peak_memory_bytes"] = samples_metric(mems, "B", kind=self._memory.kind, note=self._memory.note)
        else:
            m["peak_memory_bytes"] = unavailable_metric("B", "peak memory is not exposed on this platform")
        windows = [x.energy for x in s]
        if windows and all(w.get("available") for w in windows):
            m.update(energy_metrics(windows, b, self.case.steps))
        else:
            reason = next(
                (w.get("reason") for w in windows if not w.get("available")), getattr(self.energy_meter, "reason", None)
            )
            m["energy_j"] = unavailable_metric("J", reason or "no energy meter")
            m["energy_per_image_j"] = unavailable_metric("J", reason or "no energy meter")
        m["load_s"] = value_metric(self.loaded.load_s, "s", cached=self.loaded.uses > 1)
        if self.first_call_s is not None:
            m["first_call_s"] = value_metric(self.first_call_s, "s")
        return m

    def image_summary(self) -> dict | None:
        """Fingerprint of the last images plus whether all measured runs gave identical images."""
        if self._last_images is None:
            return None
        fp = image_fingerprint(self._last_images)
        fp["deterministic"] = self._deterministic
        return fp
