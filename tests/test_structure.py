"""The package's shape: no import cycle among its modules, and dispatch on the
array module only in the backends (docs/architecture.md)."""
import ast
import os

import gru_cy

PKG = os.path.dirname(os.path.abspath(gru_cy.__file__))


def _modules():
    out = {}
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def _imports(name, path, modules):
    """The package's modules that ``name`` imports, anywhere in the file (lazy
    imports inside functions included); a module's parent packages, which
    Python runs first, do not count."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    deps = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                deps.add(sub if sub in modules else base)
    return {d for d in deps if d in modules and d != name}


def _graph():
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def test_no_import_cycle():
    graph = _graph()
    state = {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_layering():
    graph = _graph()
    # the CUDA loader imports nothing compiled; the network pieces never import
    # the file formats that depend on them
    assert not any(d.startswith("gru_cy._cpu") for d in graph["gru_cy.cuda"])
    for m in graph:
        if m.startswith("gru_cy.nn"):
            assert "gru_cy.darknet" not in graph[m], m


def test_array_module_dispatch_only_in_the_backends():
    for name, path in _modules().items():
        if name.startswith("gru_cy.backends"):
            continue
        text = open(path, encoding="utf-8").read()
        for pattern in ("xp is np", "xp is not np", "is numpy", "__module__"):
            assert pattern not in text, f"{name}: {pattern!r}"
