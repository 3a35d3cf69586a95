"""The package's shape: no import cycles, no library module importing a command-line module or the
checkout's `configs`, small modules, docs links that resolve, and an installed package that works
without the checkout on the path."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import outside_checkout_env

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pkd_jax"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports too), as absolute names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from pkg import module` imports the module, not just pkg
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found


def is_cli(name: str, path: Path) -> bool:
    """Command-line modules: run as programs (`python -m`), or a package's `cli`/`__main__`."""
    return name.rsplit(".", 1)[-1] in ("cli", "__main__") or 'if __name__ == "__main__":' in path.read_text()


GRAPH = {name: {m for m in imports_of(path) if m in MODULES} - {name} for name, path in MODULES.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycles():
    assert len(GRAPH) > 60  # the walk found the package
    assert find_cycles(GRAPH) == []


def test_library_modules_import_no_cli_module_and_no_configs():
    cli = {name for name, path in MODULES.items() if is_cli(name, path)}
    assert {"pkd_jax.main", "pkd_jax.predict", "pkd_jax.bench", "pkd_jax.weights.cli"} <= cli
    bad = []
    for name, path in MODULES.items():
        if name in cli:
            continue
        imported = imports_of(path)
        bad += [f"{name} imports {m}" for m in sorted(imported & cli)]
        bad += [f"{name} imports {m}" for m in sorted(imported) if m == "configs" or m.startswith("configs.")]
    assert bad == []


def test_command_line_modules_are_thin():
    fat = [
        f"{name}: {len(path.read_text().splitlines())} lines"
        for name, path in MODULES.items()
        if is_cli(name, path) and len(path.read_text().splitlines()) > 110
    ]
    assert fat == []


def test_no_module_is_over_the_size_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_docs_the_code_points_to_exist_and_no_docstring_points_outside_the_repository():
    missing, outside = [], []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for word in ("REFERENCE", "DESIGN notes", "DESIGN.md"):
            if word in text:
                outside.append(f"{path.relative_to(REPO)} mentions {word}")
        for token in text.replace("`", " ").replace("(", " ").replace(")", " ").split():
            if token.startswith("docs/") and ".md" in token:
                page = token[: token.index(".md") + 3]
                if not (REPO / page).is_file():
                    missing.append(f"{path.relative_to(REPO)} -> {page}")
    assert outside == [] and missing == []


def test_outside_the_checkout_only_the_installed_package_is_importable(tmp_path):
    code = "import importlib.util as u; print(u.find_spec('configs'), u.find_spec('pkd_jax') is not None)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=outside_checkout_env(), capture_output=True, text=True
    )
    assert done.stdout.split() == ["None", "True"], done.stderr


def test_the_architecture_page_lists_every_module():
    page = (REPO / "docs" / "architecture.md").read_text()
    top_level = {"api.py", "defaults.py", "metrics.py", "provenance.py"}
    unlisted = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name in ("__init__.py", "__main__.py") or (
            len(rel.parts) == 1 and is_cli(module_name(path), path)
        ):
            continue  # packages, and command lines listed by their `python -m` command
        name = rel.name if str(rel) in top_level else rel.as_posix()
        if f"`{name}`" not in page:
            unlisted.append(rel.as_posix())
    assert unlisted == []
