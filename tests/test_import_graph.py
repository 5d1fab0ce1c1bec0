"""No import circles inside the package, lazy (function-level) imports included.

A circle hidden behind a lazy import works until someone moves the import to the top of the file
(or imports the other module first) and gets a half-initialised module. The graph is read from the
source, so the test needs no imports of the package and names the circle it finds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import stillmotion

ROOT = Path(stillmotion.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps.update(n for n in names if n in mods and n != name)
        graph[name] = deps
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    graph = _graph()
    # a lazy import and a relative one are both seen (the test would pass vacuously otherwise)
    assert "stillmotion.cli.demo" in graph["stillmotion.cli"]
    assert "stillmotion.jobs.pg_store" in graph["stillmotion.jobs.backends"]
    assert "stillmotion.service" in graph["stillmotion.jobs.worker"]
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back() -> None:
    assert _circles(_graph()) == []


MAX_MODULE_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    """#25: a module that grows past this is split along a real seam (the built player is HTML)."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in ROOT.rglob("*.py")}
    assert len(sizes) > 50 and max(sizes.values()) > 300  # the package was read
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_the_package_root_holds_few_modules() -> None:
    """#25: the folders name the rooms; the root keeps what starts the program and what every room uses."""
    root = sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(root) <= 8, root
