"""The add-on's modules import each other without cycles (docs/architecture.md: one job per
module, each question answered in one file).

The graph is read from the source with ``ast``, not from ``sys.modules``: every ``import``
and ``from ... import`` of a ``trigger_relay`` module anywhere in a file counts, at the top,
inside a function (an import deferred to break a cycle is still one) or under
``TYPE_CHECKING``; relative imports are resolved, and ``from trigger_relay import x`` is an
import of the module ``trigger_relay.x`` when there is one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import trigger_relay

PACKAGE = "trigger_relay"
SOURCE = Path(trigger_relay.__file__).resolve().parent


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under ``root``: dotted name → file."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(
    name: str, path: Path, modules: dict[str, Path], package: str
) -> Iterator[str]:
    """The package's modules that the file of module ``name`` imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _in_package(alias.name, modules, package)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # `from . import x` in a.b (a module) is relative to a; in a package's
                # __init__, to the package itself.
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    yield submodule
                else:
                    yield from _in_package(source, modules, package)


def _in_package(dotted: str, modules: dict[str, Path], package: str) -> Iterator[str]:
    if dotted != package and not dotted.startswith(f"{package}."):
        return
    # `import trigger_relay.a.b` of something that is no module (an attribute): its module.
    while dotted not in modules and "." in dotted:
        dotted = dotted.rsplit(".", 1)[0]
    if dotted in modules:
        yield dotted


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {
        name: set(imported_modules(name, path, modules, package)) - {name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle of each strongly connected component of more than one module (Tarjan's
    algorithm), as a path that starts and ends with the same module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth first)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def test_the_add_on_has_no_import_cycle() -> None:
    graph = import_graph(SOURCE, PACKAGE)
    assert (
        "trigger_relay.perform.core" in graph["trigger_relay.perform.outcome"]
    )  # the graph is read

    found = [" -> ".join(cycle) for cycle in cycles(graph)]
    assert not found, "import cycles among trigger_relay's modules:\n" + "\n".join(found)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Deferred, relative, ``from package import module`` and ``TYPE_CHECKING`` imports all
    count; imports of other packages do not."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from pkg import b\n",
        "b.py": "from .sub.c import thing\n",
        "sub/__init__.py": "from .. import d\n",
        "sub/c.py": "import pkg.a.attribute\nimport os\nthing = 1\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import c\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)

    graph = import_graph(root, "pkg")

    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub": {"pkg.d"},
        "pkg.sub.c": {"pkg.a"},
        "pkg.d": {"pkg.sub.c"},
    }
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


#: The add-on's layers (docs/architecture.md, "The add-on"): the shared base, the parts, and
#: what wires the parts into Django (apps, checks, admin, commands, migrations, and the
#: deprecated 0.1 paths).
BASE = {f"{PACKAGE}.{name}" for name in ("conf", "states", "compat", "schema", "queries", "models")}
PARTS = ("firing", "perform", "celery", "worker")
#: The one dependency between parts: the worker's process serves the activity.
PART_USES = {"worker": {"perform"}}


def part_of(module: str) -> str | None:
    name = module.removeprefix(f"{PACKAGE}.").split(".")[0]
    return name if name in PARTS else None


def layering_problems(graph: dict[str, set[str]]) -> list[str]:
    """Each import that crosses the layers the wrong way: the base imports only the base; a
    part imports the base, itself and the parts of PART_USES."""
    problems = []
    for module, targets in sorted(graph.items()):
        part = part_of(module)
        if module in BASE:
            allowed = BASE
        elif part is not None:
            allowed = BASE | {t for t in targets if part_of(t) in {part, *PART_USES.get(part, ())}}
        else:
            continue
        problems += [f"{module} imports {t}" for t in sorted(targets - allowed - {PACKAGE})]
    return problems


def test_the_parts_sit_on_the_base_and_not_on_each_other() -> None:
    graph = import_graph(SOURCE, PACKAGE)
    assert {part_of(m) for m in graph} >= set(PARTS)  # every part is there

    problems = layering_problems(graph)
    assert not problems, "imports across the add-on's layers:\n" + "\n".join(problems)


def test_the_layering_check_sees_a_part_importing_another() -> None:
    graph = {
        f"{PACKAGE}.models": {f"{PACKAGE}.firing.routes"},
        f"{PACKAGE}.firing.routes": {f"{PACKAGE}.models"},
        f"{PACKAGE}.perform.core": {f"{PACKAGE}.firing.outbox", f"{PACKAGE}.conf"},
        f"{PACKAGE}.worker.process": {f"{PACKAGE}.perform.activity"},
        f"{PACKAGE}.checks": {f"{PACKAGE}.firing.receivers"},
    }
    assert layering_problems(graph) == [
        f"{PACKAGE}.models imports {PACKAGE}.firing.routes",
        f"{PACKAGE}.perform.core imports {PACKAGE}.firing.outbox",
    ]
