"""The layout is the architecture: kes.streams' sub-packages import one way, core at the bottom.

Read from the source files (every import statement, at module level or in a function, except
those under `if TYPE_CHECKING:`, which only name types), so a lazy import cannot hide a
dependency. The installed names come from the folders: `streams/runtime/worker.py` is
`kes.streams.runtime.worker`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("schemas", "topology", "stores", "streams", "examples")
"""The distribution's folders, lowest first: each may import only those before it (and itself)."""
LAYERS = (
    "core",
    "telemetry",
    "config",
    "cycle",
    "kafka",
    "runtime",
    "client",
    "projections",
    "processes",
    "operations",
    "web",
    "cli",
)
"""kes.streams' sub-packages, lowest first: each may import only those before it (and itself)."""
IO_CLIENTS = {"faust", "mode", "aiokafka", "confluent_kafka", "rocksdict", "psycopg", "aiohttp"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["kes", *parts])


def _modules() -> dict[str, Path]:
    found = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not path.name.endswith("_pb2.py"):
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, *, with_types: bool = False) -> Iterator[tuple[str, list[str]]]:
    """Each imported module with the names taken from it; skips TYPE_CHECKING blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node) and not with_types:
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]
        yield from _imports(node, with_types=with_types)


def _targets(module: str, names: list[str]) -> list[str]:
    """The kes modules an import statement takes names from (`from a import b` may mean `a.b`)."""
    submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    if names and len(submodules) == len(names):
        return submodules  # `from package import module`: nothing taken from the package's face
    return ([module] if module in MODULES else []) + submodules


def _edges(*, with_types: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set()
        for module, names in _imports(tree, with_types=with_types):
            graph[name].update(t for t in _targets(module, names) if t != name)
    return graph


def _folder(module: str) -> str:
    return module.split(".")[1]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if parts[1] == "streams" and len(parts) > 2 else None


def test_every_streams_module_lives_in_a_layer() -> None:
    loose = [m for m in MODULES if _folder(m) == "streams" and m != "kes.streams"]
    assert loose, "no module found under streams/"
    assert [m for m in loose if _layer(m) not in LAYERS] == []


def test_imports_run_one_way() -> None:
    wrong = []
    for module, targets in _edges(with_types=True).items():
        for target in targets:
            here, there = FOLDERS.index(_folder(module)), FOLDERS.index(_folder(target))
            if there > here:
                wrong.append(f"{module} -> {target} (folder above)")
                continue
            if _folder(module) != "streams" or _folder(target) != "streams":
                continue
            if target == "kes.streams" and module != "kes.streams":
                wrong.append(f"{module} -> kes.streams (the package's public face is for users)")
                continue
            mine, theirs = _layer(module), _layer(target)
            if mine is None or theirs is None:
                continue
            if LAYERS.index(theirs) > LAYERS.index(mine):
                wrong.append(f"{module} -> {target} (layer {theirs} is above {mine})")
            elif target == f"kes.streams.{mine}" and not module.endswith(f"{mine}.__main__"):
                wrong.append(f"{module} -> {target} (its own package's public face)")
    assert wrong == []


def test_no_public_name_hides_a_module() -> None:
    """`from kes.streams.x import m` must give the module m, not a name of x's face."""
    hidden = []
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                hidden += [
                    f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES
                ]
    assert hidden == []


def test_no_import_circle() -> None:
    graph = _edges(with_types=False)
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == []


@pytest.mark.parametrize("layer", ["core", "telemetry", "cycle"])
def test_the_pure_layers_import_no_io_client(layer: str) -> None:
    leaked = []
    for module, path in MODULES.items():
        if _layer(module) != layer:
            continue
        for imported, _names in _imports(ast.parse(path.read_text()), with_types=True):
            if imported.split(".")[0] in IO_CLIENTS:
                leaked.append(f"{module} imports {imported}")
    assert leaked == []


def test_the_checks_see_a_violation() -> None:
    """The walker finds imports in functions and skips TYPE_CHECKING blocks."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from kes.streams.cli.commands import main\n"
        "def f():\n    from kes.streams.web.views import install_views\n"
    )
    found = [m for m, _ in _imports(tree)]
    assert "kes.streams.web.views" in found
    assert "kes.streams.cli.commands" not in found
    assert "kes.streams.cli.commands" in [m for m, _ in _imports(tree, with_types=True)]
