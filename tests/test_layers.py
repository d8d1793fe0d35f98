"""The shape of the code, read from source with `ast` (docs/design.md "Layers").

- No import cycle between the modules of `sm` and `srtypes`: every import that runs counts,
  the ones inside functions too (a function-level import only delays a cycle to the first
  call); imports under `if TYPE_CHECKING:` never run and do not count. A cycle is reported as
  the modules around it.
- `sm.api` never reaches into a data path's server side (`sm.nbd.server`, `sm.nbd.serving`,
  `sm.nbd.control`): it pauses and resumes through the drivers' `sm_vdi_pause` /
  `sm_vdi_resume` (`sm.vdipause`).
- No module finds files by walking up from its own `__file__` past its package (a
  `Path(__file__).parent.parent`, `parents[n]`, `dirname(dirname(__file__))`): an installed
  package has no checkout around it. A file next to the module (`Path(__file__).with_name`,
  `.parent`) is its own.
"""

from __future__ import annotations

import ast
import functools
import itertools
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sm", "srtypes")

KNOWN_CYCLES: list[frozenset[str]] = [
    # removed by the chain core (issue 17): the File and LVHD chain operations (snapshot,
    # revert, vdiops, resize, the collector's steps) call each other and their SR's repository
    frozenset(f"srtypes.{sr}.{m}" for sr in ("file", "lvhd")
              for m in ("chainsr", "gc", "gcleaf", "gcops", "provision", "repo", "resize",
                        "revert", "scan", "snapshot", "srops", "vdiops")),
]
"""Cycles being removed by a rewrite in progress; a cycle is tolerated only inside one of
these sets (one that shrinks is fine, one that grows or a new one fails)."""

API_MUST_NOT_IMPORT = ("sm.nbd.server", "sm.nbd.serving", "sm.nbd.control")


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _modules() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST, *, typing: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under `node`; those under `if TYPE_CHECKING:` only if `typing`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child) and not typing:
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]),
                                         typing=typing)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _import_nodes(child, typing=typing)


def _imports(name: str, path: Path, modules: dict[str, Path], *,
             typing: bool = False) -> dict[str, int]:
    """The project modules `name` imports -> the line of the first such import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in _import_nodes(_tree(path), typing=typing):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.append(sub if sub in modules else module)
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a non-module name
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for succ in edges:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp.append(member)
                        if member == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _cycle(graph: dict[str, dict[str, int]], comp: list[str]) -> str:
    """One cycle through the first module of `comp`, with the line of each import."""
    members, start = set(comp), comp[0]
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth first: the shortest way back to `start`
        node = queue.pop(0)
        for succ in sorted(graph[node]):
            if succ == start:
                hops = [*paths[node], start]
                steps = [f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(hops)]
                return " -> ".join(steps) + f" -> {start}"
            if succ in members and succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    raise AssertionError(f"no cycle through {start}")


def test_the_graph_is_read_right() -> None:
    graph = _graph()
    assert "sm.vhd" in graph["sm.nbd.export"] or "sm.vhd" in graph["sm.api.data"]
    assert "sm.nbd.server" in graph["sm.nbd.serving"]  # an import inside a function counts
    assert "sm.api.manager" not in graph["sm.api.livepause"]  # TYPE_CHECKING does not
    cyclic = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert _components(cyclic) == [["a", "b", "c"]]
    assert _cycle(cyclic, ["a", "b", "c"]) == "a (line 1) -> b (line 2) -> c (line 3) -> a"


def test_no_import_cycles() -> None:
    graph = _graph()
    bad = [comp for comp in _components(graph)
           if not any(set(comp) <= known for known in KNOWN_CYCLES)]
    assert not bad, "import cycles:\n" + "\n".join(_cycle(graph, comp) for comp in bad)


def test_the_api_pauses_data_paths_through_the_drivers() -> None:
    modules = _modules()
    leaks = [f"{name} imports {target} (line {line})"
             for name, path in modules.items() if name.startswith("sm.api")
             for target, line in _imports(name, path, modules, typing=True).items()
             if target in API_MUST_NOT_IMPORT]
    assert not leaks, "\n".join(leaks)


def _above_package(node: ast.AST) -> bool:
    """`node` walks up from `__file__` past the module's own directory."""
    def from_file(n: ast.AST) -> bool:
        return any(isinstance(x, ast.Name) and x.id == "__file__" for x in ast.walk(n))

    if isinstance(node, ast.Attribute) and node.attr == "parent":
        inner = node.value
        if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) \
                and inner.func.attr in ("resolve", "absolute"):
            inner = inner.func.value
        return isinstance(inner, ast.Attribute) and inner.attr == "parent" and from_file(inner)
    if isinstance(node, ast.Attribute) and node.attr == "parents":
        return from_file(node)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "dirname" and node.args:
        arg = node.args[0]
        return isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) \
            and arg.func.attr == "dirname" and from_file(arg)
    return False


def test_no_paths_above_the_own_package() -> None:
    found = sorted({f"{path.relative_to(ROOT)}:{node.lineno}"
                    for path in _modules().values()
                    for node in ast.walk(_tree(path))
                    if _above_package(node)})
    assert not found, "paths computed above the module's package:\n" + "\n".join(found)
    samples = {"Path(__file__).resolve().parent.parent": True,
               "Path(__file__).parents[2]": True,
               "os.path.dirname(os.path.dirname(os.path.abspath(__file__)))": True,
               "Path(__file__).with_name('plugin.py')": False,
               "Path(__file__).parent / 'data'": False}
    for source, above in samples.items():
        tree = ast.parse(source)
        assert any(_above_package(n) for n in ast.walk(tree)) == above, source
