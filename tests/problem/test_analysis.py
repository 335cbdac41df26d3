"""Analysis: exact linearity, Jacobian rank and null space, minimum-norm solutions."""

import os

import numpy as np
import pytest

from gradsolve.problem import from_file, from_text, lower
from gradsolve.problem.analysis import is_linear, jacobian_rank, linear_solution, nonlinear_expressions, null_space

PROBLEMS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "problems")


def example(name):
    return from_file(os.path.join(PROBLEMS, name))


def test_four_unknowns_is_linear_rank_3_with_one_free_direction():
    spec = example("four-unknowns.yaml")
    assert is_linear(spec)
    lowered = lower(spec)
    rng = np.random.default_rng(5)
    for point in (spec.initial_values(), rng.standard_normal(4)):
        result = jacobian_rank(lowered, point)
        assert result.rank == 3 and result.deficiency == 1
        assert result.jacobian.shape == (4, 4)
        (direction,) = result.null_space
        assert np.linalg.norm(direction) == pytest.approx(1.0, abs=1e-15)
        # proportional to (-1, 1, 1, 1)
        reference = np.array([-1.0, 1.0, 1.0, 1.0]) / 2.0
        assert abs(direction @ reference) == pytest.approx(1.0, abs=1e-12)
        # the first non-zero component is positive
        assert direction[np.flatnonzero(np.abs(direction) > 1e-10)[0]] > 0
        np.testing.assert_allclose(direction, [0.5, -0.5, -0.5, -0.5], atol=1e-12)
        np.testing.assert_array_equal(lowered.values(), spec.initial_values())  # restored
    solution = linear_solution(spec)
    assert solution.rank == 3 and solution.consistent
    np.testing.assert_allclose(solution.x, [6.0, 3.0, 2.0, 1.0], atol=1e-12)  # (7,2,1,0) + t(-1,1,1,1), min norm
    np.testing.assert_allclose(solution.null_space, [[0.5, -0.5, -0.5, -0.5]], atol=1e-12)
    np.testing.assert_array_equal(solution.A, [[1, 1, 0, 0], [0, 0, 1, -1], [1, 0, 1, 0], [0, 1, 0, -1]])
    np.testing.assert_array_equal(solution.b, [9, 1, 8, 2])


def test_intersection_is_nonlinear():
    spec = example("intersection.txt")
    assert not is_linear(spec)
    assert nonlinear_expressions(spec) == [0]
    with pytest.raises(ValueError):
        linear_solution(spec)
    lowered = lower(spec)
    assert jacobian_rank(lowered, [3.0, 4.0]).rank == 2
    singular = jacobian_rank(lowered, [3.5, 3.5])  # the line touches x = y: J = [[7, 7], [1, 1]]
    assert singular.rank == 1
    np.testing.assert_allclose(singular.null_space, [[2**-0.5, -(2**-0.5)]], atol=1e-12)


def test_other_examples():
    assert not is_linear(example("circuit.yaml"))
    assert jacobian_rank(lower(example("circuit.yaml"))).rank == 1
    assert not is_linear(example("abs-difference.yaml"))
    assert not is_linear(example("rosenbrock.yaml"))
    with pytest.raises(ValueError):
        jacobian_rank(lower(example("rosenbrock.yaml")))


def test_polynomial_fit_is_linear_in_its_unknowns():
    spec = example("polynomial.yaml")
    assert is_linear(spec)  # x^2 is data, not an unknown
    solution = linear_solution(spec)
    assert solution.A.shape == (20, 3) and solution.consistent and solution.rank == 3
    np.testing.assert_allclose(solution.x, [1.0, 2.0, 3.0], rtol=1e-12)
    result = jacobian_rank(lower(spec))
    assert result.rank == 3 and result.null_space.shape == (0, 3)


@pytest.mark.parametrize(
    "text, linear",
    [
        ("(x + 1)^2 - x^2 = y", True),
        ("sin(x)^2 + cos(x)^2 + y = 0", True),
        ("2*x + 3*y/4 - pi = e", True),
        ("x*y = 1", False),
        ("x^2 = 1", False),
        ("abs(x) = 1", False),
        ("max(x, 0) = 1", False),
        ("exp(x) = y", False),
        ("x / y = 1", False),
        ("sqrt(x) = 1", False),
    ],
)
def test_is_linear_cases(text, linear):
    assert is_linear(from_text(text)) is linear


def test_inconsistent_linear_system():
    solution = linear_solution(from_text("x + y = 1\nx + y = 3\n"))
    assert not solution.consistent and solution.rank == 1
    np.testing.assert_allclose(solution.x, [1.0, 1.0], atol=1e-12)  # least squares, minimum norm
    np.testing.assert_allclose(solution.null_space, [[2**-0.5, -(2**-0.5)]], atol=1e-12)


def test_null_space_sign_rule():
    basis = null_space(np.array([[0.0, 1.0, 1.0]]))
    assert basis.shape == (2, 3)
    for row in basis:
        assert np.linalg.norm(row) == pytest.approx(1.0)
        assert row[np.flatnonzero(np.abs(row) > 1e-10)[0]] > 0
    np.testing.assert_allclose(basis @ np.array([0.0, 1.0, 1.0]), 0.0, atol=1e-15)


# ----------------------------------------------------------------------------- linearity: fast and exact



def _slow_before():
    return "\n".join(f"exp(sin(x{i}))*log(1+x{i}^2)*atan(y{i})/(1+x{i}^2+y{i}^2) = 0.1" for i in range(6))


def test_nonlinear_system_is_found_nonlinear_without_simplify(monkeypatch):
    import sympy

    def refuse(*args, **kwargs):
        raise AssertionError("sympy.simplify called for an expression a numeric test shows nonlinear")

    spec = from_text(_slow_before())
    monkeypatch.setattr(sympy, "simplify", refuse)
    assert not is_linear(spec)
    assert nonlinear_expressions(spec) == list(range(6))


@pytest.mark.parametrize("text, linear", [
    ("x*(sin(y)^2 + cos(y)^2) + y = 1", True),       # affine only after trigsimp
    ("(x + y)^2 - x^2 - y^2 - 2*x*y + x = 1", True),  # cancels when expanded
    ("x*log(2) + y/3 + pi*x = 0", True),
    ("x*y = 1", False),
    ("x + 1e-12*x^2 = 1", False),                     # too small for the numeric test: rewriting decides
    ("abs(x) + y = 1", False),
    ("max(x, y) = 1", False),
    ("sign(x) + y = 1", False),
    ("exp(x) = 1", False),
])
def test_linearity_is_exact(text, linear):
    spec = from_text(text + "\nx - y = 0" if "y" in text else text + "\nx = 0")
    assert is_linear(spec) is linear


def test_linear_in_parameters_over_data(tmp_path):
    (tmp_path / "d.csv").write_text("t,v\n0,1\n1,2.5\n2,7\n")
    (tmp_path / "p.yaml").write_text("data: d.csv\nresiduals: [v - (a*exp(t) + b*sin(t)*t^2 + c)]\n")
    assert is_linear(from_file(str(tmp_path / "p.yaml")))
    (tmp_path / "q.yaml").write_text("data: d.csv\nresiduals: [v - a*exp(b*t)]\n")
    assert not is_linear(from_file(str(tmp_path / "q.yaml")))
