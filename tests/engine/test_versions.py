"""Version counters: views share their base's, copies have their own, index keys cannot move a gradient."""
from __future__ import annotations

import pytest

import gradsolve as gs

from engine_helpers import make

MODIFIED = "modified by an in-place operation"

# view op -> (tensor of 4 values) -> a view of it with 2 or 4 elements
VIEWS = {
    "slice": lambda a: a[:2],
    "integer": lambda a: a[1],
    "reshape": lambda a: a.reshape(2, 2),
    "view": lambda a: a.view(-1),
    "flatten_of_reshape": lambda a: a.reshape(2, 2).flatten(),
    "transpose": lambda a: a.reshape(2, 2).transpose(0, 1),
    "T": lambda a: a.reshape(2, 2).T,
    "permute": lambda a: a.reshape(2, 2).permute(1, 0),
    "unsqueeze": lambda a: a.unsqueeze(0),
    "squeeze": lambda a: a.reshape(1, 4).squeeze(0),
    "expand": lambda a: a[:1].expand(3),
    "detach": lambda a: a.detach(),
    "data": lambda a: a.data,
}


@pytest.mark.parametrize("name", list(VIEWS))
def test_in_place_change_of_a_base_is_seen_through_its_views(name, device):
    a = gs.tensor([1.0, 2.0, 3.0, 4.0], device=device)
    v = VIEWS[name](a)
    w = make(gs.ones(v.shape).tolist() if v.shape else 1.0, device)
    out = (v * w).sum()
    a.add_(10.0)  # changes what w's gradient should have been
    with pytest.raises(RuntimeError, match=MODIFIED):
        out.backward()


@pytest.mark.parametrize("name", [n for n in VIEWS if n != "expand"])  # expand repeats elements: no writes
def test_in_place_change_through_a_view_is_seen_by_its_base(name, device):
    w = make([1.0, 2.0, 3.0, 4.0], device)
    out = (w * w).sum()
    with gs.no_grad():
        VIEWS[name](w).mul_(5.0)
    with pytest.raises(RuntimeError, match=MODIFIED):
        out.backward()


def test_audit_reproductions(device):
    a = gs.tensor([1.0, 2.0, 3.0, 4.0], device=device)
    w = make([1.0, 1.0], device)
    out = (a[:2] * w).sum()
    a.add_(10.0)
    with pytest.raises(RuntimeError, match=MODIFIED):  # was a silently wrong [11, 12]
        out.backward()
    w = make([1.0, 2.0], device)
    out = (w * w).sum()
    with gs.no_grad():
        w[:1].mul_(5.0)
    with pytest.raises(RuntimeError, match=MODIFIED):
        out.backward()


def test_views_write_through_to_their_base(device):
    a = gs.tensor([1.0, 2.0, 3.0, 4.0], device=device)
    a[1].add_(10.0)
    a.reshape(2, 2)[1].mul_(2.0)
    assert a.tolist() == [1.0, 12.0, 6.0, 8.0]


COPIES = {
    "index_list": lambda a: a[[0, 1]],
    "index_tensor": lambda a: a[gs.tensor([0, 1], device=a.device)],
    "mask": lambda a: a[a < 2.5],
    "clone": lambda a: a.clone()[:2],
    "cast": lambda a: a.to(gs.float32)[:2],
    "arithmetic": lambda a: (a + 0.0)[:2],
}


@pytest.mark.parametrize("name", list(COPIES))
def test_copies_keep_their_own_version_counter(name, device):
    a = gs.tensor([1.0, 2.0, 3.0, 4.0], device=device)
    w = make([1.0, 1.0], device)
    out = (COPIES[name](a) * w).sum()
    a.add_(10.0)  # the copy still holds the old values: no error, the gradient they give
    out.backward()
    assert w.grad.tolist() == [1.0, 2.0]


def test_reshape_that_must_copy_does_not_share(device):
    if device != "cpu":
        pytest.skip(f"{device}: view-or-copy is told apart on NumPy only; other backends' reshape counts as a view")
    a = gs.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    w = make([1.0, 1.0, 1.0, 1.0], device)
    out = (a.T.reshape(4) * w).sum()  # a transposed matrix cannot be flattened without a copy
    a.add_(10.0)
    out.backward()
    assert w.grad.tolist() == [1.0, 3.0, 2.0, 4.0]


def test_changing_an_index_tensor_after_use_does_not_move_the_gradient(device):
    # PyTorch raises here; gradsolve keeps a private copy of the key, so the gradient stays right.
    x = make([1.0, 2.0, 3.0], device)
    idx = gs.tensor([0, 0], device=device)
    y = x[idx].sum()
    idx[0] = 2
    y.backward()
    assert x.grad.tolist() == [2.0, 0.0, 0.0]
    mask = gs.tensor([True, False, True], device=device)
    x.grad = None
    z = (x[mask] * 3.0).sum()
    mask[1] = True
    z.backward()
    assert x.grad.tolist() == [3.0, 0.0, 3.0]
