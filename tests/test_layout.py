"""The layout rules of DESIGN.md, checked from the source with `ast` (nothing is imported):
no import cycle between proselab modules, and no `_private` name crossing a module boundary."""

import ast
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "proselab"


def parse_package(root):
    """{module name: (path, ast tree, is_package)} for every .py file under the package `root`."""
    modules = {}
    for path in sorted(Path(root).rglob("*.py")):
        parts = list(path.relative_to(Path(root).parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        modules[name] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)), is_pkg)
    return modules


def _type_checking_nodes(tree):
    """Ids of every node inside the body of an `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    guards = [n for n in ast.walk(tree) if isinstance(n, ast.If)
              and _dotted(n.test) in (["TYPE_CHECKING"], ["typing", "TYPE_CHECKING"])]
    return {id(n) for guard in guards for stmt in guard.body for n in ast.walk(stmt)}


def module_imports(name, tree, is_pkg, modules):
    """Yield (line, target module, imported name or None, bound alias or None, under TYPE_CHECKING)
    for every import of a package module anywhere in `tree` (functions included)."""
    skip = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules:  # `import p.x` binds p; `import p.x as y` binds y to p.x
                    bound = (a.asname, a.name) if a.asname else (a.name.split(".")[0],) * 2
                    yield node.lineno, a.name, None, bound, id(node) in skip
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                if node.level - 1 >= len(parts):
                    continue  # climbs out of the package
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in modules:  # `from .pkg import sub`: an edge to the submodule itself
                    yield node.lineno, sub, None, (a.asname or a.name, sub), id(node) in skip
                elif base in modules:
                    yield node.lineno, base, a.name, None, id(node) in skip


def import_graph(root):
    """{module: {imported module: "file:line" of one import}}; TYPE_CHECKING imports left out."""
    modules, graph = parse_package(root), {}
    for name, (path, tree, is_pkg) in modules.items():
        edges = graph.setdefault(name, {})
        for line, target, _, _, type_checking in module_imports(name, tree, is_pkg, modules):
            if target != name and not type_checking:
                edges.setdefault(target, f"{path.relative_to(Path(root).parent)}:{line}")
    return graph


def strongly_connected(graph):
    """Tarjan's algorithm: the strongly connected components of `graph`, each sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def find_cycles(graph):
    """One shortest cycle [a, b, ..., a] per strongly connected component of more than one module."""
    cycles = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        start, members, prev, queue = component[0], set(component), {}, [component[0]]
        for v in queue:  # breadth-first from `start` until an edge leads back to it
            if start in graph[v]:
                chain = [v]
                while chain[-1] != start:
                    chain.append(prev[chain[-1]])
                cycles.append(chain[::-1] + [start])
                break
            for w in sorted(graph[v]):
                if w in members and w not in prev and w != start:
                    prev[w] = v
                    queue.append(w)
    return cycles


def describe_cycles(graph, cycles):
    """Each cycle as `a -> b -> a`, then the file:line of every import along it."""
    lines = []
    for chain in cycles:
        lines.append(" -> ".join(chain))
        lines += [f"    {graph[a][b]}: {a} imports {b}" for a, b in zip(chain, chain[1:])]
    return "\n".join(lines)


def _dotted(node):
    """['a', 'b', 'c'] for the expression `a.b.c`, else None."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return head and head + [node.attr]
    return None


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def private_crossings(root):
    """["file:line: _name from module"] for every private name one module takes from another."""
    modules, found = parse_package(root), []
    for name, (path, tree, is_pkg) in modules.items():
        where = path.relative_to(Path(root).parent)
        aliases = {}  # names this file binds to package modules
        for line, target, imported, bound, _ in module_imports(name, tree, is_pkg, modules):
            if bound:
                aliases[bound[0]] = bound[1]
            if imported and _is_private(imported) and target != name:
                found.append(f"{where}:{line}: {imported} imported from {target}")
        for node in ast.walk(tree):
            chain = _dotted(node.value) if isinstance(node, ast.Attribute) and _is_private(node.attr) else None
            target = chain and chain[0] in aliases and ".".join([aliases[chain[0]]] + chain[1:])
            if target in modules and target != name:
                found.append(f"{where}:{node.lineno}: {'.'.join(chain)}.{node.attr} reaches into {target}")
    return sorted(set(found))


# -- the package itself ---------------------------------------------------------------------------


def test_no_import_cycles():
    graph = import_graph(PACKAGE)
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s) between proselab modules:\n" + describe_cycles(graph, cycles)


def test_no_private_names_cross_modules():
    found = private_crossings(PACKAGE)
    assert not found, f"{len(found)} private name(s) used outside their module:\n" + "\n".join(found)


# -- the checker, on small synthetic packages ------------------------------------------------------


def write_package(tmp_path, files):
    for rel, text in {"__init__.py": "", **files}.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path / "pkg"


def test_checker_finds_cycle_through_function_level_import(tmp_path):
    root = write_package(tmp_path, {
        "a.py": "from .sub.c import g\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..b import f\ndef g(): return f()\n",
        "b.py": "def f():\n    from . import a\n    return a\n",
        # d -> e only under TYPE_CHECKING: not a cycle
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .e import E\n",
        "e.py": "from . import d\nclass E: pass\n",
    })
    graph = import_graph(root)
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.c", "pkg.b", "pkg.a"]]
    assert "pkg/b.py:2: pkg.b imports pkg.a" in describe_cycles(graph, find_cycles(graph))


def test_checker_finds_private_import(tmp_path):
    root = write_package(tmp_path, {
        "a.py": "from .b import _helper, public, __all__\n",
        "b.py": "__all__ = ['public']\ndef public(): pass\ndef _helper(): pass\n",
    })
    assert private_crossings(root) == ["pkg/a.py:1: _helper imported from pkg.b"]


def test_checker_finds_private_attribute_through_module_alias(tmp_path):
    root = write_package(tmp_path, {
        "a.py": "from . import b as bee\nimport pkg.c as pc\nimport pkg.c\n\n"
                "def run():\n    return bee._helper() + pc._x + pkg.c._y + bee.public()\n",
        "b.py": "def public(): pass\ndef _helper(): pass\n",
        "c.py": "_x = _y = 1\n",
    })
    assert private_crossings(root) == [
        "pkg/a.py:6: bee._helper reaches into pkg.b",
        "pkg/a.py:6: pc._x reaches into pkg.c",
        "pkg/a.py:6: pkg.c._y reaches into pkg.c",
    ]


def test_checker_passes_clean_package(tmp_path):
    root = write_package(tmp_path, {
        "a.py": "from .b import public\nfrom . import b\n_own = 1\n\ndef f():\n    return _own + b.public()\n",
        "b.py": "import os\n\ndef public(): return _p()\ndef _p(): return os.sep\n",
    })
    assert find_cycles(import_graph(root)) == []
    assert private_crossings(root) == []
