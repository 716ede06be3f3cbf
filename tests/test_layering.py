"""The package's plan, checked from the source (nothing is imported): commands at the top, role packages below them,
imports pointing down one stack, no cycles, nothing importing the benchmarks (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "glsim_pl"

COMMANDS = {"train", "eval", "predict", "export", "visualize", "demo", "aggregate", "reproduce", "dataset",
            "pretrain_synthetic"}  # fmt: skip
TOP_LEVEL = COMMANDS | {"errors", "__init__"}
# package -> the glsim_pl packages it may import besides itself and errors (bottom of the stack first)
MAY_IMPORT = {
    "models": set(),
    "plots": {"models"},
    "utils": {"plots"},
    "data": {"utils"},
    "training": {"models", "data", "utils", "plots"},
    "analysis": {"models", "data", "utils", "plots"},
    "callbacks": {"models", "data", "utils", "plots", "training", "analysis"},
    "model_io": {"models", "data", "utils", "training"},
    "config": {"models", "data", "utils", "training", "model_io", "analysis"},
    "commands": {"models", "data", "utils", "plots", "training", "analysis", "callbacks", "model_io", "config"},
}


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(package: Path) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every glsim_pl module ``path`` imports, at the top or inside a function (``from pkg import module`` counts as
    the module)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "glsim_pl"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "glsim_pl":
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found - {name}


def package_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    if len(parts) == 2 and parts[1] in TOP_LEVEL:
        return "errors" if parts[1] == "errors" else "commands"
    return parts[1]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def violations(package: Path) -> list[str]:
    """Every way the tree under ``package`` breaks the plan, one line each."""
    modules = modules_of(package)
    graph = {name: imports_of(path, name, set(modules)) for name, path in modules.items()}
    found = []
    for name in modules:
        parts = name.split(".")
        if len(parts) == 2 and parts[1] not in TOP_LEVEL and not (package / parts[1]).is_dir():
            found.append(f"{name}: a library module at the top (the top holds commands, errors.py, __init__.py)")
    for name, targets in graph.items():
        source = package_of(name)
        for target in sorted(targets):
            dest = package_of(target)
            if dest == "bench" and source != "bench":
                found.append(f"{name} imports {target}: nothing outside bench/ imports bench/")
            elif source == dest == "commands":
                found.append(f"{name} imports {target}: a command imports another command")
            elif source in MAY_IMPORT and dest not in MAY_IMPORT[source] | {source, "errors"}:
                found.append(f"{name} imports {target}: {source}/ may not import {dest}/")
    if cycle := find_cycle(graph):
        found.append("import cycle: " + " -> ".join(cycle))
    return found


def test_the_package_follows_its_plan() -> None:
    assert violations(PACKAGE) == []


def test_matplotlib_is_imported_only_under_plots() -> None:
    outside = []
    for name, path in modules_of(PACKAGE).items():
        if package_of(name) in ("plots", "bench"):
            continue
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in typing_only:
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                outside += [f"{name}: {m}" for m in mods if m.split(".")[0] == "matplotlib"]
    assert outside == []


def _write(root: Path, files: dict[str, str]) -> Path:
    package = root / "glsim_pl"
    for rel, text in {"__init__.py": "", "errors.py": "", **files}.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    return package


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"helpers.py": ""}, "a library module at the top"),
        ({"train.py": "from glsim_pl.bench.x import y\n", "bench/__init__.py": "", "bench/x.py": ""}, "bench/"),
        ({"train.py": "from glsim_pl import eval\n", "eval.py": ""}, "another command"),
        (
            {
                "models/__init__.py": "",
                "models/a.py": "def f():\n    from glsim_pl.data import b\n",
                "data/__init__.py": "",
                "data/b.py": "",
            },
            "models/ may not import data/",
        ),  # fmt: skip
        (
            {
                "models/__init__.py": "",
                "models/a.py": "from glsim_pl.models.b import x\n",
                "models/b.py": "def f():\n    from glsim_pl.models.a import y\n",
            },
            "import cycle",
        ),  # fmt: skip
    ],
)
def test_each_rule_catches_its_break(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    found = violations(_write(tmp_path, files))
    assert any(expected in line for line in found), found


def test_tests_import_no_other_test_file() -> None:
    """Shared test code lives in tests/helpers/, so a test file can be read (and moved) on its own."""
    found = []
    for path in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                leaf = module.rsplit(".", 1)[-1]
                if leaf.startswith("test_") or leaf == "conftest":
                    found.append(f"{path.name}: {module}")
    assert found == []
