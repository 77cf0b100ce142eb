"""The package's shape, read from the source alone (AST, nothing imported): no import cycles, each layer
imports only from the layers below it, short functions on the trial path, Optuna's private API behind one
module."""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT_PACKAGE = "sweeplab"  # imports it lazily (`sweeplab.report`); left out of every check
PLUGIN = "hydra_plugins"

# Lower layers never import higher ones. A module belongs to the longest prefix listed.
LAYERS = {
    "sweeplab.errors": 0,
    "sweeplab.config": 0,
    "sweeplab.hydra_errors": 0,
    "sweeplab.data": 1,
    "sweeplab.models": 1,
    "sweeplab.search": 2,
    "sweeplab.launching": 2,  # the study's side and the process side call each other's way
    "sweeplab.training": 3,
    "sweeplab.reporting": 4,
    "sweeplab.predict": 4,
    "sweeplab.sweeper": 5,
    "sweeplab.startup": 5,  # what the entry points load as a run starts
}
# Beyond the order: these never import each other's way.
FORBIDDEN = {
    ("sweeplab.predict", "sweeplab.reporting"),
    ("sweeplab.reporting", "sweeplab.predict"),
    ("sweeplab.reporting", "sweeplab.training"),
}

# The modules a trial passes through, under src/.
TRIAL_PATH = (
    "sweeplab/search/",
    "sweeplab/launching/",
    "sweeplab/training/",
    "sweeplab/sweeper.py",
    "sweeplab/hydra_errors.py",
    "hydra_plugins/",
)
MAX_FUNCTION_LINES = 60

# Optuna internals: only the adapter that wraps them may touch them.
OPTUNA_PRIVATE = {"_storage", "_study_id", "_trial_id", "_backend", "_get_stale_trial_ids"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module of src/ it imports
    line: int

    def where(self) -> str:
        return f"{_relative(self.source)}:{self.line}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _relative(module: str) -> str:
    return _modules()[module].relative_to(SRC.parent).as_posix()


@cache
def _tree(module: str) -> ast.Module:
    path = _modules()[module]
    return ast.parse(path.read_text(), filename=str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below `node` at any depth, except the bodies of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield child
        yield from _runtime_nodes(child)


def _internal(name: str, known: dict[str, Path]) -> str | None:
    """The module of src/ that `name` refers to: the longest known prefix of it."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in known:
            return ".".join(parts[:n])
    return None


def imports_of(module: str, tree: ast.Module, known: dict[str, Path]) -> list[Import]:
    """What `module` imports from src/ when it runs (at any depth, not under TYPE_CHECKING)."""
    is_package = module in known and known[module].name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in _runtime_nodes(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for name in names:
            target = _internal(name, known)
            if target is not None and target != module:
                found.append(Import(module, target, node.lineno))
    return found


@cache
def _graph() -> tuple[Import, ...]:
    known = _modules()
    edges = {i for m in known if m != ROOT_PACKAGE for i in imports_of(m, _tree(m), known)}
    return tuple(
        sorted((i for i in edges if i.target != ROOT_PACKAGE), key=lambda i: (i.source, i.line, i.target))
    )


def _cycles(edges: tuple[Import, ...]) -> list[list[str]]:
    """The strongly connected groups of two or more modules (Tarjan), each sorted."""
    succ: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        succ[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted({e.source for e in edges} | {e.target for e in edges}):
        if v not in index:
            visit(v)
    return sorted(groups)


def _loop_through(start: str, edges: tuple[Import, ...], members: set[str]) -> list[Import]:
    """The shortest chain of imports from `start` back to itself inside one cycle group (breadth first)."""
    reached: dict[str, Import] = {}  # module -> the import that first reached it
    queue = deque([start])
    while queue:
        here = queue.popleft()
        for e in edges:
            if e.source != here or e.target not in members or e.target in reached:
                continue
            reached[e.target] = e
            if e.target == start:
                chain = [e]
                while chain[0].source != start:
                    chain.insert(0, reached[chain[0].source])
                return chain
            queue.append(e.target)
    return []


def _layer(module: str) -> str | None:
    keys = [k for k in LAYERS if module == k or module.startswith(k + ".")]
    return max(keys, key=len) if keys else None


def _sweeplab_modules() -> list[str]:
    return [m for m in _modules() if m.startswith(ROOT_PACKAGE + ".")]


def _functions(
    tree: ast.AST, prefix: str = ""
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method at any depth, with its qualified name."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _private_uses(tree: ast.AST) -> dict[str, list[int]]:
    """Optuna's private names a module touches (`x._storage`, `getattr(x, "_backend")`), with their lines."""
    uses: dict[str, list[int]] = defaultdict(list)
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.Name):
            name = node.id
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value
        if name in OPTUNA_PRIVATE and node.lineno not in uses[name]:
            uses[name].append(node.lineno)
    return {name: sorted(lines) for name, lines in uses.items()}


def test_the_import_reader_counts_imports_at_any_depth_but_not_type_checking_ones_and_finds_rings():
    known = {n: Path(f"{n.replace('.', '/')}.py") for n in ("pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e")}
    known["pkg"] = Path("pkg/__init__.py")
    code = (
        "from typing import TYPE_CHECKING\n"
        "import pkg.b\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.c import Thing\n"
        "else:\n"
        "    from . import d\n"
        "def f():\n"
        "    from pkg.e import thing\n"
    )
    found = {(i.target, i.line) for i in imports_of("pkg.a", ast.parse(code), known)}
    assert found == {("pkg.b", 2), ("pkg.d", 6), ("pkg.e", 8)}
    assert {i.target for i in imports_of("pkg", ast.parse("from pkg.a import x\n"), known)} == {"pkg.a"}
    ring = (Import("pkg.a", "pkg.b", 1), Import("pkg.b", "pkg.c", 1), Import("pkg.c", "pkg.a", 1))
    assert _cycles((*ring, Import("pkg.c", "pkg.d", 2))) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_modules_import_each_other_directly_or_through_others():
    edges = _graph()
    assert len(edges) > 50, "the import reader found almost no imports: it is broken"
    problems = []
    for group in _cycles(edges):
        members = set(group)
        problems.append(f"  cycle among {', '.join(group)}; its loops:")
        loops = dict.fromkeys(frozenset(loop) for m in group if (loop := _loop_through(m, edges, members)))
        for loop in loops:
            chain = sorted(loop, key=lambda e: (e.source, e.line))  # rotate to start at its first module
            ordered = [chain[0]]
            while len(ordered) < len(chain):
                ordered.append(next(e for e in chain if e.source == ordered[-1].target))
            problems.extend(f"    {e.where()}: {e.source} imports {e.target}" for e in ordered)
            problems.append("")
    if problems:
        pytest.fail("import cycles in src/ (runtime imports at any depth):\n" + "\n".join(problems))


def test_modules_import_only_from_their_own_or_lower_layers():
    unplaced = sorted(m for m in _sweeplab_modules() if _layer(m) is None)
    if unplaced:
        pytest.fail(f"modules of src/sweeplab in no layer (add them to LAYERS): {', '.join(unplaced)}")
    problems = []
    for e in _graph():
        here, there = _layer(e.source), _layer(e.target)
        if here is None or there is None:  # the plugin: the next test
            continue
        if LAYERS[there] > LAYERS[here]:
            problems.append(
                f"  {e.where()}: {e.source} (layer {LAYERS[here]}, {here}) imports {e.target} "
                f"(layer {LAYERS[there]}, {there})"
            )
        elif (here, there) in FORBIDDEN:
            problems.append(f"  {e.where()}: {e.source} imports {e.target} ({here} must not import {there})")
    if problems:
        pytest.fail("imports against the layering:\n" + "\n".join(problems))


def test_nothing_in_sweeplab_imports_the_hydra_plugin():
    bad = [
        f"  {e.where()}: {e.source} imports {e.target}"
        for e in _graph()
        if e.source.startswith(ROOT_PACKAGE + ".")
        and (e.target == PLUGIN or e.target.startswith(PLUGIN + "."))
    ]
    if bad:
        pytest.fail("src/sweeplab imports the Hydra plugin:\n" + "\n".join(bad))


def test_functions_on_the_trial_path_fit_in_60_lines():
    long = []
    for module, path in _modules().items():
        if not path.relative_to(SRC).as_posix().startswith(TRIAL_PATH):
            continue
        for name, fn in _functions(_tree(module)):
            length = fn.end_lineno - fn.lineno + 1
            if length > MAX_FUNCTION_LINES:
                long.append(f"  {_relative(module)}:{fn.lineno} {name} ({length} lines)")
    if long:
        pytest.fail(f"functions on the trial path over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long))


def test_optunas_private_attributes_are_touched_by_one_module_at_most():
    users = {m: uses for m in _sweeplab_modules() if (uses := _private_uses(_tree(m)))}
    detail = "\n".join(
        f"  {_relative(m)}: "
        + "; ".join(f"{name} (lines {', '.join(map(str, lines))})" for name, lines in sorted(uses.items()))
        for m, uses in sorted(users.items())
    )
    if len(users) > 1:
        pytest.fail(
            f"Optuna's private attributes ({', '.join(sorted(OPTUNA_PRIVATE))}) are used in {len(users)} modules; "
            f"only one (the Optuna adapter) may:\n{detail}"
        )
