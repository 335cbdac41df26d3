"""Changing units changes nothing: the verdicts and digits of equation systems in any units (issue 15).

Scaling an equation by 10^k, or writing an unknown as x = 10^j * x' (its start and
bounds with it), must give the same status and the same solution to 1e-10
relative.  The cases: the examples in problems/ with equations, the diode and
acetic-acid systems whose residuals are all below any absolute bound, multiple
roots, a linear system solved directly, and generated systems.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradsolve as gs
from gradsolve.problem.files import from_file, from_yaml_text
from gradsolve.solve.solver import merged_options, solve_spec

ROOT = Path(__file__).resolve().parents[2]
PROBLEMS = ROOT / "problems"

DIODE = {"I": 2.3933257563561122e-11, "Vd": 0.2606674243643888}
# the cubic H^3 + Ka H^2 - (Kw + Ka C) H - Ka Kw = 0 at 40 digits (mpmath), the other three from it
ACID = {"H": 0.0004153595296836864, "A": 0.00041535950560815833, "OH": 2.4075528031379025e-11,
        "HA": 0.009584640494391842}


def problem_parts(path):
    """(equations as text, {name: {init, min, max}}) of a problem file with equations."""
    spec = from_file(str(path))
    lo, hi = spec.bounds()
    unknowns = {}
    for name, init, low, high in zip(spec.unknown_names, spec.initial_values(), lo, hi):
        entry = {"init": float(init)}
        if math.isfinite(low):
            entry["min"] = float(low)
        if math.isfinite(high):
            entry["max"] = float(high)
        unknowns[name] = entry
    return list(spec.sources), unknowns


def rescaled(equations, unknowns, *, k=0, equation=None, j=0, unknown=None):
    """YAML text: equation number `equation` times 10^k, and `unknown` written as 10^j times a new unknown."""
    power = f"1e{j}"
    out_equations = []
    for i, text in enumerate(equations):
        if unknown is not None:
            text = re.sub(rf"\b{re.escape(unknown)}\b", f"({power}*{unknown})", text)
        if i == equation and k:
            lhs, rhs = text.split("=", 1)
            text = f"1e{k}*({lhs}) = 1e{k}*({rhs})"
        out_equations.append(text)
    out_unknowns = {}
    for name, entry in unknowns.items():
        entry = dict(entry)
        if name == unknown:
            entry = {key: value / 10.0 ** j for key, value in entry.items()}
            if j and "min" in entry and "max" in entry and entry["min"] > entry["max"]:
                entry["min"], entry["max"] = entry["max"], entry["min"]
        out_unknowns[name] = entry
    return yaml.safe_dump({"name": "rescaled", "unknowns": out_unknowns, "equations": out_equations})


def solve_text(text, **options):
    spec = from_yaml_text(text)
    return solve_spec(spec, merged_options(spec, options))


def in_original_units(result, unknown, j):
    values = dict(result.parameters)
    if unknown is not None:
        values[unknown] *= 10.0 ** j
    return values


def assert_same_solution(base, other, unknown=None, j=0, rtol=1e-10):
    assert other.status == base.status, (other.status, other.stop_reason, base.stop_reason)
    got = in_original_units(other, unknown, j)
    for name, want in base.parameters.items():
        assert got[name] == pytest.approx(want, rel=rtol, abs=0), (name, got, base.parameters)


@pytest.mark.parametrize("path, truth", [("diode.yaml", DIODE), ("acetic-acid.yaml", ACID)])
def test_small_unit_systems_converge_to_every_digit_with_default_options(path, truth):
    result = gs.solve(PROBLEMS / path)
    assert result.status == "converged" and result.exit_code == 0, result.stop_reason
    assert "roundings of their terms" in result.stop_reason or "exactly" in result.stop_reason
    for name, want in truth.items():
        assert result.parameters[name] == pytest.approx(want, rel=1e-10, abs=0)


def test_the_diode_in_nanoamperes_and_millivolts_and_the_acid_in_mmol_give_the_same_values():
    equations, unknowns = problem_parts(PROBLEMS / "diode.yaml")
    text = rescaled(equations, unknowns, unknown="I", j=-9)  # I in nA
    equations2, unknowns2 = yaml.safe_load(text)["equations"], yaml.safe_load(text)["unknowns"]
    text = rescaled(equations2, unknowns2, unknown="Vd", j=-3)  # Vd in mV
    result = solve_text(text)
    assert result.status == "converged"
    assert result.parameters["I"] * 1e-9 == pytest.approx(DIODE["I"], rel=1e-10, abs=0)
    assert result.parameters["Vd"] * 1e-3 == pytest.approx(DIODE["Vd"], rel=1e-10, abs=0)

    equations, unknowns = problem_parts(PROBLEMS / "acetic-acid.yaml")
    for name in list(unknowns):  # every concentration in mmol/L
        text = rescaled(equations, unknowns, unknown=name, j=-3)
        doc = yaml.safe_load(text)
        equations, unknowns = doc["equations"], doc["unknowns"]
    result = solve_text(yaml.safe_dump({"name": "acid mM", "unknowns": unknowns, "equations": equations}))
    assert result.status == "converged", result.stop_reason
    for name, want in ACID.items():
        assert result.parameters[name] * 1e-3 == pytest.approx(want, rel=1e-10, abs=0)


@pytest.mark.parametrize("text, init, root", [
    ("x^2 = 0", {"x": 3.0}, {"x": 0.0}),
    ("(x-1)^2 + (y-2)^2 = 0", {"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 2.0}),
    ("x^2 - 2*x + 1 = 0", {"x": 3.0}, {"x": 1.0}),
])
def test_a_multiple_root_converges_and_is_reported_as_one_not_as_a_family(text, init, root):
    result = gs.solve(gs.Problem.from_text(text, init=init))
    assert result.status == "converged" and result.exit_code == 0, result.stop_reason
    for name, want in root.items():
        assert result.parameters[name] == pytest.approx(want, abs=1e-7)
    assert result.solution_set is None
    multiple = result.to_dict()["multiple_root"]
    assert multiple["multiplicity"] == 2 and multiple["digits"] == 7


def test_a_family_through_a_singular_point_is_still_a_family():
    result = gs.solve(PROBLEMS / "circuit.yaml")  # A^2 (B + 5) = 40: a curve of solutions
    assert result.status == "converged" and result.solution_set is not None
    assert "multiple_root" not in result.to_dict()


def test_the_wheatstone_bridge_is_solved_directly_to_what_its_condition_allows():
    text = ("(10 - Va)/100 = Va/150 + (Va - Vb)/50\n(10 - Vb)/220 + (Va - Vb)/50 = Vb/300\n"
            "Ig = (Va - Vb)/50\n")
    result = gs.solve(gs.Problem.from_text(text, init={"Va": 0, "Vb": 0, "Ig": 0}))
    assert result.status == "converged" and result.optimizer == "qr"
    F = Fraction
    # Va (1/100 + 1/150 + 1/50) - Vb/50 = 1/10;  -Va/50 + Vb (1/220 + 1/50 + 1/300) = 1/22
    a, b, c, d, e, f = F(1, 100) + F(1, 150) + F(1, 50), -F(1, 50), F(1, 10), -F(1, 50), \
        F(1, 220) + F(1, 50) + F(1, 300), F(1, 22)
    det = a * e - b * d
    va, vb = (c * e - b * f) / det, (a * f - c * d) / det
    exact = {"Va": va, "Vb": vb, "Ig": (va - vb) / 50}
    A = np.array([[1 / 100 + 1 / 150 + 1 / 50, -1 / 50, 0], [-1 / 50, 1 / 220 + 1 / 50 + 1 / 300, 0],
                  [-1 / 50, 1 / 50, 1.0]])
    kappa = np.linalg.cond(A)
    for name, want in exact.items():
        assert abs(result.parameters[name] - float(want)) <= 4 * kappa * np.finfo(float).eps * abs(float(want))


def test_an_explicit_optimizer_still_iterates_on_a_linear_system():
    result = gs.solve(PROBLEMS / "four-unknowns.yaml", optimizer="lm")
    assert result.optimizer == "lm" and result.status == "converged"


EQUATION_EXAMPLES = ["diode.yaml", "acetic-acid.yaml", "intersection.txt", "circuit.yaml"]
ISOLATED = {"diode.yaml", "acetic-acid.yaml", "intersection.txt"}  # circuit.yaml: a family (any point on it)


def _generated(kind, bounded):
    """A generated system: (equations, unknowns) with a known isolated solution."""
    if kind == "linear":
        equations = ["2*x + y - z = 3", "x - 3*y + 2*z = -1", "x + y + 4*z = 12"]
    elif kind == "polynomial":
        equations = ["x^2 + y^2 = 13", "x*y = 6", "z^3 = 8"]
    else:
        equations = ["exp(x) = 2*y", "y + z = 3", "z*exp(-x) = 0.5"]
    unknowns = {"x": {"init": 1.5}, "y": {"init": 1.0}, "z": {"init": 1.8}}
    if bounded:
        unknowns = {name: dict(entry, min=0.0, max=10.0) for name, entry in unknowns.items()}
    return equations, unknowns


CASES = [("file", name) for name in EQUATION_EXAMPLES] + [
    ("generated", (kind, bounded)) for kind in ("linear", "polynomial", "exponential") for bounded in (False, True)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(CASES), k=st.integers(-12, 12), j=st.integers(-12, 12), data=st.data())
def test_scaling_an_equation_or_an_unknown_changes_neither_status_nor_digits(case, k, j, data):
    source, what = case
    if source == "file":
        equations, unknowns = problem_parts(PROBLEMS / what)
        isolated = what in ISOLATED
    else:
        equations, unknowns = _generated(*what)
        isolated = True
    equation = data.draw(st.integers(0, len(equations) - 1), label="equation")
    unknown = data.draw(st.sampled_from(sorted(unknowns)), label="unknown")
    base = solve_text(rescaled(equations, unknowns))
    scaled = solve_text(rescaled(equations, unknowns, k=k, equation=equation, j=j, unknown=unknown))
    assert scaled.status == base.status, (scaled.stop_reason, base.stop_reason)
    if isolated and base.status == "converged":
        assert_same_solution(base, scaled, unknown, j)
