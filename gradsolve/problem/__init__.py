"""Problem language: parse problem files into sympy, check them, lower them to engine tensors.

Importing this package is cheap: the submodules (and sympy, pyarrow, the
engine) load on first use of a name.  ``ProblemError`` lives in
``gradsolve.problem.errors``, which imports nothing heavy.

Public names:

* ``from_file``, ``from_text``, ``from_yaml_text``  (gradsolve.problem.files)
* ``ProblemSpec``, ``Unknown``                      (gradsolve.problem.spec)
* ``ProblemError``, ``Issue``                       (gradsolve.problem.errors)
* ``parse_expression``, ``parse_equation``          (gradsolve.problem.grammar)
* ``FUNCTIONS``, ``CONSTANTS``                      (gradsolve.problem.functions, .constants)
* ``read_columns``                                  (gradsolve.problem.data)
* ``lower``, ``LoweredProblem``                     (gradsolve.problem.lowering; needs the engine)
* ``is_linear``, ``jacobian_rank``, ``linear_solution`` (gradsolve.problem.analysis)
"""

from __future__ import annotations

import importlib

from .errors import Issue, ProblemError

_LAZY = {
    "from_file": "files",
    "from_text": "files",
    "from_yaml_text": "files",
    "resolve_data_path": "files",
    "ProblemSpec": "spec",
    "Unknown": "spec",
    "parse_expression": "grammar",
    "parse_equation": "grammar",
    "FUNCTIONS": "functions",
    "CONSTANTS": "constants",
    "read_columns": "data",
    "lower": "lowering",
    "LoweredProblem": "lowering",
    "is_linear": "analysis",
    "jacobian_rank": "analysis",
    "linear_solution": "analysis",
    "JacobianRank": "analysis",
    "LinearSolution": "analysis",
}

__all__ = ["ProblemError", "Issue", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gradsolve.problem' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
