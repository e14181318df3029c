"""The package's import graph has no cycle (imports inside functions and under ``if
TYPE_CHECKING:`` included: a type checker's import across layers is a cycle in the design too), and
no core module imports the toolkit: layers that show (core below toolkit)."""

import ast
import os
from pathlib import Path

import momentumrnn

SRC = os.path.dirname(os.path.dirname(momentumrnn.__file__))


def _modules():
    out = {}
    for root, dirs, files in os.walk(os.path.join(SRC, "momentumrnn")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                name = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
                out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def _resolve(name, mods):
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _edges(mod, path, mods):
    base = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
    found = set()
    tree = ast.parse(Path(path).read_text())
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            anchor = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1]) if node.level else ""
            target = (anchor + "." + node.module if node.module else anchor) if node.level else node.module
            targets = [target + "." + a.name for a in node.names] + [target]
        for t in targets:
            r = _resolve(t, mods)
            if r and r != mod and not mod.startswith(r + "."):  # a submodule does not import its package
                found.add(r)
    return found


def _cycles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _edges(m, p, mods) for m, p in mods.items()}
    assert _cycles(graph) == []


def test_the_core_never_imports_the_toolkit():
    mods = _modules()
    for m, p in mods.items():
        if not m.startswith(("momentumrnn.toolkit", "momentumrnn.__main__")):
            assert not any(e.startswith("momentumrnn.toolkit") for e in _edges(m, p, mods)), m
