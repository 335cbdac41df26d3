"""The solve layer's docstring examples run and print what they say."""
from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["gradsolve.methods", "gradsolve.solve.options", "gradsolve.solve.stopping",
                                  "gradsolve.api"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
