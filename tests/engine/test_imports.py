"""Import order: the engine's public names work in a fresh interpreter, whatever is imported first."""
from __future__ import annotations

import subprocess
import sys

import pytest

FIRST_IMPORTS = [
    "import gradsolve as gs; gs.autograd.Function",
    "from gradsolve.autograd import Function, Variable, gradcheck",
    "import gradsolve.autograd.function",
    "import gradsolve.autograd.engine",
    "import gradsolve.ops",
    "import gradsolve.ops.shape",
    "import gradsolve.ops.promotion",
    "import gradsolve.ops.array_namespace",
    "import gradsolve._tensor",
    "import gradsolve._dtypes",
    "import gradsolve._tensor_str",
    "import gradsolve._creation",
    "import gradsolve.nn.functional",
]


@pytest.mark.parametrize("first", FIRST_IMPORTS)
def test_engine_imports_in_a_fresh_interpreter(first):
    program = (
        f"{first}\n"
        "import gradsolve as gs\n"
        "from gradsolve.autograd import Function, Variable, gradcheck\n"
        "x = gs.tensor([1.0, 2.0], requires_grad=True)\n"
        "assert gradcheck(lambda t: (t * t).sum(), (x,))\n"
        "assert issubclass(gs.autograd.Function, Function)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_import_gradsolve_stays_lazy():
    program = "import sys, gradsolve\nassert 'gradsolve._tensor' not in sys.modules\nprint('ok')\n"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
