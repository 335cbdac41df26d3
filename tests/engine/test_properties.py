"""Property-based: random expressions composed from the operations, gradients against finite differences."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

import gradsolve as gs
from gradsolve.autograd import gradcheck

# Smooth everywhere on the inputs we draw (|x| <= 2), so differences are meaningful.
UNARY = [
    ("sin", lambda t: t.sin()), ("cos", lambda t: t.cos()), ("tanh", lambda t: t.tanh()),
    ("sigmoid", lambda t: t.sigmoid()), ("exp_small", lambda t: (t * 0.3).exp()),
    ("softlog", lambda t: (t * t + 1.0).log()), ("sqrt_pos", lambda t: (t * t + 0.5).sqrt()),
    ("square", lambda t: t * t), ("atan", lambda t: t.atan()), ("neg", lambda t: -t),
]
BINARY = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / (b * b + 1.0)), ("atan2", lambda a, b: gs.atan2(a, b * b + 1.0)),
]
SHAPES = [(), (3,), (2, 3)]


@st.composite
def expressions(draw, depth=3):
    """A random expression tree over two leaves, as a Python function of (x, y)."""
    if depth == 0 or draw(st.booleans()):
        leaf = draw(st.sampled_from(["x", "y", "const"]))
        if leaf == "const":
            c = draw(st.floats(-2, 2, allow_nan=False))
            return f"{c:.3f}", lambda x, y, c=c: x * 0.0 + c
        return leaf, (lambda x, y: x) if leaf == "x" else (lambda x, y: y)
    if draw(st.booleans()):
        name, fn = draw(st.sampled_from(UNARY))
        desc, inner = draw(expressions(depth=depth - 1))
        return f"{name}({desc})", lambda x, y: fn(inner(x, y))
    name, fn = draw(st.sampled_from(BINARY))
    d1, f1 = draw(expressions(depth=depth - 1))
    d2, f2 = draw(expressions(depth=depth - 1))
    return f"{name}({d1}, {d2})", lambda x, y: fn(f1(x, y), f2(x, y))


@settings(max_examples=60, deadline=None)
@given(expr=expressions(), shape_x=st.sampled_from(SHAPES), shape_y=st.sampled_from(SHAPES),
       seed=st.integers(0, 2**16))
def test_random_expressions_match_finite_differences(expr, shape_x, shape_y, seed):
    desc, fn = expr
    rng = np.random.default_rng(seed)
    x = gs.tensor(rng.uniform(-2, 2, shape_x), requires_grad=True)
    y = gs.tensor(rng.uniform(-2, 2, shape_y), requires_grad=True)
    assert gradcheck(lambda a, b: fn(a, b) * 1.0, (x, y), atol=1e-6, rtol=1e-4), desc


@settings(max_examples=30, deadline=None)
@given(expr=expressions(depth=2), seed=st.integers(0, 2**16))
def test_reductions_of_random_expressions(expr, seed):
    desc, fn = expr
    rng = np.random.default_rng(seed)
    x = gs.tensor(rng.uniform(-2, 2, (2, 3)), requires_grad=True)
    y = gs.tensor(rng.uniform(-2, 2, (3,)), requires_grad=True)
    assert gradcheck(lambda a, b: (fn(a, b) * 1.0).sum(dim=0) + (fn(a, b) * 1.0).mean(), (x, y)), desc
