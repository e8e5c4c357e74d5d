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
import importlib.util
import itertools
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sdsuite.errors import SdsuiteError, UsageError, unknown_choice

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
    "fp8dq": "float8 dynamic activations + float8 weights (torchao Float8DynamicActivationFloat8WeightConfig; CC >= 8.9)",
}
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper: the first GPUs with fp8 tensor cores

# Fields whose application changes weights or module structure and cannot be undone in place.
WEIGHT_MUTATING: dict[str, str] = {
    "quantization": "replaces nn.Linear weights of the UNet with torchao quantized tensors",
    "fused_qkv": "adds fused to_qkv / to_kv projection weights to every attention module (UNet and VAE)",
    "offload": "installs accelerate hooks and moves weights between the CPU and the GPU",
}
# Short flag tokens of boolean fields, in id order.
_FLAGS: dict[str, str] = {
    "kv_cache": "kv-cache",
    "vae_slicing": "vae-slicing",
    "vae_tiling": "vae-tiling",
    "channels_last": "channels-last",
    "fused_qkv": "fused-qkv",
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
        """Stable short id for case ids, e.g. ``attn=eager+kv-cache+vae-tiling+int8wo`` (parses back to the same set)."""
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
        """Only the weight-mutating options (applied once when the pipeline is loaded and cached under ``weight_key``)."""
        return OptimizationSet(**{f: getattr(self, f) for f in WEIGHT_MUTATING})

    def reversible_part(self) -> OptimizationSet:
        """Everything but the weight-mutating options (applied per case and undone after it)."""
        return dataclasses.replace(self, **{f: OptimizationSet.__dataclass_fields__[f].default for f in WEIGHT_MUTATING})

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
    "fast": OptimizationSet(attention="sdpa", fused_qkv=True, channels_last=True, compile_mode="max-autotune", quantization="int8dq"),
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
    values: Iterable[str] | None, kind: str, choices: Iterable[str], aliases: dict[str, str] | None = None, can_be_off: bool = True
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
        for k, on in (("vae_slicing", vae_slicing), ("vae_tiling", vae_tiling), ("channels_last", channels_last), ("fused_qkv", fused_qkv))
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


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cxx_compiler() -> str | None:
    # Inductor's CPU backend calls $CXX or the first of these; importing inductor to ask costs seconds.
    return next((p for p in (os.environ.get("CXX"), "g++", "c++", "clang++") if p and shutil.which(p)), None)


def supported(opts: OptimizationSet, device: torch.device | str, dtype: torch.dtype | None = None) -> str | None:
    """None when ``opts`` can run on ``device`` (in ``dtype``) with the installed packages, else the skip reason."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    gpu = torch.cuda.get_device_name(device) if cuda else device.type
    if opts.attention == "xformers":
        if not _has("xformers"):
            return "attention xformers: xformers is not installed (pip install 'sdsuite[xformers]', matching your torch build)"
        if not cuda:
            return f"attention xformers: xformers memory-efficient attention needs a CUDA GPU (running on {gpu})"
    if opts.offload is not None:
        if not _has("accelerate"):
            return f"{opts.offload} CPU offload needs accelerate (pip install accelerate)"
        if not cuda:
            return f"{opts.offload} CPU offload moves weights between a GPU and the CPU: it needs a CUDA device (running on {gpu})"
    if opts.compile_mode is not None:
        if opts.kv_cache:
            return "torch.compile with kv-cache: the K/V cache keys on tensor identity between steps, which dynamo guards would recompile on every generation"
        if opts.offload == "sequential":
            return "torch.compile with sequential CPU offload: accelerate's per-module hooks break the compiled graph"
        if not cuda and opts.compile_mode in _CUDAGRAPH_MODES:
            return f"torch.compile mode {opts.compile_mode!r} captures CUDA graphs: it needs a CUDA GPU (running on {gpu}); use compile=default on the CPU"
        if cuda and not _has("triton"):
            return "torch.compile on a GPU needs triton (it ships with the CUDA build of torch)"
        if not cuda and _cxx_compiler() is None:
            return "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH"
    if opts.quantization is not None:
        if not _has("torchao"):
            return f"quantization {opts.quantization}: torchao is not installed (pip install 'sdsuite[quant]')"
        if opts.offload == "sequential":
            return "quantization with sequential CPU offload: torchao tensors cannot be moved per module by accelerate's hooks"
        if opts.quantization == "int4wo":
            if not cuda:
                return f"quantization int4wo: torchao's int4 weight-only kernels (tinygemm) need a CUDA GPU (running on {gpu}); on the CPU torchao leaves the layers unquantized"
            if dtype is not None and dtype != torch.bfloat16:
                return f"quantization int4wo: torchao's int4 weight-only kernels need bf16 weights (precision is {str(dtype).removeprefix('torch.')}); use --precision bf16"
        if opts.quantization.startswith("fp8"):
            if not cuda:
                return f"quantization {opts.quantization}: fp8 needs a GPU with compute capability >= 8.9 (Ada/Hopper) (running on {gpu})"
            cap = torch.cuda.get_device_capability(device)
            if cap < FP8_MIN_CAPABILITY:
                return f"quantization {opts.quantization}: {gpu} has compute capability {cap[0]}.{cap[1]}; fp8 needs >= 8.9 (Ada/Hopper)"
    return None


# -- cross-attention K/V cache -----------------------------------------------------------------


def _version_of(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors keep no version counter
        return None


@dataclass
class _KVEntry:
    source: torch.Tensor  # held so its id cannot be reused by another tensor while cached
    version: int | None
    key: torch.Tensor
    value: torch.Tensor


class KVCache:
    """Text-conditioned K and V of every cross-attention module, valid while the conditioning is unchanged.

    An entry is reused only when ``encoder_hidden_states`` is the very same tensor object, unmodified
    in place (same version counter), as when it was computed. A pipeline call encodes the prompt into a
    new tensor, so every generation starts with a miss: the cache can never serve K/V of an older
    prompt. ``hits``/``misses`` count per-module lookups, so a pipeline that passes a fresh tensor every
    step shows up as a zero hit rate instead of a silent non-saving.
    """

    def __init__(self) -> None:
        self._entries: dict[int, _KVEntry] = {}
        self.hits = 0
        self.misses = 0

    def get(
        self, attn: torch.nn.Module, source: torch.Tensor, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached (key, value) of ``attn`` for ``source``, computing them with ``compute`` on a miss."""
        entry = self._entries.get(id(attn))
        if entry is not None and entry.source is source and entry.version == _version_of(source):
            self.hits += 1
            return entry.key, entry.value
        self.misses += 1
        key, value = compute()
        self._entries[id(attn)] = _KVEntry(source, _version_of(source), key, value)
        return key, value

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        self._entries.clear()

    def stats(self) -> dict[str, Any]:
        """Lookup counters and hit rate, JSON-ready."""
        total = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "hit_rate": (self.hits / total) if total else None, "entries": len(self._entries)}

    def __len__(self) -> int:
        return len(self._entries)


# -- attention kernels -------------------------------------------------------------------------


def _eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, attn) -> torch.Tensor:
    # softmax(Q K^T * scale) V written out, as diffusers' AttnProcessor does (upcasts honoured).
    dtype = q.dtype
    if attn.upcast_attention:
        q, k = q.float(), k.float()
    scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scale
    if mask is not None:
        scores = scores + mask
    if attn.upcast_softmax:
        scores = scores.float()
    probs = scores.softmax(dim=-1).to(dtype)
    return torch.matmul(probs, v)


def _sliced_attention(q, k, v, mask, attn, slice_size: int | None) -> torch.Tensor:
    # Same algorithm as diffusers' SlicedAttnProcessor: batch*heads in slices, plain math per slice.
    b, h, s, d = q.shape
    qf, kf, vf = (t.reshape(b * h, t.shape[2], d) for t in (q, k, v))
    mf = mask.reshape(b * h, *mask.shape[2:]) if mask is not None else None
    size = slice_size or max(attn.sliceable_head_dim // 2, 1)
    out = torch.empty((b * h, s, d), device=q.device, dtype=q.dtype)
    for start in range(0, b * h, size):
        sl = slice(start, start + size)
        out[sl] = _eager_attention(qf[sl], kf[sl], vf[sl], mf[sl] if mf is not None else None, attn)
    return out.view(b, h, s, d)


def _xformers_attention(q, k, v, mask, attn) -> torch.Tensor:
    import xformers.ops

    # xformers wants (batch, seq, heads, dim)
    out = xformers.ops.memory_efficient_attention(
        q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous(), attn_bias=mask, scale=attn.scale
    )
    return out.transpose(1, 2)


class SdsuiteAttnProcessor:
    """Attention processor with a selectable kernel and an optional cross-attention K/V cache.

    Follows diffusers' ``AttnProcessor2_0`` step by step (spatial/group norm, norm_cross, residual,
    output rescale) and understands fused projections (``to_qkv`` / ``to_kv``), so it can replace the
    default, fused or sliced processors of a UNet or VAE without changing the math.
    """

    def __init__(self, kernel: str = DEFAULT_ATTENTION, kv_cache: KVCache | None = None, slice_size: int | None = None):
        if kernel not in ATTENTION_KERNELS:
            raise unknown_choice("attention", kernel, ATTENTION_KERNELS)
        self.kernel = kernel
        self.kv_cache = kv_cache
        self.slice_size = slice_size

    @staticmethod
    def _project_kv(attn, encoder_hidden_states: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        if getattr(attn, "fused_projections", False):
            key, value = attn.to_kv(encoder_hidden_states).chunk(2, dim=-1)
        else:
            key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        return key, value

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        if encoder_hidden_states is None:  # self-attention: nothing to cache, K/V change every step
            if getattr(attn, "fused_projections", False):
                query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
            else:
                query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
            head_dim = key.shape[-1] // attn.heads
            key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
        else:
            query = attn.to_q(hidden_states)
            ehs = encoder_hidden_states
            if self.kv_cache is not None:
                key, value = self.kv_cache.get(attn, ehs, lambda: self._project_kv(attn, ehs, batch_size))
            else:
                key, value = self._project_kv(attn, ehs, batch_size)
            head_dim = key.shape[-1]
        query = query.view(batch_size, -1, attn.heads, query.shape[-1] // attn.heads).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)

        if self.kernel == "sdpa":
            hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        elif self.kernel == "eager":
            hidden_states = _eager_attention(query, key, value, attention_mask, attn)
        elif self.kernel == "sliced":
            hidden_states = _sliced_attention(query, key, value, attention_mask, attn, self.slice_size)
        else:
            hidden_states = _xformers_attention(query, key, value, attention_mask, attn)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


# -- applying ----------------------------------------------------------------------------------


def _quant_config(name: str):
    from torchao import quantization as q

    if name == "int8wo":
        return q.Int8WeightOnlyConfig()
    if name == "int8dq":
        return q.Int8DynamicActivationInt8WeightConfig()
    if name == "int4wo":
        return q.Int4WeightOnlyConfig(group_size=128)
    if name == "fp8wo":
        return q.Float8WeightOnlyConfig()
    return q.Float8DynamicActivationFloat8WeightConfig()


def quantized_linear_count(module: torch.nn.Module) -> tuple[int, int]:
    """(quantized, total) nn.Linear layers: a layer counts as quantized when torchao swapped its weight tensor type."""
    total = quantized = 0
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            total += 1
            if type(m.weight) not in (torch.Tensor, torch.nn.Parameter):
                quantized += 1
    return quantized, total


def _attention_modules(pipe) -> list[torch.nn.Module]:
    return [m for m in (getattr(pipe, "unet", None), getattr(pipe, "vae", None)) if m is not None and hasattr(m, "set_attn_processor")]


@dataclass
class AppliedOptimizations:
    """What :func:`apply_optimizations` did to a pipeline: per-option setup time, caches, and how to undo it."""

    options: OptimizationSet
    pipe: Any
    setup_s: dict[str, float] = field(default_factory=dict)
    kv_cache: KVCache | None = None
    quantized_layers: tuple[int, int] | None = None
    _undo: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    _undone: bool = False

    @property
    def needs_fresh_pipeline(self) -> bool:
        """True when weights or module structure were changed: ``undo`` cannot restore the pipeline."""
        return self.options.mutates_weights

    def undo(self) -> None:
        """Revert every option in reverse order; raises UsageError for weight-mutating sets (load a fresh pipeline)."""
        if self.needs_fresh_pipeline:
            mutated = ", ".join(WEIGHT_MUTATING[f] for f in WEIGHT_MUTATING if getattr(self.options, f))
            raise UsageError(f"optimizations {self.options.id!r} cannot be undone in place ({mutated}); load a fresh pipeline instead.")
        if self._undone:
            return
        for _name, fn in reversed(self._undo):
            fn()
        self._undone = True

    def new_generation(self) -> None:
        """Forget cached cross-attention K/V (not needed for correctness, see KVCache; frees the memory)."""
        if self.kv_cache is not None:
            self.kv_cache.clear()

    def to_record(self) -> dict[str, Any]:
        """JSON-ready summary for the result record."""
        rec: dict[str, Any] = {**self.options.to_dict(), "setup_s": dict(self.setup_s)}
        if self.kv_cache is not None:
            rec["kv_cache_stats"] = self.kv_cache.stats()
        if self.quantized_layers is not None:
            rec["quantized_linear_layers"] = {"quantized": self.quantized_layers[0], "total": self.quantized_layers[1]}
        return rec


def options_record(opts: OptimizationSet, *parts: AppliedOptimizations | None, weight_setup_cached: bool | None = None) -> dict[str, Any]:
    """The record's ``options`` entry for a set applied in parts (weight-mutating at load, reversible per case).

    ``setup_s`` merges every part's per-option setup times; ``weight_setup_cached`` says the
    weight-mutating part was applied when an earlier case loaded the cached pipeline (None: the set has none).
    """
    rec: dict[str, Any] = {**opts.to_dict(), "setup_s": {}, "weight_setup_cached": weight_setup_cached}
    for part in parts:
        if part is None:
            continue
        rec["setup_s"].update(part.setup_s)
        if part.kv_cache is not None:
            rec["kv_cache_stats"] = part.kv_cache.stats()
        if part.quantized_layers is not None:
            rec["quantized_linear_layers"] = {"quantized": part.quantized_layers[0], "total": part.quantized_layers[1]}
    return rec


def apply_optimizations(pipe, opts: OptimizationSet, device: torch.device | str | None = None) -> AppliedOptimizations:
    """Apply ``opts`` to a loaded pipeline in a fixed order; raises UnsupportedOptimization with the skip reason.

    Order: fused QKV -> quantization -> channels_last -> attention processors (+ K/V cache) ->
    VAE slicing/tiling -> torch.compile -> CPU offload. Fusing comes before quantizing so the fused
    projections are quantized too; offload comes last because it wraps the final modules in hooks.
    If a step fails, the reversible steps already applied are undone before the error propagates;
    when ``opts.mutates_weights`` the pipeline must then be dropped from the cache.
    """
    device = torch.device(device) if device is not None else pipe.unet.device
    dtype = pipe.unet.dtype
    reason = supported(opts, device, dtype)
    if reason:
        raise UnsupportedOptimization(reason)
    applied = AppliedOptimizations(opts, pipe)

    def step(name: str, fn: Callable[[], Callable[[], None] | None]) -> None:
        t0 = time.perf_counter()
        try:
            undo = fn()
        except BaseException:
            # Leave no half-applied reversible option behind; a weight-mutating set already needs a fresh pipeline.
            for _name, undo_fn in reversed(applied._undo):
                undo_fn()
            raise
        applied.setup_s[name] = time.perf_counter() - t0
        if undo is not None:
            applied._undo.append((name, undo))

    if opts.fused_qkv:
        step("fused_qkv", lambda: pipe.fuse_qkv_projections())
    if opts.quantization:

        def quantize() -> None:
            from torchao.quantization import quantize_

            quantize_(pipe.unet, _quant_config(opts.quantization))
            applied.quantized_layers = quantized_linear_count(pipe.unet)
            if applied.quantized_layers[0] == 0:
                raise UnsupportedOptimization(
                    f"quantization {opts.quantization}: torchao left every nn.Linear of the UNet unquantized on {device}"
                )

        step("quantization", quantize)
    if opts.channels_last:

        def to_channels_last():
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
            return lambda: (pipe.unet.to(memory_format=torch.contiguous_format), pipe.vae.to(memory_format=torch.contiguous_format))

        step("channels_last", to_channels_last)
    # The diffusers default (SDPA, possibly fused) stays untouched: the default set measures stock diffusers.
    if opts.attention != DEFAULT_ATTENTION or opts.kv_cache:

        def set_processors():
            applied.kv_cache = KVCache() if opts.kv_cache else None
            saved = [(m, m.attn_processors) for m in _attention_modules(pipe)]
            for m in _attention_modules(pipe):
                # A fresh processor per model: only the UNet has cross-attention, the VAE never hits the cache.
                m.set_attn_processor(SdsuiteAttnProcessor(opts.attention, applied.kv_cache))
            return lambda: [m.set_attn_processor(procs) for m, procs in saved]

        step(f"attention_{opts.attention}" + ("_kv_cache" if opts.kv_cache else ""), set_processors)
    if opts.vae_slicing:

        def vae_slicing():
            pipe.vae.enable_slicing()
            return pipe.vae.disable_slicing

        step("vae_slicing", vae_slicing)
    if opts.vae_tiling:

        def vae_tiling():
            pipe.vae.enable_tiling()
            return pipe.vae.disable_tiling

        step("vae_tiling", vae_tiling)
    if opts.compile_mode:

        def compile_unet():
            original = pipe.unet
            pipe.unet = torch.compile(original, mode=opts.compile_mode, fullgraph=False)

            def restore() -> None:
                pipe.unet = original

            return restore

        # Compiling is lazy: the real compile time lands in the first call (the runner's first_call_s).
        step("compile_unet", compile_unet)
    if opts.offload == "model":
        step("model_cpu_offload", lambda: pipe.enable_model_cpu_offload(device=device))
    elif opts.offload == "sequential":
        step("sequential_cpu_offload", lambda: pipe.enable_sequential_cpu_offload(device=device))
    return applied


# -- K/V cache accounting ----------------------------------------------------------------------


def cross_attention_kv_flops(unet: torch.nn.Module, batch: int, text_tokens: int) -> int:
    """FLOPs of all cross-attention K and V projections for one UNet evaluation (2*M*N*K per matmul).

    ``batch`` counts the UNet batch (x2 with classifier-free guidance). With the K/V cache these are
    paid once per generation instead of once per step: the saving is ``(steps - 1) *`` this value.
    """
    from diffusers.models.attention_processor import Attention

    total = 0
    for m in unet.modules():
        if isinstance(m, Attention) and m.is_cross_attention:
            if getattr(m, "fused_projections", False) and hasattr(m, "to_kv"):
                total += 2 * batch * text_tokens * m.to_kv.in_features * m.to_kv.out_features
            else:
                for lin in (m.to_k, m.to_v):
                    total += 2 * batch * text_tokens * lin.in_features * lin.out_features
    return total


def count_generation_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs torch's FlopCounterMode sees while ``fn`` runs (deterministic, works on the CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())
