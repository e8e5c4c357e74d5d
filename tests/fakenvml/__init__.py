"""A fake NVML at the C ABI for sdsuite's tests, and the controller the tests drive it with.

``build.build_fake_nvml(dir)`` compiles ``fakenvml.c`` into ``libnvidia-ml.so.1`` (variants ``r535`` and
``r470``). The real nvidia-ml-py loads it unchanged: in a subprocess through ``LD_LIBRARY_PATH``
(:meth:`FakeNvml.env`), or in this process with :meth:`FakeNvml.load_in_process`.

Config keys (the key=value file named by ``FAKENVML_CONFIG``, re-read at every nvmlInit; ``.N``: GPU N only):

    gpus=h100,a100             profile per index (v100, a100, h100, h200); default: one a100
    driver=535.154.05          nvmlSystemGetDriverVersion (default: GPU 0's profile driver from the JSON)
    root=1|0                   0: every setter except app clocks -> NVML_ERROR_NO_PERMISSION
    app_clocks_restricted=1|0  0: non-root may Set/ResetApplicationsClocks (nvidia-smi -acp UNRESTRICTED)
    counter_period_ms[.N]=100  energy-counter publish period (ticks at a fixed phase)
    power_avg_ms[.N]=          nvmlDeviceGetPowerUsage averaging window (default 1000 on h100/h200, 0 on a100/v100)
    load[.N]=1.0               busy fraction 0..1 driving power
    mig[.N]=0|1                MIG mode with 2 MIG devices (a100/h100/h200)
    persistence[.N]=0|1        persistence mode
    fail=FUNC:CODE[@AFTER][xCOUNT],...   inject NVML error CODE (number or name) from the AFTER-th call, COUNT calls
    state=PATH                 persistent state (default <config>.state)
    log=PATH                   setter log (default <config>.log)
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .build import PROFILES, SONAME, VARIANTS, build_fake_nvml, clock_tables, model_power_mw, profile_data  # noqa: F401

__all__ = [
    "FakeNvml", "SetterCall", "GpuState", "build_fake_nvml", "clock_tables", "model_power_mw", "profile_data",
    "PROFILES",
]  # fmt: skip

_LOG_LINE = re.compile(r"^(\d+) pid=(\d+) (\S+) gpu=(-?\d+) args=(\S*) rc=(\d+)$")


@dataclass(frozen=True)
class SetterCall:
    """One line of the setter log."""

    t_ns: int  # CLOCK_MONOTONIC (== time.monotonic_ns())
    pid: int
    function: str
    gpu: int  # -1: the handle was not a GPU's
    args: tuple[int, ...]
    rc: int  # nvmlReturn_t


@dataclass
class GpuState:
    """What one fake GPU was left with (the state file), plus the power history the energy integrates."""

    index: int
    profile: str
    t0_ns: int
    offset_mj: float
    locked_sm: tuple[int, int] | None
    locked_mem: tuple[int, int] | None
    app: tuple[int, int] | None  # (memory, graphics)
    power_limit_mw: int
    api_restricted: int  # -1: as configured
    persistence: int  # -1: as configured
    load: float
    hist: list[tuple[int, float, float]]  # (t_ns, power_mw from then on, energy_mj at t_ns without offset)

    def energy_mj(self, t_ns: int) -> float:
        """Exact energy at ``t_ns`` on the counter's scale (offset included)."""
        t, p, e = self.hist[0]
        for h in self.hist:
            if h[0] <= t_ns:
                t, p, e = h
        return self.offset_mj + e + p * (t_ns - t) / 1e9

    def power_mw(self, t_ns: int) -> float:
        """True power at ``t_ns``."""
        p = self.hist[0][1]
        for h in self.hist:
            if h[0] <= t_ns:
                p = h[1]
        return p

    def average_power_mw(self, t_ns: int, window_ms: float) -> float:
        """Exact mean power over the ``window_ms`` before ``t_ns`` (instantaneous when 0)."""
        if window_ms <= 0:
            return self.power_mw(t_ns)
        w = int(window_ms * 1e6)
        return (self.energy_mj(t_ns) - self.energy_mj(t_ns - w)) * 1e9 / w

    def counter_mj(self, t_ns: int, period_ms: int) -> int:
        """What nvmlDeviceGetTotalEnergyConsumption returns at ``t_ns``: the energy at the last tick."""
        period = period_ms * 1_000_000
        tick = self.t0_ns + (t_ns - self.t0_ns) // period * period
        return int(self.energy_mj(tick) // 1)


def _pair(text: str) -> tuple[int, int] | None:
    a, b = (int(x) for x in text.split(","))
    return None if (a, b) == (0, 0) else (a, b)


def _config_value(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def use_in_this_process(lib_path: str | os.PathLike, config_path: str | os.PathLike, copy_dir: str | os.PathLike):
    """Make this process's pynvml use the fake library at ``lib_path`` (a private copy in ``copy_dir``, so its init
    count and fault counters start fresh) with the config at ``config_path``; returns the loaded library. Also the
    first step of a forked test child that should see the fake (tests/unit/_zygote.py)."""
    import pynvml

    copy_dir = Path(copy_dir)
    copy_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(lib_path, copy_dir / SONAME)
    os.environ["FAKENVML_CONFIG"] = str(config_path)
    lib = ctypes.CDLL(str(copy_dir / SONAME))
    with pynvml.libLoadLock:
        pynvml.nvmlLib = lib
        pynvml._nvmlGetFunctionPointer_cache.clear()
        pynvml._nvmlLib_refcount = 0
    return lib


class FakeNvml:
    """Controls one fake NVML "machine" living in ``workdir`` (config, state, setter log).

    ``FakeNvml(libs, tmp_path, gpus=["h100"], counter_period_ms=50)``; keys as in the module docstring
    (per-GPU keys as ``{"load": {1: 0.5}}`` or ``{"load.1": 0.5}``).
    """

    def __init__(self, libs: Mapping[str, Path], workdir: str | os.PathLike, *, variant: str = "r535", **config):
        if variant not in VARIANTS:
            raise ValueError(f"unknown fake NVML variant {variant!r}; valid: {', '.join(VARIANTS)}")
        self.libs = dict(libs)
        self.variant = variant
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "fakenvml.conf"
        self.state_path = self.workdir / "fakenvml.state"
        self.log_path = self.workdir / "fakenvml.log"
        self._config: dict[str, str] = {}
        self.lib: ctypes.CDLL | None = None  # the in-process library (test hooks), after load_in_process()
        self._saved: dict | None = None
        self._loads = 0
        self.configure(**config)

    # -- configuration ----------------------------------------------------------------------------

    def configure(self, **keys) -> FakeNvml:
        """Set config keys (None removes one) and rewrite the config file; takes effect at the next nvmlInit."""
        for key, value in keys.items():
            if isinstance(value, Mapping):
                for index, v in value.items():
                    self._set(f"{key}.{index}", v)
            else:
                self._set(key, value)
        lines = [f"{k}={v}" for k, v in self._config.items()]
        lines += [f"state={self.state_path}", f"log={self.log_path}"]
        tmp = self.config_path.with_name(self.config_path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, self.config_path)
        return self

    def _set(self, key: str, value) -> None:
        if value is None:
            self._config.pop(key, None)
        else:
            self._config[key] = _config_value(value)

    @property
    def config(self) -> dict[str, str]:
        """The config keys as written (without state/log)."""
        return dict(self._config)

    @property
    def gpus(self) -> list[str]:
        """The profile of each GPU index."""
        return [g.strip() for g in self._config.get("gpus", "a100").split(",") if g.strip()]

    def _per_gpu(self, key: str, index: int, default: str) -> str:
        return self._config.get(f"{key}.{index}", self._config.get(key, default))

    def counter_period_ms(self, index: int = 0) -> int:
        """The configured energy-counter period of GPU ``index``."""
        return int(self._per_gpu("counter_period_ms", index, "100"))

    def power_avg_ms(self, index: int = 0) -> int:
        """The configured GetPowerUsage averaging window of GPU ``index``."""
        return int(self._per_gpu("power_avg_ms", index, str(PROFILES[self.gpus[index]]["power_avg_ms"])))

    # -- processes ----------------------------------------------------------------------------------

    @property
    def lib_dir(self) -> Path:
        """The directory holding this variant's libnvidia-ml.so.1."""
        return Path(self.libs[self.variant])

    @property
    def lib_path(self) -> Path:
        """This variant's libnvidia-ml.so.1."""
        return self.lib_dir / SONAME

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a subprocess that should see the fake (LD_LIBRARY_PATH, FAKENVML_CONFIG)."""
        env = dict(os.environ if base is None else base)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.lib_dir), env.get("LD_LIBRARY_PATH", "")) if p)
        env["FAKENVML_CONFIG"] = str(self.config_path)
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def run_python(self, code: str, *, timeout: float = 60, check: bool = True, env: Mapping[str, str] | None = None):
        """Run ``python -c code`` with the fake on LD_LIBRARY_PATH; returns the CompletedProcess (text)."""
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"subprocess failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def popen_python(self, code: str, **kwargs) -> subprocess.Popen:
        """Start ``python -c code`` with the fake on LD_LIBRARY_PATH (stdout/stderr piped, text)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen([sys.executable, "-c", code], env=self.env(), text=True, cwd=self.workdir, **kwargs)

    def load_in_process(self):
        """Make this process's pynvml use the fake (a private copy of the library, so its init count and
        fault counters start fresh); returns the pynvml module. Undo with :meth:`unload`."""
        import pynvml

        if self._saved is None:
            self._saved = {
                "lib": pynvml.nvmlLib,
                "cache": dict(pynvml._nvmlGetFunctionPointer_cache),
                "refcount": getattr(pynvml, "_nvmlLib_refcount", 0),
                "env": os.environ.get("FAKENVML_CONFIG"),
            }
        self._loads += 1
        copy_dir = self.workdir / f"lib-{self.variant}-{self._loads}"
        self.lib = use_in_this_process(self.lib_path, self.config_path, copy_dir)
        self._declare_hooks(self.lib)
        return pynvml

    def unload(self) -> None:
        """Give pynvml back what it had before :meth:`load_in_process` (the fake library stays mapped)."""
        if self._saved is None:
            return
        import pynvml

        with pynvml.libLoadLock:
            pynvml.nvmlLib = self._saved["lib"]
            pynvml._nvmlGetFunctionPointer_cache.clear()
            pynvml._nvmlGetFunctionPointer_cache.update(self._saved["cache"])
            pynvml._nvmlLib_refcount = self._saved["refcount"]
        if self._saved["env"] is None:
            os.environ.pop("FAKENVML_CONFIG", None)
        else:
            os.environ["FAKENVML_CONFIG"] = self._saved["env"]
        self._saved = None
        self.lib = None

    @staticmethod
    def _declare_hooks(lib: ctypes.CDLL) -> None:
        lib.fakenvml_now_ns.restype = ctypes.c_longlong
        lib.fakenvml_variant.restype = ctypes.c_char_p
        for name in ("fakenvml_true_energy_mj", "fakenvml_true_power_mw"):
            getattr(lib, name).restype = ctypes.c_double
            getattr(lib, name).argtypes = [ctypes.c_uint]
        lib.fakenvml_energy_at_ns.restype = ctypes.c_double
        lib.fakenvml_energy_at_ns.argtypes = [ctypes.c_uint, ctypes.c_longlong]
        lib.fakenvml_set_load.restype = ctypes.c_int
        lib.fakenvml_set_load.argtypes = [ctypes.c_uint, ctypes.c_double]
        for name in ("fakenvml_counter_period_ms", "fakenvml_power_avg_ms", "fakenvml_effective_sm_mhz"):
            getattr(lib, name).restype = ctypes.c_int
            getattr(lib, name).argtypes = [ctypes.c_uint]

    # -- truth and inspection -------------------------------------------------------------------------

    def set_load(self, index: int, load: float) -> None:
        """Change GPU ``index``'s load now (and in the config, so later nvmlInits keep it)."""
        self.configure(**{f"load.{index}": load})
        if self.lib is not None:
            if self.lib.fakenvml_set_load(index, float(load)) != 0:
                raise RuntimeError(f"fakenvml_set_load({index}, {load}) failed")

    def state(self) -> dict[int, GpuState]:
        """The state file, parsed: {index: GpuState}; {} before the first nvmlInit."""
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        out: dict[int, GpuState] = {}
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] == "gpu":
                kv = dict(p.split("=", 1) for p in parts[2:])
                out[int(parts[1])] = GpuState(
                    index=int(parts[1]),
                    profile=kv["profile"],
                    t0_ns=int(kv["t0_ns"]),
                    offset_mj=float(kv["offset_mj"]),
                    locked_sm=_pair(kv["locked_sm"]),
                    locked_mem=_pair(kv["locked_mem"]),
                    app=_pair(kv["app"]),
                    power_limit_mw=int(kv["power_limit_mw"]),
                    api_restricted=int(kv["api_restricted"]),
                    persistence=int(kv["persistence"]),
                    load=float(kv["load"]),
                    hist=[],
                )
            elif parts and parts[0] == "hist":
                out[int(parts[1])].hist.append((int(parts[2]), float(parts[3]), float(parts[4])))
        return out

    def reset_state(self) -> None:
        """Forget everything the GPUs were left with (as after a driver reload)."""
        self.state_path.unlink(missing_ok=True)

    def setter_log(self, function: str | Iterable[str] | None = None) -> list[SetterCall]:
        """The setter log, parsed (optionally only the given function names)."""
        names = {function} if isinstance(function, str) else set(function) if function is not None else None
        try:
            lines = self.log_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        calls = []
        for line in lines:
            m = _LOG_LINE.match(line.strip())
            if not m:
                raise ValueError(f"unparsable setter-log line: {line!r}")
            args = tuple(int(a) for a in m[5].split(",") if a)
            call = SetterCall(int(m[1]), int(m[2]), m[3], int(m[4]), args, int(m[6]))
            if names is None or call.function in names:
                calls.append(call)
        return calls

    def true_energy_mj(self, index: int = 0, t_ns: int | None = None) -> float:
        """Exact energy of GPU ``index`` at ``t_ns`` (default now), on the counter's scale, from the state file."""
        return self.state()[index].energy_mj(time.monotonic_ns() if t_ns is None else t_ns)

    def true_power_mw(self, index: int = 0, t_ns: int | None = None) -> float:
        """True power of GPU ``index`` at ``t_ns`` (default now), from the state file."""
        return self.state()[index].power_mw(time.monotonic_ns() if t_ns is None else t_ns)

    def expected_counter_mj(self, index: int = 0, t_ns: int | None = None) -> int:
        """What the energy counter reads at ``t_ns`` (default now)."""
        t = time.monotonic_ns() if t_ns is None else t_ns
        return self.state()[index].counter_mj(t, self.counter_period_ms(index))
