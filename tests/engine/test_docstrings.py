"""The engine's docstring examples run and print what they say (reprs as PyTorch prints them)."""
from __future__ import annotations

import doctest
import importlib
import pathlib
import subprocess
import sys

import pytest

import gradsolve

MODULES = [
    "gradsolve", "gradsolve._dtypes", "gradsolve._tensor", "gradsolve._tensor_str", "gradsolve._creation",
    "gradsolve.backend", "gradsolve.autograd", "gradsolve.autograd.function", "gradsolve.autograd.grad_mode",
    "gradsolve.autograd.gradcheck", "gradsolve.nn.functional",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_python_m_doctest_on_the_package_file():
    init = pathlib.Path(gradsolve.__file__)
    done = subprocess.run([sys.executable, "-m", "doctest", str(init)], capture_output=True, text=True, timeout=120,
                          cwd=init.parent.parent)
    assert done.returncode == 0, done.stdout + done.stderr
