"""The library and its test bed: `rlaifv_trl` imports nothing from `rlaifv_testbed` (which registers its models,
evaluators, benchmark and vocabulary through entry points), and the library's modules import one another without a
cycle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import rlaifv_trl


LIBRARY = Path(rlaifv_trl.__file__).resolve().parent
TEST_BED = "rlaifv_testbed"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIBRARY.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# `evaluate` module scripts (metrics/modules/*) are loaded by `evaluate.load`, not imported as package modules.
MODULES = {module_name(path): path for path in LIBRARY.rglob("*.py") if "modules" not in path.parts}


def stub_targets() -> dict[str, dict[str, str]]:
    """For each lazy package, the submodule each public name comes from (its `__init__.pyi`)."""
    targets: dict[str, dict[str, str]] = {}
    for stub in LIBRARY.rglob("__init__.pyi"):
        package = module_name(stub.with_suffix(".py"))
        for node in ast.parse(stub.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                for alias in node.names:
                    targets.setdefault(package, {})[alias.asname or alias.name] = f"{package}.{node.module}"
    return targets


def imported_modules(path: Path, stubs: dict[str, dict[str, str]]) -> set[str]:
    """Every module `path` imports, at any depth (functions included), relative imports resolved; a name taken from
    a lazy package counts as an import of the submodule that defines it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + [node.module or ""]) if node.level else node.module
            base = base.rstrip(".")
            found.add(base)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    found.add(f"{base}.{alias.name}")
                elif alias.name in stubs.get(base, {}):
                    found.add(stubs[base][alias.name])
    return found


def string_constants(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def names_the_test_bed(text: str) -> bool:
    """Whether a string is a module or import path of the test bed (one `importlib` or `import_function` could load);
    messages that mention it as an example do not count."""
    return " " not in text and text.partition(":")[0].split(".")[0] == TEST_BED


def test_the_library_imports_nothing_from_the_test_bed():
    stubs = stub_targets()
    offenders = {
        name: sorted(found)
        for name, path in MODULES.items()
        if (found := {m for m in imported_modules(path, stubs) if m.split(".")[0] == TEST_BED})
        or any(names_the_test_bed(text) for text in string_constants(path))
    }
    assert offenders == {}


def test_the_library_has_no_import_cycle():
    stubs = stub_targets()
    graph = {
        name: {m for m in imported_modules(path, stubs) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def test_importing_every_library_module_leaves_the_test_bed_unimported():
    names = sorted(name for name in MODULES if ".vllm_backend.vllm_worker" not in name)
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == {TEST_BED!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
