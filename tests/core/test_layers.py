"""The import layering of lmc_core: every import (top-level, deferred or type-only) points to the module's own
sub-package or to a lower layer, and no chain of imports leads back to where it started."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "lmc_core"

# Lower number = lower layer. Same-number packages must not import each other.
LAYERS = {
    "foundations": 0,
    "data": 1,
    "models": 1,
    "prune": 2,  # below train: training keeps pruned weights at zero (apply_masks)
    "train": 3,
    "distill": 4,
    "connectivity": 4,
    "hessian": 4,
    "landscape": 5,  # reuses connectivity's BatchNorm handling and evaluation engine
    "studies": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, here: str | None = None) -> set[str]:
    """Return every lmc_core module `path` imports anywhere in its body, resolved to module names."""
    tree = ast.parse(path.read_text())
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "lmc_core")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "lmc_core":
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                out.add(f"{mod}.{alias.name}" if MODULES.get(f"{mod}.{alias.name}") else mod)
    return out


FILES = sorted(p for p in ROOT.rglob("*.py"))
MODULES = {module_name(p): p for p in FILES}
GRAPH = {name: {m for m in imported_modules(path) if m in MODULES} for name, path in MODULES.items()}


def layer_of(module: str) -> tuple[str, int]:
    top = module.split(".")[1]
    top = top.removesuffix(".py")
    return top, LAYERS[top]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "lmc_core"))
def test_imports_point_down_or_inside_the_package(module: str) -> None:
    package, level = layer_of(module)
    for target in GRAPH[module]:
        assert target != "lmc_core", f"{module} imports the lmc_core facade; import the defining module instead"
        other, other_level = layer_of(target)
        assert other == package or other_level < level, (
            f"{module} (layer {package}={level}) imports {target} (layer {other}={other_level}); "
            "a module imports only from its own package and lower layers"
        )


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = [*trail[trail.index(node) :], node]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        state[node] = 1
        for dep in sorted(GRAPH[node]):
            visit(dep, [*trail, node])
        state[node] = 2

    for name in sorted(GRAPH):
        visit(name, [])


def test_every_package_has_a_layer() -> None:
    tops = {m.split(".")[1] for m in MODULES if m != "lmc_core"}
    assert tops == set(LAYERS), f"give new sub-packages a layer here: {sorted(tops - set(LAYERS))}"


def test_the_checker_sees_deferred_and_type_only_imports(tmp_path: Path) -> None:
    code = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from lmc_core.studies.run import Run\n"
        "def f():\n    from lmc_core.train import loop\n    import lmc_core.hessian.trace\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(code)
    found = imported_modules(path, "lmc_core.foundations.probe")
    assert {"lmc_core.studies.run", "lmc_core.train.loop", "lmc_core.hessian.trace"} <= found
