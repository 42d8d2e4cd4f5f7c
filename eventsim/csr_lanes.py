"""One CSR weight row added into an accumulator, eight non-zeros at a time: the sparse spike projection's inner loop.

A spike of input neuron ``j`` adds the non-zeros of CSR row ``j`` to its
position's accumulator (``acc[idx[k]] += val[k]``). At the encoders' sizes a
90 %-pruned row holds 25-100 non-zeros, and the scalar loop's fixed cost per
row (an unrolled body plus a remainder loop: two data-dependent loop exits)
was about as large as the adds of a 256-column row. :func:`scatter_row` goes
over the row in chunks of eight lanes: the indices and the float32 values are
loaded under a lane mask (the last chunk partial, no remainder loop), the
accumulators gathered, the widened values added and the sums scattered back.

The columns of one row are distinct, so every accumulator still receives one
add per row, rows in the order of the spike list: the same sums, bit for bit,
as the scalar loop. With ``NUMBA_DISABLE_JIT`` the scalar loop runs as plain
Python.
"""

from __future__ import annotations

from llvmlite import ir
from numba import config, njit, types
from numba.extending import intrinsic

from eventsim.llvm_lanes import declare, splat

__all__ = ["scatter_row", "scatter_rows"]

_LANES = 8

if config.DISABLE_JIT:

    def _chunk(acc, idx, val, k0, stop):
        for k in range(k0, min(k0 + _LANES, stop)):
            acc[idx[k]] += val[k]

else:
    _f32 = ir.FloatType()
    _f64 = ir.DoubleType()
    _i1 = ir.IntType(1)
    _i32 = ir.IntType(32)
    _i64 = ir.IntType(64)
    _vb = ir.VectorType(_i1, _LANES)
    _vd = ir.VectorType(_f64, _LANES)
    _vf = ir.VectorType(_f32, _LANES)
    _vi64 = ir.VectorType(_i64, _LANES)
    _vptr = ir.VectorType(_f64.as_pointer(), _LANES)

    @intrinsic
    def _chunk(typingctx, acc, idx, val, k0, stop):
        """``acc[idx[k]] += val[k]`` for ``k0 <= k < min(k0 + 8, stop)`` (distinct ``idx`` within the chunk)."""
        if not (isinstance(acc, types.Array) and acc.dtype == types.float64 and acc.layout == "C"
                and isinstance(idx, types.Array) and idx.layout == "C" and val.layout == "C"
                and isinstance(idx.dtype, types.Integer) and isinstance(val, types.Array)
                and val.dtype == types.float32):
            return None
        sig = types.void(acc, idx, val, types.int64, types.int64)
        i_bits = idx.dtype.bitwidth
        i_signed = idx.dtype.signed

        def codegen(context, builder, signature, args):
            acc_, idx_, val_, k0_, stop_ = args
            ap = context.make_array(signature.args[0])(context, builder, acc_).data
            ip = context.make_array(signature.args[1])(context, builder, idx_).data
            vp = context.make_array(signature.args[2])(context, builder, val_).data
            lane = ir.Constant(_vi64, list(range(_LANES)))
            valid = builder.icmp_signed("<", builder.add(splat(builder, k0_, _vi64), lane),
                                        splat(builder, stop_, _vi64))
            ity = ir.IntType(i_bits)
            viy = ir.VectorType(ity, _LANES)
            li = declare(builder, f"llvm.masked.load.v8i{i_bits}.p0", viy, [ity.as_pointer(), _i32, _vb, viy])
            cols = builder.call(li, [builder.gep(ip, [k0_]), ir.Constant(_i32, i_bits // 8), valid,
                                     ir.Constant(viy, [0] * _LANES)])
            cols = (builder.sext if i_signed else builder.zext)(cols, _vi64) if i_bits < 64 else cols
            lf = declare(builder, "llvm.masked.load.v8f32.p0", _vf, [_f32.as_pointer(), _i32, _vb, _vf])
            w = builder.fpext(builder.call(lf, [builder.gep(vp, [k0_]), ir.Constant(_i32, 4), valid,
                                                ir.Constant(_vf, [0.0] * _LANES)]), _vd)  # exact
            base = builder.ptrtoint(ap, _i64)
            ptrs = builder.inttoptr(builder.add(splat(builder, base, _vi64),
                                                builder.shl(cols, ir.Constant(_vi64, [3] * _LANES))), _vptr)
            gather = declare(builder, "llvm.masked.gather.v8f64.v8p0", _vd, [_vptr, _i32, _vb, _vd])
            old = builder.call(gather, [ptrs, ir.Constant(_i32, 8), valid, ir.Constant(_vd, [0.0] * _LANES)])
            scatter = declare(builder, "llvm.masked.scatter.v8f64.v8p0", ir.VoidType(), [_vd, _vptr, _i32, _vb])
            builder.call(scatter, [builder.fadd(old, w), ptrs, ir.Constant(_i32, 8), valid])
            return context.get_dummy_value()

        return sig, codegen


@njit(cache=True)
def scatter_row(acc, idx, val, start, stop):
    """``acc[idx[k]] += val[k]`` for ``start <= k < stop``: one CSR row (distinct columns) into ``acc``.

    ``acc`` is a contiguous float64 array, ``idx`` integer column numbers below
    ``acc.shape[0]``, ``val`` float32 (widened exactly).
    """
    for k0 in range(start, stop, _LANES):
        _chunk(acc, idx, val, k0, stop)


@njit(cache=True)
def scatter_rows(acc, idx, val, rowptr, row_off, rows, n_rows):
    """:func:`scatter_row` for CSR rows ``rows[0 .. n_rows - 1]`` in order (row ``j`` spans
    ``rowptr[row_off + j] .. rowptr[row_off + j + 1]``): a position's whole spike list."""
    for e in range(n_rows):
        j = rows[e]
        scatter_row(acc, idx, val, rowptr[row_off + j], rowptr[row_off + j + 1])
