"""The package's imports go one way: no two modules of vimtool import each other, directly or in a loop.

Read from the source with `ast` (nothing is imported), counting module-level and function-local imports alike
(a local import is still a dependency); imports under `if TYPE_CHECKING:` are ignored.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(root: Path) -> dict[str, Path]:
    mods = {}
    for path in (root / "vimtool").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _imports(tree: ast.AST) -> list[str]:
    """Every `vimtool...` name imported in `tree`, outside `if TYPE_CHECKING:` blocks."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                out.extend(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                out.extend([child.module] + [f"{child.module}.{a.name}" for a in child.names])
            visit(child)

    visit(tree)
    return [n for n in out if n == "vimtool" or n.startswith("vimtool.")]


def import_graph(root: Path) -> dict[str, set[str]]:
    mods = _modules(root)

    def owner(name: str) -> str:  # `vimtool.nn.noble.NobleLinear` -> the module `vimtool.nn.noble`
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    return {m: {owner(n) for n in _imports(ast.parse(p.read_text(encoding="utf-8")))} - {m} for m, p in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_loop_of_three():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_vimtool_imports_itself_through_others():
    assert cycles(import_graph(ROOT)) == []


def test_layers_never_import_training_code():
    # model code knows nothing of training (optimizer policy lives in vimtool/train/optim.py)
    graph = import_graph(ROOT)
    low = [m for m in graph if m.startswith(("vimtool.nn", "vimtool.models"))]
    assert low and all(not t.startswith("vimtool.train") for m in low for t in graph[m])
