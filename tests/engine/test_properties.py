"""Property-based tests: random expressions, their gradients against finite differences, on every device."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import gradsolve as gs
from gradsolve.autograd import gradcheck

# The `device` fixture is a plain string, the same for every example: safe to share across them.
ON_EVERY_DEVICE = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)

# Smooth everywhere on the inputs we draw (|x| <= 2), so differences are meaningful; clamp,
# amax and where have kinks, which random inputs miss (constructions that hit one exactly,
# such as where(x > x, ...), move both sides together and stay on one side).
UNARY = [
    ("sin", lambda t: t.sin()), ("cos", lambda t: t.cos()), ("tanh", lambda t: t.tanh()),
    ("sigmoid", lambda t: t.sigmoid()), ("exp_small", lambda t: (t * 0.3).exp()),
    ("softlog", lambda t: (t * t + 1.0).log()), ("sqrt_pos", lambda t: (t * t + 0.5).sqrt()),
    ("square", lambda t: t * t), ("atan", lambda t: t.atan()), ("neg", lambda t: -t),
    ("cube", lambda t: (t * 0.5) ** 3), ("pow_frac", lambda t: (t * t + 0.5) ** 0.75),
    ("clamp", lambda t: t.clamp(min=-1.0, max=1.0)), ("clamp_min", lambda t: t.clamp(min=0.25)),
    # reductions keep their dims, so the result still broadcasts against the other operand
    ("sum", lambda t: t.sum()), ("sum_last", lambda t: t.sum(dim=-1, keepdim=True) if t.ndim else t),
    ("mean_first", lambda t: t.mean(dim=0, keepdim=True) if t.ndim else t),
    ("prod_last", lambda t: t.prod(dim=-1, keepdim=True) if t.ndim else t),
    ("amax", lambda t: t.amax()), ("norm", lambda t: (t * t + 0.1).norm()),
]
BINARY = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / (b * b + 1.0)), ("atan2", lambda a, b: gs.atan2(a, b * b + 1.0)),
    ("pow", lambda a, b: (a * a + 0.5) ** (b * 0.5)),
    ("where", lambda a, b: gs.where(a > b, a * 2.0, b.sin())),
    ("maximum", lambda a, b: gs.maximum(a, b)),
]
SHAPES = [(), (3,), (2, 3), (2, 1)]


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


def _leaf(rng, shape, device):
    return gs.tensor(rng.uniform(-2, 2, shape), device=device, requires_grad=True)


@settings(ON_EVERY_DEVICE, max_examples=60)
@given(expr=expressions(), shape_x=st.sampled_from(SHAPES), shape_y=st.sampled_from(SHAPES),
       seed=st.integers(0, 2**16))
def test_random_expressions_match_finite_differences(expr, shape_x, shape_y, seed, device):
    desc, fn = expr
    rng = np.random.default_rng(seed)
    x, y = _leaf(rng, shape_x, device), _leaf(rng, shape_y, device)
    assert gradcheck(lambda a, b: fn(a, b) * 1.0, (x, y), atol=1e-6, rtol=1e-4), desc


@settings(ON_EVERY_DEVICE, max_examples=30)
@given(expr=expressions(depth=2), seed=st.integers(0, 2**16))
def test_reductions_of_random_expressions(expr, seed, device):
    desc, fn = expr
    rng = np.random.default_rng(seed)
    x, y = _leaf(rng, (2, 3), device), _leaf(rng, (3,), device)
    assert gradcheck(lambda a, b: (fn(a, b) * 1.0).sum(dim=0) + (fn(a, b) * 1.0).mean(), (x, y)), desc


MATMUL_SHAPES = [((2, 3), (3, 2)), ((3,), (3, 2)), ((2, 3), (3,)), ((3,), (3,)), ((2, 2, 3), (3, 2)),
                 ((2, 1, 3), (2, 3, 2))]


@settings(ON_EVERY_DEVICE, max_examples=40)
@given(shapes=st.sampled_from(MATMUL_SHAPES), outer=st.sampled_from(UNARY[:14]),
       left=st.sampled_from(UNARY[:14]), right=st.sampled_from(UNARY[:14]), seed=st.integers(0, 2**16))
def test_matrix_products_of_random_expressions(shapes, outer, left, right, seed, device):
    rng = np.random.default_rng(seed)
    a, b = _leaf(rng, shapes[0], device), _leaf(rng, shapes[1], device)
    desc = f"{outer[0]}({left[0]}(a) @ {right[0]}(b)) for shapes {shapes}"
    assert gradcheck(lambda p, q: outer[1](left[1](p) @ right[1](q)), (a, b), atol=1e-6, rtol=1e-4), desc


@st.composite
def index_keys(draw):
    """(shape, key): integer-list keys that repeat positions, alone or beside a slice."""
    rows = draw(st.lists(st.integers(0, 2), min_size=1, max_size=6))
    cols = draw(st.lists(st.integers(0, 3), min_size=len(rows), max_size=len(rows)))
    kind = draw(st.sampled_from(["vector", "rows", "rows_then_slice", "slice_then_cols", "pairs"]))
    if kind == "vector":
        return (4,), cols
    return (3, 4), {"rows": rows, "rows_then_slice": (rows, slice(None)), "slice_then_cols": (slice(None), cols),
                    "pairs": (rows, cols)}[kind]


@settings(ON_EVERY_DEVICE, max_examples=40)
@given(shape_key=index_keys(), inner=st.sampled_from(UNARY[:14]), seed=st.integers(0, 2**16))
def test_indexing_with_repeated_indices_matches_finite_differences(shape_key, inner, seed, device):
    shape, key = shape_key
    rng = np.random.default_rng(seed)
    x = _leaf(rng, shape, device)
    desc = f"{inner[0]}(x)[{key}] * x[{key}]"
    assert gradcheck(lambda t: inner[1](t)[key] * t[key], (x,), atol=1e-6, rtol=1e-4), desc
