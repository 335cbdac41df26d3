"""Indexing with Python lists: advanced indexing forward, scatter-add backward (repeats accumulate)."""
from __future__ import annotations

import numpy as np
import pytest

import gradsolve as gs
from gradsolve.autograd import gradcheck, gradgradcheck

from engine_helpers import make

X = np.arange(12.0).reshape(3, 4)

# key -> the key NumPy gets; every one names some position more than once
LIST_KEYS = {
    "rows": ([0, 0, 1], [0, 0, 1]),
    "rows_then_slice": (([0, 0, 1], slice(None)), (np.array([0, 0, 1]), slice(None))),
    "slice_then_cols": ((slice(None), [1, 1]), (slice(None), np.array([1, 1]))),
    "row_col_pairs": (([0, 0], [1, 1]), (np.array([0, 0]), np.array([1, 1]))),
    "nested_rows": ([[0, 2], [2, 2]], np.array([[0, 2], [2, 2]])),
    "int_then_cols": ((2, [3, 0, 3]), (2, np.array([3, 0, 3]))),
    "ellipsis_then_cols": ((Ellipsis, [0, 0]), (Ellipsis, np.array([0, 0]))),
}


@pytest.mark.parametrize("name", list(LIST_KEYS))
def test_list_keys_index_like_numpy_and_backward_scatter_adds(name, device):
    key, np_key = LIST_KEYS[name]
    x = make(X, device)
    out = x[key]
    np.testing.assert_array_equal(out.numpy(), X[np_key])
    weights = np.random.default_rng(0).uniform(1.0, 2.0, out.shape)
    (out * gs.tensor(weights, device=device)).sum().backward()
    expected = np.zeros_like(X)
    np.add.at(expected, np_key, weights)  # each read of a position adds its weight
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-15)


def test_repeated_rows_hand_computed(device):
    x = make([1.0, 2.0, 3.0, 4.0], device)
    x[[0, 0, 1]].sum().backward()
    assert x.grad.tolist() == [2.0, 1.0, 0.0, 0.0]
    m = make(X, device)
    m[[0, 0, 1], :].sum().backward()
    assert m.grad.tolist() == [[2.0] * 4, [1.0] * 4, [0.0] * 4]
    m.grad = None
    m[:, [1, 1]].sum().backward()
    assert m.grad.tolist() == [[0.0, 2.0, 0.0, 0.0]] * 3
    m.grad = None
    m[([0, 0], [1, 1])].sum().backward()
    assert m.grad.tolist() == [[0.0, 2.0, 0.0, 0.0], [0.0] * 4, [0.0] * 4]


def test_list_of_bools_is_a_mask(device):
    x = make(X, device)
    rows = x[[True, False, True]]
    assert rows.tolist() == X[[0, 2]].tolist()
    cols = x[:, [False, True, False, True]]
    assert cols.tolist() == X[:, [1, 3]].tolist()
    (rows.sum() + 2.0 * cols.sum()).backward()
    expected = np.zeros_like(X)
    expected[[0, 2]] += 1.0
    expected[:, [1, 3]] += 2.0
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_empty_list_selects_nothing(device):
    x = make(X, device)
    out = x[[]]
    assert out.shape == (0, 4)
    out.sum().backward()
    assert x.grad.tolist() == np.zeros_like(X).tolist()


def test_list_of_floats_is_refused(device):
    x = make(X, device)
    with pytest.raises(IndexError, match="integer or bool"):
        x[[0.0, 1.0]]


@pytest.mark.parametrize("name", ["rows_then_slice", "slice_then_cols", "row_col_pairs"])
def test_list_key_gradients_pass_gradcheck(name, device):
    key = LIST_KEYS[name][0]
    x = make(np.random.default_rng(3).uniform(-1.0, 1.0, (3, 4)), device)
    assert gradcheck(lambda t: t[key].sin() * t[key], (x,))
    assert gradgradcheck(lambda t: (t[key] ** 2).sum(), (x,))


def test_setitem_with_list_keys(device):
    x = gs.tensor(X, device=device)
    x[[0, 2], :] = 0.0
    x[:, [1]] = -1.0
    expected = X.copy()
    expected[[0, 2], :] = 0.0
    expected[:, [1]] = -1.0
    assert x.tolist() == expected.tolist()
