"""Composable inference optimizations, each recorded as data and applied to a loaded diffusers pipeline.

An :class:`OptimizationSet` is one point of the optimization axis (``attn=eager+kv-cache+int8wo``).
:func:`supported` says, before anything is loaded, why a set cannot run on a device (missing package,
no GPU, incompatible combination); :func:`apply_optimizations` applies a supported set and returns an
:class:`AppliedOptimizations` handle that records per-option setup time and can undo the reversible
options. Options that mutate weights or module structure (see :data:`WEIGHT_MUTATING`) cannot be
undone: the pipeline cache must key on :attr:`OptimizationSet.weight_key` and load a fresh pipeline.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sdsuite.core.errors import SdsuiteError, UsageError, unknown_choice

ATTENTION_KERNELS: tuple[str, ...] = ("sdpa", "eager", "sliced", "xformers")
DEFAULT_ATTENTION = "sdpa"
OFFLOAD_MODES: tuple[str, ...] = ("model", "sequential")
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The torch.compile mode whose point is CUDA graphs: on the CPU it would silently measure plain "default".
_CUDAGRAPH_MODES = ("reduce-overhead",)
QUANTIZATIONS: dict[str, str] = {
    "int8wo": "int8 weight-only (torchao Int8WeightOnlyConfig)",
    "int8dq": "int8 dynamic activations + int8 weights (torchao Int8DynamicActivationInt8WeightConfig)",
    "int4wo": "int4 weight-only, group size 128 (torchao Int4WeightOnlyConfig; CUDA, bf16)",
    "fp8wo": "float8 weight-only (torchao Float8WeightOnlyConfig; GPU with compute capability >= 8.9)",
    "fp8dq": (
        "float8 dynamic activations + float8 weights (torchao Float8DynamicActivationFloat8WeightConfig; CC >= 8.9)"
    ),
}
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper: the first GPUs with fp8 tensor cores

# Fields whose application changes weights or module structure and cannot be undone in place.
WEIGHT_MUTATING: dict[str, str] = {
    "quantization": "replaces nn.Linear weights of the UNet with torchao quantized tensors",
    "fused_qkv": "adds fused to_qkv / to_kv projection weights to every attention module (UNet and VAE)",
    "offload": "installs accelerate hooks and moves weights between the CPU and the GPU",
    "drop_t5": "leaves the T5-XXL text encoder out (SD 3/3.5 encode the prompt with CLIP alone)",
}
# Short flag tokens of boolean fields, in id order.
_FLAGS: dict[str, str] = {
    "kv_cache": "kv-cache",
    "vae_slicing": "vae-slicing",
    "vae_tiling": "vae-tiling",
    "channels_last": "channels-last",
    "fused_qkv": "fused-qkv",
    "drop_t5": "no-t5",
}


class UnsupportedOptimization(SdsuiteError):
    """The option set cannot run with this device or these installed packages (a skip, not a failure)."""


@dataclass(frozen=True)
class OptimizationSet:
    """One point of the optimization axis; every field is plain data so it goes straight into records."""

    attention: str = DEFAULT_ATTENTION
    kv_cache: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    offload: str | None = None  # "model" | "sequential"
    compile_mode: str | None = None  # one of COMPILE_MODES; None: not compiled
    channels_last: bool = False
    fused_qkv: bool = False
    quantization: str | None = None  # one of QUANTIZATIONS
    drop_t5: bool = False  # SD 3/3.5 only: the pipeline is built or loaded without its T5 encoder

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KERNELS:
            raise unknown_choice("attention", self.attention, ATTENTION_KERNELS)
        if self.offload is not None and self.offload not in OFFLOAD_MODES:
            raise unknown_choice("offload mode", self.offload, OFFLOAD_MODES)
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            raise unknown_choice("torch.compile mode", self.compile_mode, COMPILE_MODES)
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise unknown_choice("quantization", self.quantization, QUANTIZATIONS)

    # -- identity ------------------------------------------------------------------------------

    def _tokens(self, fields: Iterable[str] | None = None) -> list[str]:
        keep = set(fields) if fields is not None else None

        def want(name: str) -> bool:
            return keep is None or name in keep

        out: list[str] = []
        if want("attention"):
            out.append(f"attn={self.attention}")
        for name, token in _FLAGS.items():
            if want(name) and getattr(self, name):
                out.append(token)
        if want("offload") and self.offload:
            out.append(f"{self.offload}-offload")
        if want("compile_mode") and self.compile_mode:
            out.append("compile" if self.compile_mode == "default" else f"compile={self.compile_mode}")
        if want("quantization") and self.quantization:
            out.append(self.quantization)
        return out

    @property
    def id(self) -> str:
        """Stable short id for case ids, e.g. ``attn=eager+kv-cache+vae-tiling+int8wo`` (parses back to the same
        set)."""
        return "+".join(self._tokens())

    @property
    def mutates_weights(self) -> bool:
        """True when applying the set changes weights/structure: undo is impossible, a fresh pipeline is needed."""
        return bool(self.weight_key)

    @property
    def weight_key(self) -> str:
        """The part of the id that changes the loaded object ('' when none): add it to the pipeline cache key."""
        return "+".join(self._tokens(WEIGHT_MUTATING))

    @property
    def is_default(self) -> bool:
        """True for the default set (stock diffusers SDPA, nothing else): case ids and records stay as they were."""
        return self == OptimizationSet()

    def weight_part(self) -> OptimizationSet:
        """Only the weight-mutating options (applied once when the pipeline is loaded and cached under
        ``weight_key``)."""
        return OptimizationSet(**{f: getattr(self, f) for f in WEIGHT_MUTATING})

    def reversible_part(self) -> OptimizationSet:
        """Everything but the weight-mutating options (applied per case and undone after it)."""
        return dataclasses.replace(
            self, **{f: OptimizationSet.__dataclass_fields__[f].default for f in WEIGHT_MUTATING}
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus the id and the weight key."""
        return {**dataclasses.asdict(self), "id": self.id, "weight_key": self.weight_key}

    def replace(self, **changes: Any) -> OptimizationSet:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def parse(cls, text: str) -> OptimizationSet:
        """Parse ``preset+token+...`` (the id syntax). Later tokens override earlier ones."""
        return parse_optimization_set(text)


PRESETS: dict[str, OptimizationSet] = {
    # Plain-math attention and nothing else: the reference every optimization is compared with.
    "baseline": OptimizationSet(attention="eager"),
    # Memory first: attention computed in slices, the VAE decodes one image / one tile at a time.
    # (CPU offload is left out so the preset runs everywhere; add `+model-offload` on a GPU.)
    "memory-saver": OptimizationSet(attention="sliced", vae_slicing=True, vae_tiling=True),
    # The diffusion-fast recipe (REFERENCE.md section 5): SDPA, fused QKV, channels_last,
    # torch.compile max-autotune and dynamic int8.
    "fast": OptimizationSet(
        attention="sdpa", fused_qkv=True, channels_last=True, compile_mode="max-autotune", quantization="int8dq"
    ),
}
BASELINE = PRESETS["baseline"]
DEFAULT = OptimizationSet()

_VALID_TOKENS = (
    [*PRESETS]
    + [f"attn={k}" for k in ATTENTION_KERNELS]
    + ["kv-cache[=on|off]"]
    + [t for k, t in _FLAGS.items() if k != "kv_cache"]
    + [f"{m}-offload" for m in OFFLOAD_MODES]
    + ["compile", *(f"compile={m}" for m in COMPILE_MODES)]
    + [*QUANTIZATIONS]
)
_ON_OFF = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}


def _parse_token(token: str, changes: dict[str, Any], text: str) -> None:
    name, eq, value = token.partition("=")
    name, value = name.strip().lower(), value.strip().lower()
    if not eq and name in PRESETS:
        changes.update({f.name: getattr(PRESETS[name], f.name) for f in dataclasses.fields(OptimizationSet)})
    elif name in ("attn", "attention"):
        if value not in ATTENTION_KERNELS:
            raise unknown_choice("attention", value, ATTENTION_KERNELS)
        changes["attention"] = value
    elif name in ("compile",):
        mode = value or "default"
        if mode in ("off", "none"):
            changes["compile_mode"] = None
        elif mode not in COMPILE_MODES:
            raise unknown_choice("torch.compile mode", mode, COMPILE_MODES)
        else:
            changes["compile_mode"] = mode
    elif name in ("quant", "quantization"):
        if value in ("off", "none"):
            changes["quantization"] = None
        elif value not in QUANTIZATIONS:
            raise unknown_choice("quantization", value, QUANTIZATIONS)
        else:
            changes["quantization"] = value
    elif not eq and name in QUANTIZATIONS:
        changes["quantization"] = name
    elif name in ("offload",) or (not eq and name.endswith("-offload") and name[: -len("-offload")] in OFFLOAD_MODES):
        mode = value if eq else name[: -len("-offload")]
        if mode in ("off", "none"):
            changes["offload"] = None
        elif mode not in OFFLOAD_MODES:
            raise unknown_choice("offload mode", mode, OFFLOAD_MODES)
        else:
            changes["offload"] = mode
    elif name in _FLAGS.values():
        fld = next(k for k, t in _FLAGS.items() if t == name)
        if eq and value not in _ON_OFF:
            raise UsageError(f"optimization {token!r} in {text!r}: {name} takes on or off, got {value!r}.")
        changes[fld] = _ON_OFF[value] if eq else True
    else:
        raise unknown_choice(f"optimization token (in {text!r})", token, _VALID_TOKENS)


def parse_optimization_set(text: str) -> OptimizationSet:
    """Parse one set: ``+``-joined presets and tokens (``fast+attn=eager``, ``attn=sliced+vae-tiling+int8wo``)."""
    tokens = [t.strip() for t in str(text).split("+") if t.strip()]
    if not tokens:
        raise UsageError(f"empty optimization set {text!r}; valid tokens: {', '.join(_VALID_TOKENS)}.")
    changes: dict[str, Any] = {}
    for tok in tokens:
        _parse_token(tok, changes, text)
    return OptimizationSet(**changes)


def parse_optimization_sets(values: Iterable[str] | str | None) -> list[OptimizationSet]:
    """Comma/repeat list of sets (``--opt baseline,fast``), deduplicated in order; empty -> ``[DEFAULT]``."""
    if values is None:
        return [DEFAULT]
    if isinstance(values, str):
        values = [values]
    out: list[OptimizationSet] = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                s = parse_optimization_set(part)
                if s not in out:
                    out.append(s)
    return out or [DEFAULT]


def _on_off(value: bool | str) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v not in _ON_OFF:
        raise unknown_choice("kv-cache value", v, ["on", "off"])
    return _ON_OFF[v]


# Flag spellings accepted besides the canonical names (``--quantize fp8`` is the dynamic fp8 scheme).
QUANTIZATION_ALIASES: dict[str, str] = {"fp8": "fp8dq"}
_OFF = ("none", "off")


def _axis(
    values: Iterable[str] | None,
    kind: str,
    choices: Iterable[str],
    aliases: dict[str, str] | None = None,
    can_be_off: bool = True,
) -> list[str | None] | None:
    """Validate one list axis (``None``: not given); ``none``/``off`` mean the option is not applied."""
    if values is None:
        return None
    choices = list(choices)
    out: list[str | None] = []
    for raw in values:
        v = str(raw).strip().lower()
        v = (aliases or {}).get(v, v)
        if v in _OFF and can_be_off:
            out.append(None)
        elif v in choices:
            out.append(v)
        else:
            raise unknown_choice(kind, v, [*choices, *(aliases or {}), *(["none"] if can_be_off else [])])
    return out


def option_grid(
    attention: Iterable[str] | None = None,
    kv_cache: Iterable[bool | str] | None = None,
    recipes: Iterable[str] | None = None,
    *,
    offload: Iterable[str] | None = None,
    compile_mode: Iterable[str] | None = None,
    quantization: Iterable[str] | None = None,
    vae_slicing: bool = False,
    vae_tiling: bool = False,
    channels_last: bool = False,
    fused_qkv: bool = False,
    drop_t5: bool = False,
) -> list[OptimizationSet]:
    """Cartesian product recipes x ``--attention`` x ``--kv-cache`` x offload x compile x quantization.

    A list axis that was given (not ``None``) overrides the recipe's own value; one that was not keeps
    it, so ``--recipe memory-saver`` alone keeps its sliced attention. ``none``/``off`` in a list axis
    switch that option off. The boolean switches turn an option on for every set (never off).
    Duplicates are dropped, order kept; unknown values raise UsageError listing the choices.
    """
    bases = [parse_optimization_set(r) for r in recipes] if recipes else [DEFAULT]
    attn = _axis(attention, "attention", ATTENTION_KERNELS, can_be_off=False)
    kvs = [_on_off(k) for k in kv_cache] if kv_cache is not None else None
    offs = _axis(offload, "offload mode", OFFLOAD_MODES)
    comps = _axis(compile_mode, "torch.compile mode", COMPILE_MODES)
    quants = _axis(quantization, "quantization", QUANTIZATIONS, QUANTIZATION_ALIASES)
    switches = {
        k: True
        for k, on in (
            ("vae_slicing", vae_slicing),
            ("vae_tiling", vae_tiling),
            ("channels_last", channels_last),
            ("fused_qkv", fused_qkv),
            ("drop_t5", drop_t5),
        )
        if on
    }
    out: list[OptimizationSet] = []
    for base in bases:
        for a, kv, off, comp, q in itertools.product(
            attn or [base.attention],
            kvs if kvs is not None else [base.kv_cache],
            offs if offs is not None else [base.offload],
            comps if comps is not None else [base.compile_mode],
            quants if quants is not None else [base.quantization],
        ):
            s = base.replace(attention=a, kv_cache=kv, offload=off, compile_mode=comp, quantization=q, **switches)
            if s not in out:
                out.append(s)
    return out


# -- what can run where ------------------------------------------------------------------------
