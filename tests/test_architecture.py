"""muxsim's import graph has no circles and nothing imports upward (docs/architecture.md).

Run ``python tests/test_architecture.py`` to print the layers and any violation; the tests below
check the same. Every import counts, including those inside functions: a lazy import that goes
upward is still a dependency that goes upward.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "muxsim"

#: Components (top-level modules and subpackages of muxsim) by layer, bottom first. A module may
#: import its own component and any component of a lower layer, nothing else.
LAYERS = [
    ("_version", "_native", "catalog", "schema", "files", "procs", "output_schema"),
    ("perf", "workload", "core"),
    ("sim", "live", "metrics", "timeline", "html_report"),
    ("config", "report"),
    ("experiment",),
    ("api",),
    ("cli",),
    ("__init__", "__main__"),
]
LAYER = {c: k for k, comps in enumerate(LAYERS) for c in comps}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports() -> dict[str, set[str]]:
    """Module -> the muxsim modules it imports (a ``from pkg import name`` of a submodule counts as
    that submodule)."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for mod, f in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "muxsim"}
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, f.name == "__init__.py", node)
                if target.split(".")[0] != "muxsim":
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    deps.add(sub if sub in mods else target)
        graph[mod] = {d for d in deps if d != mod}
    return graph


def component(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a component that is not lower than (or the same as) the importer's."""
    bad = []
    for mod, deps in sorted(graph.items()):
        c = component(mod)
        for d in sorted(deps):
            dc = component(d)
            if dc != c and not LAYER[dc] < LAYER[c]:
                bad.append(f"{mod} (layer {LAYER[c]}) imports {d} (layer {LAYER[dc]})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_component_has_a_layer():
    assert sorted({component(m) for m in modules()} - set(LAYER)) == []


def test_no_import_circles():
    assert cycles(imports()) == []


def test_nothing_imports_upward():
    assert upward_imports(imports()) == []


if __name__ == "__main__":
    g = imports()
    for k, comps in enumerate(LAYERS):
        print(f"layer {k}: {', '.join(comps)}")
    unknown = sorted({component(m) for m in modules()} - set(LAYER))
    problems = [f"no layer for component {c}" for c in unknown]
    if not unknown:
        problems += [" <-> ".join(c) for c in cycles(g)] + upward_imports(g)
    print("\n".join(problems) if problems else f"{len(g)} modules: no circles, nothing imports upward")
    sys.exit(1 if problems else 0)
