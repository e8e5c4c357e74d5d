"""nox sessions: `nox -s tests`, `nox -s quick`, `nox -s gpu -- --variant sdxl`, `nox -s lint`, `nox -s demo`.

Every session installs torch first, pinned (SDSUITE_TORCH overrides it, e.g. a CUDA build index):
an unpinned torch would pull a multi-GB CUDA build onto a CPU machine.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("SDSUITE_TORCH", "torch==2.13.0")
STRICT = ["--strict-markers", "--strict-config"]


def _install(session: nox.Session, extras: str = "test") -> None:
    session.install(*TORCH.split())
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests and the quick benchmarks, in parallel (pytest-xdist)."""
    _install(session)
    session.run("pytest", "-n", "auto", *STRICT, *session.posargs)


@nox.session
def quick(session: nox.Session) -> None:
    """The quick selection: unit tests plus tiny-model benchmarks, under a minute on a laptop CPU."""
    _install(session)
    session.run("pytest", "-m", "quick", *STRICT, *session.posargs)


@nox.session(default=False)
def gpu(session: nox.Session) -> None:
    """GPU tests and benchmarks; posargs go to pytest (`nox -s gpu -- --variant sdxl --precision fp16`)."""
    _install(session, "test,gpu")
    if not _has_cuda(session):
        session.skip(
            "no CUDA GPU visible to torch on this machine: the gpu session needs one (GPU tests skip elsewhere)"
        )
    session.run(
        "pytest", "tests/gpu", "tests/benchmarks", "-m", "gpu or quick", "--device", "cuda", *STRICT, *session.posargs
    )


def _has_cuda(session: nox.Session) -> bool:
    out = session.run("python", "-c", "import torch; print(torch.cuda.is_available())", silent=True)
    return bool(out) and out.strip().endswith("True")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    paths = ("sdsuite", "tests", "tools", "noxfile.py", "conftest.py")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The main job on the embedded tiny model, end to end."""
    _install(session, "test")
    session.run("sdsuite", "env")
    session.run(
        "sdsuite",
        "run",
        "--variant",
        "tiny-sd,tiny-sdxl",
        "--scheduler",
        "euler,dpm++2m-karras",
        "--out",
        "sdsuite-results/demo",
    )
