"""The import graph of sdsuite/: no module imports itself back through others, and every import goes to its own
package or a lower one of LAYERS. Read from the source with ``ast``: imports at module level and inside functions,
``from sdsuite import x`` (x a module) and ``importlib.import_module("sdsuite....")`` with a literal name."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "sdsuite"

# Bottom to top. A module may import its own package and the packages of lower layers only; the packages of one
# layer (the two front ends) do not import each other. ``sdsuite`` itself (its __init__: the version) is below all.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("optimizations",),
    ("pipelines",),
    ("quality",),
    ("gpu",),
    ("spec",),
    ("store",),
    ("measure",),
    ("baselines",),
    ("dvfs",),
    ("launch",),
    ("cli", "plugin"),
)
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}

# Known exceptions, each with the reason and where it goes. Empty is the goal.
ALLOWED: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _target(name: str) -> str | None:
    """The sdsuite module an imported name resolves to (the longest known prefix), None outside sdsuite."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported sdsuite module, line) of every import in ``module``, at any depth."""
    path = MODULES[module]
    return imports_in(path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py")


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (imports for annotations, never run)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None) if isinstance(node, ast.If) else None
        if isinstance(test, ast.Name | ast.Attribute) and (getattr(test, "id", None) or test.attr) == "TYPE_CHECKING":
            inside.update(id(n) for child in node.body for n in ast.walk(child))
    return inside


def imports_in(
    source: str, module: str, is_package: bool = False, *, runtime_only: bool = False
) -> list[tuple[str, int]]:
    """(imported sdsuite module, line) of every import in the source of ``module`` (with ``runtime_only``, not those
    under ``if TYPE_CHECKING:``)."""
    return [
        (target, line)
        for target, line, typing_only in _edges(source, module, is_package)
        if not (runtime_only and typing_only)
    ]


@functools.cache
def _edges(source: str, module: str, is_package: bool) -> list[tuple[str, int, bool]]:
    """(imported sdsuite module, line, only under ``if TYPE_CHECKING:``) of every import; one parse per source."""
    tree = ast.parse(source, module)
    package = module if is_package else module.rpartition(".")[0]
    typing_only = _type_checking_only(tree)
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for name in names:
            target = _target(name) if name == "sdsuite" or name.startswith("sdsuite.") else None
            if target is not None and target != module:
                found.append((target, node.lineno, id(node) in typing_only))
    return found


GRAPH = {m: imports_of(m) for m in MODULES}
# What runs: a step module may name the run it is a step of in an annotation (``if TYPE_CHECKING:``) without a cycle.
RUNTIME_GRAPH = {
    m: imports_in(p.read_text(encoding="utf-8"), m, p.name == "__init__.py", runtime_only=True)
    for m, p in MODULES.items()
}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_layering_names_every_package():
    packages = {_package(m) for m in MODULES} - {None}
    assert packages <= set(RANK), f"packages missing from LAYERS: {sorted(packages - set(RANK))}"


def test_every_import_goes_to_the_same_or_a_lower_package():
    bad = []
    for module, targets in GRAPH.items():
        mine = _package(module)
        for target, line in targets:
            theirs = _package(target)
            if theirs is None or theirs == mine or (module, target) in ALLOWED:
                continue
            if mine is None or RANK[theirs] >= RANK[mine]:
                bad.append(
                    f"{MODULES[module].relative_to(ROOT.parent)}:{line}: {module} imports {target} "
                    f"({theirs} is not below {mine})"
                )
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_known_exceptions_still_exist():
    """An exception that was fixed is taken out of ALLOWED (so it cannot come back unnoticed)."""
    gone = [f"{a} -> {b}" for a, b in ALLOWED if b not in {t for t, _ in GRAPH.get(a, ())}]
    if gone:
        pytest.fail(f"fixed, remove from ALLOWED: {', '.join(gone)}")


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t, _ in RUNTIME_GRAPH[m]:
            if state.get(t) == 1:
                return [*path[path.index(t) :], t]
            if t not in state and (found := visit(t)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(RUNTIME_GRAPH):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    if cycle is not None:
        steps = [
            f"{a} (line {next(n for t, n in RUNTIME_GRAPH[a] if t == b)})"
            for a, b in zip(cycle, cycle[1:], strict=False)
        ]
        pytest.fail("import cycle: " + " -> ".join([*steps, cycle[-1]]))


def test_nothing_imports_the_entry_point():
    """sdsuite.cli.main builds the parser from the command modules: a command (or anything) importing it back is a
    circle the graph above cannot see (main names the command modules as data, sdsuite.cli.commands)."""
    back = [f"{m} (line {line})" for m, ts in GRAPH.items() for t, line in ts if t == "sdsuite.cli.main"]
    assert not back, "imports of sdsuite.cli.main: " + ", ".join(back)


def test_the_graph_reader_sees_every_kind_of_import():
    """Module level, function level, ``from sdsuite import x`` and import_module strings are all edges."""
    assert "sdsuite.cli.commands" in {t for t, _ in GRAPH["sdsuite.cli.main"]}  # module level
    assert "sdsuite" in {t for t, _ in GRAPH["sdsuite.dvfs.sweep_engine"]}  # from sdsuite import __version__
    assert "sdsuite.measure.engine" in {t for t, _ in GRAPH["sdsuite.cli.run"]}  # inside a function
    source = "import importlib\n\n\ndef f():\n    importlib.import_module('sdsuite.core.stats')\n"
    assert imports_in(source, "sdsuite.core.probe") == [("sdsuite.core.stats", 5)]
    assert imports_in("from . import stats\nfrom ..gpu import sim\n", "sdsuite.core.probe") == [
        ("sdsuite.core.stats", 1),
        ("sdsuite.gpu.sim", 2),
    ]


def test_type_checking_imports_are_no_runtime_edges():
    source = "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from sdsuite.core import stats\n"
    assert imports_in(source, "sdsuite.core.probe") == [("sdsuite.core.stats", 4)]
    assert imports_in(source, "sdsuite.core.probe", runtime_only=True) == []


def test_no_module_name_is_used_twice():
    """A newcomer can tell every module by its name: no two modules (nor a module and a package) share one."""
    seen: dict[str, list[str]] = {}
    for m in MODULES:
        if m != "sdsuite":
            seen.setdefault(m.rpartition(".")[2], []).append(m)
    twice = {name: ms for name, ms in seen.items() if len(ms) > 1 and name != "__main__"}
    assert not twice, f"names used twice: {twice}"
