"""Small LLVM IR helpers shared by the vector kernels emitted through ``numba.extending.intrinsic``.

:mod:`eventsim.lif_lanes`, :mod:`eventsim.csr_lanes` and :mod:`eventsim.vmath` build
their loops as LLVM vector code (numba has no vector type); these are the two
pieces each needs: declaring an LLVM intrinsic in the module being built, and
broadcasting a scalar to every lane.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils

__all__ = ["declare", "splat"]


def declare(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """The function ``name`` (an LLVM intrinsic such as ``llvm.masked.gather.v8f64.v8p0``) in the builder's module."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def splat(builder: ir.IRBuilder, val: ir.Value, vty: ir.VectorType) -> ir.Value:
    """A ``vty`` vector with ``val`` in every lane (insert into lane 0, shuffle with an all-zero mask)."""
    i32 = ir.IntType(32)
    v = builder.insert_element(ir.Constant(vty, None), val, ir.Constant(i32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, None), ir.Constant(ir.VectorType(i32, vty.count), [0] * vty.count))
