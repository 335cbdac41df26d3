"""The problem package's layout: names keep their old import paths, and its modules import no cycle."""

import ast
import pathlib

import gradsolve.problem

PACKAGE = pathlib.Path(gradsolve.problem.__file__).parent


def test_moved_names_still_import_from_grammar():
    from gradsolve.problem import constants, functions, limits
    from gradsolve.problem.grammar import (
        CONSTANTS,
        FUNCTIONS,
        MAX_DEPTH,
        FunctionSpec,
        evaluate_constant,
        maximum,
        minimum,
        sigmoid,
    )

    assert FUNCTIONS is functions.FUNCTIONS and CONSTANTS is constants.CONSTANTS and MAX_DEPTH == limits.MAX_DEPTH
    assert (FunctionSpec, maximum, minimum, sigmoid) == (functions.FunctionSpec, functions.maximum,
                                                         functions.minimum, functions.sigmoid)
    assert evaluate_constant is constants.evaluate_constant


def _imports(path: pathlib.Path) -> set[str]:
    """The package's modules that *path* imports when it runs (function-level imports too, TYPE_CHECKING not)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
                   for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradsolve.problem."):
            found.add(node.module.split(".")[2])
    return found


def test_the_package_modules_import_no_cycle():
    modules = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    edges = {name: _imports(path) & set(modules) - {name} for name, path in modules.items()}
    done: set[str] = set()

    def visit(name, path):
        assert name not in path, f"import cycle: {' -> '.join(path[path.index(name):] + [name])}"
        if name in done:
            return
        for target in sorted(edges[name]):
            visit(target, path + [name])
        done.add(name)

    for name in sorted(modules):
        visit(name, [])
