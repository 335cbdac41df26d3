"""Matrix products."""
from __future__ import annotations

from gradsolve.autograd.function import Op
from gradsolve.ops.array_namespace import xp_of_array
from gradsolve._creation import tensor
from gradsolve._tensor import Tensor


class MatMul(Op):
    """a @ b for operands with at least two dims (batched dims broadcast)."""

    def forward(self, a, b):
        return xp_of_array(a).matmul(a, b)

    def backward(self, g):
        a, b = self.inputs
        need_a, need_b = self.needs_input_grad
        return (g @ b.mT if need_a else None), (a.mT @ g if need_b else None)


def matmul(a, b):
    """Matrix product with NumPy's rules for 1-D operands."""
    if not isinstance(a, Tensor):
        a = tensor(a, device=b._backend)
    if not isinstance(b, Tensor):
        b = tensor(b, device=a._backend)
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError("matmul: both arguments need at least one dimension; use * for scalars")
    inner_a = a.shape[-1]
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if inner_a != inner_b:
        raise RuntimeError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied "
                           f"(inner sizes {inner_a} and {inner_b} differ)")
    batch_a, batch_b = tuple(a.shape[:-2]), tuple(b.shape[:-2])
    for size_a, size_b in zip(reversed(batch_a), reversed(batch_b)):
        if size_a != size_b and 1 not in (size_a, size_b):
            raise RuntimeError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied "
                               f"(batch dimensions {batch_a} and {batch_b} do not broadcast)")
    if a.ndim == 1 and b.ndim == 1:
        return (a * b).sum()
    if a.ndim == 1:
        return MatMul.apply(a.unsqueeze(0), b).squeeze(-2)
    if b.ndim == 1:
        return MatMul.apply(a, b.unsqueeze(-1)).squeeze(-1)
    return MatMul.apply(a, b)
