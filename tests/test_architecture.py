"""The shape of the code, read from its imports (ast): what README's architecture section promises.

* no module imports another module's private name (``from x import _y``, or ``x._y``
  on an imported module): a private name is the business of the module that has it;
* import cycles only inside the engine tier (``_tensor`` and the modules split from it, ``ops``,
  ``autograd``), where a tensor's methods and the operations on tensors need each other, as in PyTorch;
* layers depend downward only: backend -> engine -> optim -> problem -> solve -> cli.

Function-level (lazy) imports count: they are edges all the same.  Imports under ``if TYPE_CHECKING:``
(annotations only) never run, and do not.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gradsolve"
ENGINE_TIER = ("gradsolve._tensor", "gradsolve._tensor_str", "gradsolve._dtypes", "gradsolve._creation", "gradsolve.ops",
               "gradsolve.autograd")
#: (layer, module prefixes), lowest first; a module may import its own layer and those below.
LAYERS = [
    ("plain data", ("gradsolve.methods",)),
    ("backend", ("gradsolve.backend",)),
    ("engine", ("gradsolve._tensor", "gradsolve.ops", "gradsolve.autograd", "gradsolve.nn", "gradsolve._dtypes",
                "gradsolve._tensor_str", "gradsolve._creation")),
    ("optim", ("gradsolve.optim",)),
    ("problem", ("gradsolve.problem",)),
    ("solve", ("gradsolve.solve", "gradsolve.api")),
    ("cli", ("gradsolve.cli", "gradsolve.__main__")),
]
#: The package's front door: lazy re-exports of every layer (``import gradsolve as gs``).
FACADES = ("gradsolve", "gradsolve.core")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(module).split(".")
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_only(node) -> bool:
    test = node.test
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


@functools.lru_cache(maxsize=None)
def _tree(module: str) -> ast.Module:
    """The module's syntax tree, without the bodies of ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        for name in ("body", "orelse"):
            block = getattr(node, name, None)
            if isinstance(block, list):
                setattr(node, name, [child for child in block
                                     if not (isinstance(child, ast.If) and _type_checking_only(child))])
    return tree


def _imports(module: str):
    """(target module, imported name or None, line) for every import in `module`; targets inside gradsolve."""
    tree = _tree(module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "gradsolve":
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source.split(".")[0] != "gradsolve":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    yield submodule, None, node.lineno
                else:
                    yield source, alias.name, node.lineno


def _private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not name.startswith("__")


def test_no_module_imports_another_modules_private_name():
    found = []
    for module, path in MODULES.items():
        tree = _tree(module)
        aliases = {}  # local name -> gradsolve module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "gradsolve":
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "gradsolve"
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, node)
                for alias in node.names:
                    if f"{source}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
        for target, name, line in _imports(module):
            if _private(name) and target != module:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: from {target} import {name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != module):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, "\n".join(found)


@functools.lru_cache(maxsize=None)
def _graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        targets = set()
        for target, _, _ in _imports(module):
            while target not in MODULES and "." in target:  # `from a.b import name`: the module a.b
                target = target.rpartition(".")[0]
            if target in MODULES and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def _cycles(graph):
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def _in_engine_tier(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in ENGINE_TIER)


def test_import_cycles_exist_only_inside_the_engine_tier():
    outside = [component for component in _cycles(_graph())
               if not all(_in_engine_tier(module) for module in component)]
    assert not outside, outside


def _layer(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in FACADES))
def test_layers_depend_downward_only(module):
    rank = _layer(module)
    assert rank is not None, f"{module} belongs to no layer: add it to LAYERS (and to README's architecture)"
    upward = [f"{target} ({LAYERS[_layer(target)][0]})" for target in _graph()[module]
              if target not in FACADES and _layer(target) is not None and _layer(target) > rank]
    assert not upward, f"{module} ({LAYERS[rank][0]}) imports upward: {upward}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
