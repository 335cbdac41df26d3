"""The primitive operations, grouped by kind; each a small `Op` with forward and backward together."""
from gradsolve.ops.elementwise import (  # noqa: F401
    Abs, Acos, Acosh, Add, Asin, Asinh, Atan, Atan2, Atanh, Cast, Clamp, Clone, Cos, Cosh, Div, Exp, Expm1, Log,
    Log1p, Maximum, Minimum, Mul, Neg, PowScalar, PowTensor, Relu, RPowScalar, Sigmoid, Sin, Sinh, Sqrt, Sub, Tan,
    Tanh, ToDevice, Where, compare, logical_not, pow, sign, where,
)
from gradsolve.ops.reductions import (  # noqa: F401
    Amax, Amin, Max, Min, Norm2, NormP, Prod, Sum, argextreme, mean, norm, reduce_extreme,
)
from gradsolve.ops.shape import Cat, Expand, Index, IndexAdd, Permute, Reshape, SumTo, cat, stack  # noqa: F401
from gradsolve.ops.linalg import MatMul, matmul  # noqa: F401
