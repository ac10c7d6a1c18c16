"""The package layout's rules (docs/ARCHITECTURE.md): layers that import only downwards, no
import cycle between modules, few loose modules, and modules and functions small enough to read.

Each rule is checked on the source tree with `ast`, so a move that breaks one fails here with the
offending names, not later in a user's import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tradi"

#: The layers from the bottom up: a unit may import only from units of its own layer or below.
#: Units of one layer never import each other (checked by the cycle test and the order inside).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_imports",),
    ("plumbing",),
    ("distributed", "metrics", "data", "models"),
    ("plots",),
    ("posterior",),
    ("tracking",),
    ("inference",),
    ("selection",),
    ("training",),
    ("methods",),
    ("integrations",),
    ("experiments",),
    ("cli",),
    ("__main__",),
)
FACE = "__init__"  # the package face imports lazily from everywhere
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 40
MAX_LOOSE_MODULES = 4


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACE


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tradi"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tradi"))
    return found - {"tradi"}


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def test_every_unit_has_a_layer() -> None:
    layered = {unit for layer in LAYERS for unit in layer}
    units = {_unit(m) for m in MODULES} - {FACE}
    assert units <= layered, f"units without a layer in LAYERS: {sorted(units - layered)}"


def test_imports_go_down_the_layers() -> None:
    level = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
    upward = []
    for module, path in MODULES.items():
        source = _unit(module)
        if source == FACE:
            continue
        for target in _imports(path):
            unit = _unit(target)
            if unit != source and level[unit] >= level[source]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports sideways or up the layers:\n" + "\n".join(upward)


def test_no_import_cycle_between_modules() -> None:
    graph = {m: {t for t in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # a package's face may re-export its modules; its modules never import their own face
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_few_loose_modules() -> None:
    loose = sorted(
        p.name for p in SRC.glob("*.py") if p.name not in {"__init__.py", "__main__.py", "cli.py"}
    )
    assert len(loose) <= MAX_LOOSE_MODULES, loose


def test_every_package_says_what_it_is_for() -> None:
    for init in sorted(SRC.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.parent.name}/__init__.py has no docstring"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_and_function_sizes(module: str) -> None:
    path = MODULES[module]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{module}: over {MAX_MODULE_LINES} lines"
    long = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant
            ):
                body = body[1:]  # the docstring does not count
            if body and body[-1].end_lineno - body[0].lineno + 1 > MAX_FUNCTION_LINES:
                long.append(node.name)
    assert not long, f"{module}: function bodies over {MAX_FUNCTION_LINES} lines: {long}"
