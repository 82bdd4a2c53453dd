"""The package's own structure: no private name crosses a module boundary, no import cycle.

Every ``import`` statement of ``tvm_onednn`` is read (module level and inside functions);
``_ffi_api`` (the boundary to the C++ runtime) is the one module whose name starts with an
underscore and may be imported anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tvm_onednn"
BOUNDARY_MODULES = {"tvm_onednn._ffi_api"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule, None) if submodule in MODULES else (source, alias.name))
    return [(m, n) for m, n in found if m.split(".")[0] == "tvm_onednn"]


def test_no_private_name_is_imported_from_another_module():
    crossings = []
    for module in MODULES:
        for source, name in _imports(module):
            private_module = any(p.startswith("_") and not p.startswith("__") for p in source.split("."))
            if private_module and source not in BOUNDARY_MODULES:
                crossings.append(f"{module} imports module {source}")
            if name and name.startswith("_") and not name.startswith("__"):
                crossings.append(f"{module} imports {name} from {source}")
    assert crossings == []


def test_no_import_cycle_between_modules():
    # Importing a package's __init__ (a parent package) is not a dependency on its modules.
    graph = {
        module: {m for m, _ in _imports(module) if m in MODULES and not _is_package(m)}
        for module in MODULES
    }
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(path[path.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checks_see_the_package():
    assert "tvm_onednn.byoc.chains" in MODULES
    assert ("tvm_onednn.byoc.chains", "ACTIVATIONS") in _imports("tvm_onednn.byoc.patterns")
