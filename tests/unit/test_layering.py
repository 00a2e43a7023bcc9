"""The package's layers: imports point down only, and ``dags/`` reaches the pipeline through ``tasks/`` only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "nightly_ml"
CORE = {"config", "spec", "intervals", "layout", "db", "partitions", "alerts", "errors"}
# What each layer may import from the package, besides the core.
ALLOWED = {
    "core": set(),
    "etl": {"etl"},
    "modeling": {"modeling", "registry"},
    "registry": {"registry", "modeling"},
    "monitoring": {"monitoring", "modeling", "registry"},
    "tasks": {"tasks", "etl", "modeling", "registry", "monitoring"},
    "devtools": {"devtools", "tasks", "etl", "modeling", "registry", "monitoring"},
}
MAX_LINES = 450


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return "core" if len(relative.parts) == 1 else relative.parts[0]


def imported_layers(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nightly_ml"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("nightly_ml")]
        for name in names:
            parts = name.split(".")
            if len(parts) > 1 and parts[1] not in CORE and (PACKAGE / parts[1]).is_dir():
                found.add(parts[1])
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(module: Path) -> None:
    layer = layer_of(module)
    wrong = imported_layers(module) - ALLOWED[layer] - {layer}
    assert not wrong, f"{module.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(module: Path) -> None:
    lines = len(module.read_text().splitlines())
    assert lines <= MAX_LINES, f"{module.relative_to(PACKAGE)} has {lines} lines; split it by concept"


@pytest.mark.parametrize("dag_file", sorted((ROOT / "dags").glob("*.py")), ids=lambda p: p.name)
def test_dags_reach_the_pipeline_through_tasks_only(dag_file: Path) -> None:
    layers = imported_layers(dag_file)
    assert layers <= {"tasks"}, f"{dag_file.name} imports {sorted(layers - {'tasks'})}; go through nightly_ml.tasks"


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def test_no_import_cycles() -> None:
    """No two modules import each other, directly or round a loop (lazy imports inside functions count too)."""
    names = {_module_name(p): p for p in MODULES}
    edges: dict[str, set[str]] = {name: set() for name in names}
    for name, path in names.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[name] |= {t for t in targets if t in names and t != name}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(name) :], name]))
        if name in done:
            return
        for target in sorted(edges[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(names):
        visit(name, [])
