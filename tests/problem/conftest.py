import os

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
PROBLEMS = os.path.join(REPO, "problems")


@pytest.fixture
def problems_dir():
    return PROBLEMS
