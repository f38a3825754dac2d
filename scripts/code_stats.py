"""The longest functions of the ltbench package and its import circles (relative imports at any level,
TYPE_CHECKING ones included), for keeping the code small.

    python scripts/code_stats.py [REPO]        (default: the repository this script is in)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def _module(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(name: str, is_package: bool, node: ast.ImportFrom, mods: dict[str, Path]) -> list[str]:
    """The ltbench modules a relative ``from ... import`` names (a module, or the modules it imports from
    a package)."""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    target = ".".join(base + ([node.module] if node.module else []))
    found = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
    return found or ([target] if node.module and target in mods else [])


def main(root: Path) -> None:
    paths = sorted((root / "ltbench").rglob("*.py"))
    mods = {_module(root, p): p for p in paths}
    lengths: list[tuple[int, str]] = []
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                targets = _imported(name, path.name == "__init__.py", node, mods)
                edges.setdefault(name, set()).update(t for t in targets if t != name)
    folders: dict[str, list[int]] = {}
    for path in mods.values():
        folder = str(path.parent.relative_to(root))
        folders.setdefault(folder, []).append(len(path.read_text().splitlines()))
    print(f"lines in ltbench/: {sum(sum(v) for v in folders.values())} in {len(mods)} modules")
    print("modules per folder:", ", ".join(f"{f}/ {len(v)} ({sum(v)} lines)" for f, v in sorted(folders.items())))
    print("longest functions:", ", ".join(f"{n} ({k} lines)" for k, n in sorted(lengths, reverse=True)[:5]))
    circles = [c for c in _strongly_connected(list(mods), edges) if len(c) > 1]
    print(f"import circles: {len(circles)}" + "".join(f"\n  {' <-> '.join(sorted(c))}" for c in circles))


def _strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            groups.append(group)

    for v in nodes:
        if v not in index:
            visit(v)
    return groups


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
