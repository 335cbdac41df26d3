"""The problem package's layout: names keep their old import paths (cycles: tests/test_architecture.py)."""

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
