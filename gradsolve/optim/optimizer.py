"""The Optimizer base class: parameter groups, per-parameter state, state_dict.

Subclasses declare their hyperparameters (``defaults``), validate them in
``__init__`` and implement ``apply_update(p, grad, state, group)``, which updates one
parameter from its gradient.  The base ``step`` evaluates the closure (with
gradients enabled), then calls ``apply_update`` for every parameter that has a
gradient, under ``gs.no_grad()``.

Inside ``apply_update`` the math runs on raw backend arrays: ``p._data`` and
``grad`` are arrays of the namespace ``p._xp`` (NumPy on cpu), only Array-API
functions are used on them, and the result is written back with
``p._assign_(new)`` (in place, bumps the version counter).  Per-parameter state
holds backend arrays (moments, buffers) and Python numbers (``step``); it is
created lazily, on the first step that sees the parameter's gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, MutableMapping
from typing import Any, Callable

import gradsolve as gs

__all__ = ["Optimizer", "required"]


class _Required:
    """Marks a hyperparameter that has no default and must be given."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class ParamState(MutableMapping):
    """Per-parameter state: a mapping from parameter tensor to its state dict.

    Keys are compared by identity (a tensor's ``==`` is elementwise), and reading a
    missing key creates an empty dict, as ``collections.defaultdict(dict)`` would.
    """

    def __init__(self) -> None:
        self._items: dict[int, tuple[Any, dict]] = {}

    def __getitem__(self, param) -> dict:
        entry = self._items.get(id(param))
        if entry is None:
            entry = self._items[id(param)] = (param, {})
        return entry[1]

    def __setitem__(self, param, value: dict) -> None:
        self._items[id(param)] = (param, value)

    def __delitem__(self, param) -> None:
        del self._items[id(param)]

    def __contains__(self, param) -> bool:
        return id(param) in self._items

    def __iter__(self) -> Iterator:
        return (param for param, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"ParamState({len(self)} parameters)"


def _copy_state_value(value, like=None):
    """Deep copy of a state value; floating arrays are cast to ``like``'s dtype and namespace."""
    if like is not None and hasattr(value, "dtype") and hasattr(value, "shape"):
        xp = like._xp
        if _is_real_floating(like._data) and _is_real_floating(value):
            return xp.asarray(value, dtype=like._data.dtype, copy=True)
    if isinstance(value, list):
        return [_copy_state_value(v, like) for v in value]
    return copy.deepcopy(value)


def _is_real_floating(array) -> bool:
    return getattr(array.dtype, "kind", None) == "f"


class Optimizer:
    """Base class of all gradsolve optimizers (PyTorch's ``torch.optim.Optimizer`` contract).

    Args:
        params: an iterable (list, tuple, generator) of tensors, or of dicts
            ``{"params": [...], <hyperparameter overrides>}`` that define parameter groups.
        defaults: hyperparameters used by groups that do not set them.

    Attributes:
        param_groups: list of dicts, each with ``"params"`` (list of tensors) and every
            hyperparameter of the optimizer.
        state: :class:`ParamState`, parameter tensor -> dict of that parameter's state.
    """

    def __init__(self, params, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state = ParamState()
        self.param_groups: list[dict[str, Any]] = []
        if _is_tensor(params) or isinstance(params, (set, frozenset)):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters (with its own hyperparameters) to ``param_groups``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        if _is_tensor(params):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        else:
            params = list(params)
        for p in params:
            if not _is_tensor(p):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        group["params"] = params

        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)

        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter group contains the same parameter more than once")
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    # ------------------------------------------------------------------ grads
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters: to ``None`` (default) or to zeros.

        With ``set_to_none=False`` each ``p.grad`` keeps its identity but leaves any
        graph first, as PyTorch does: a gradient made by ``backward(create_graph=True)``
        is detached (``grad_fn`` None, ``requires_grad`` False), then zeroed in place.
        """
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                if grad.grad_fn is not None:
                    grad.detach_()
                else:
                    grad.requires_grad_(False)
                grad._assign_(grad._xp.zeros_like(grad._data))

    # ------------------------------------------------------------------ step
    def step(self, closure: Callable[[], Any] | None = None):
        """Perform one optimization step; return the closure's loss (or None).

        The closure (optional here, required by LBFGS) re-evaluates the loss and calls
        ``backward``; it runs with gradients enabled.  The update itself runs under
        ``gs.no_grad()``; parameters without a gradient are skipped.
        """
        loss = None
        if closure is not None:
            with gs.enable_grad():
                loss = closure()
        with gs.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    self.apply_update(p, p.grad._data, self.state[p], group)
        return loss

    def apply_update(self, p, grad, state: dict, group: dict) -> None:
        """Update parameter ``p`` in place from its gradient array ``grad``."""
        legacy = getattr(self, "_update", None)  # a subclass written to 0.1.0's contract, which named it _update
        if legacy is None:
            raise NotImplementedError
        legacy(p, grad, state, group)

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> dict[str, Any]:
        """Return ``{"state": {index: state}, "param_groups": [...]}`` (a deep copy).

        Parameters are replaced by their index in the order of ``param_groups`` (as
        PyTorch does); arrays are copied, so later steps do not change a saved dict.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: {k: _copy_state_value(v) for k, v in s.items()}
                 for p, s in self.state._items.values()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a dict made by :meth:`state_dict` (of an optimizer with the same groups).

        Values are copied (the dict is not shared with this optimizer afterwards);
        floating-point arrays take each parameter's dtype and array namespace.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for group, saved in zip(self.param_groups, saved_groups):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't "
                                 "match the size of optimizer's group")
        id_to_param = {}
        for group, saved in zip(self.param_groups, saved_groups):
            for index, p in zip(saved["params"], group["params"]):
                id_to_param[index] = p
        self.state = ParamState()
        for index, saved_state in state_dict["state"].items():
            index = int(index)
            if index not in id_to_param:
                continue
            p = id_to_param[index]
            self.state[p] = {k: _copy_state_value(v, like=p) for k, v in saved_state.items()}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new_group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            new_group["params"] = group["params"]
            new_groups.append(new_group)
        self.param_groups = new_groups


def _is_tensor(obj) -> bool:
    return isinstance(obj, gs.Tensor)


def lerp(start, end, weight: float):
    """``start + weight * (end - start)``, rounded as PyTorch's lerp (two forms by |weight|)."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)
