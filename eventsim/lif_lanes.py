"""One LIF membrane step, eight neurons at a time, with the spike list written by vector compress.

The encoder keeps a population's spikes as a list of the features that fired
(every reader is event-driven). Written element by element, that list costs a
serial store-and-count per neuron, more than the membrane update itself.
:func:`lif_lanes` does both in one pass of 8-lane vector code: load ``u`` and
the input current, ``u' = gamma * u + I`` (or ``gamma * u + gain * I``),
compare with ``v_th``, reset the lanes that fired, update the ASR numerator
``a = gamma * a + s`` and compress-store the fired features at the end of the
list (one instruction with AVX-512, legalised elsewhere). For IF neurons
(``gamma = 1``) ``1.0 * a + s`` is exactly the spike count ``a + s``.
Every lane does the contract's scalar operations in the same order (a multiply,
then an add: no fused multiply-add), so membranes and spikes are those of the
scalar loop bit for bit.

Emitted through ``numba.extending.intrinsic`` as LLVM vector code (numba has no
vector types); with ``NUMBA_DISABLE_JIT`` the same step runs as plain Python.
"""

from __future__ import annotations

from llvmlite import ir
from numba import config, njit, types
from numba.extending import intrinsic

from eventsim.llvm_lanes import declare, splat

__all__ = ["lif_lanes", "lif_lanes_row"]

_LANES = 8

if config.DISABLE_JIT:

    def _lanes(u, x, a, en, o, c0, m, k, gamma, gain, v_th, decay, reset_zero):
        u, x, a, en = (v.reshape(-1)[o:] for v in (u, x, a, en))
        for c in range(c0, min(c0 + _LANES, m)):
            uu = gamma * u[c] + (gain * x[c] if decay else x[c])
            f = uu >= v_th
            if reset_zero:
                u[c] = 0.0 if f else uu
            else:
                u[c] = uu - v_th if f else uu
            a[c] = gamma * a[c] + (1.0 if f else 0.0)
            if f:
                en[k] = c
                k += 1
        return k

else:
    _f64 = ir.DoubleType()
    _i64 = ir.IntType(64)
    _i32 = ir.IntType(32)
    _i8 = ir.IntType(8)
    _i1 = ir.IntType(1)
    _vd = ir.VectorType(_f64, _LANES)
    _vb = ir.VectorType(_i1, _LANES)
    _vi32 = ir.VectorType(_i32, _LANES)
    _vi64 = ir.VectorType(_i64, _LANES)

    def _load(builder, ptr, c0, valid):
        fn = declare(builder, "llvm.masked.load.v8f64.p0", _vd, [_f64.as_pointer(), _i32, _vb, _vd])
        return builder.call(fn, [builder.gep(ptr, [c0]), ir.Constant(_i32, 8), valid, ir.Constant(_vd, [0.0] * 8)])

    def _store(builder, val, ptr, c0, valid):
        fn = declare(builder, "llvm.masked.store.v8f64.p0", ir.VoidType(), [_vd, _f64.as_pointer(), _i32, _vb])
        builder.call(fn, [val, builder.gep(ptr, [c0]), ir.Constant(_i32, 8), valid])

    @intrinsic
    def _lanes(typingctx, u, x, a, en, o, c0, m, k, gamma, gain, v_th, decay, reset_zero):
        """Lanes ``c0 .. min(c0 + 8, m) - 1`` of the row that starts at flat element ``o`` of the C-contiguous
        ``u``, ``x``, ``a`` and ``en`` (1-D: ``o = 0``; ``[N, F]``: ``o = n * F``); returns the new list length."""
        if not (isinstance(en, types.Array) and en.dtype == types.int32
                and all(isinstance(v, types.Array) and v.layout == "C" for v in (u, x, a, en))):
            return None
        sig = types.int64(u, x, a, en, types.int64, types.int64, types.int64, types.int64, types.float64,
                          types.float64, types.float64, types.boolean, types.boolean)

        def codegen(context, builder, signature, args):
            u_, x_, a_, en_, o_, c0_, m_, k_, gamma_, gain_, vth_, decay_, reset_zero_ = args
            data = [builder.gep(context.make_array(signature.args[i])(context, builder, args[i]).data, [o_])
                    for i in range(4)]
            up, xp, ap, ep = data
            lane = ir.Constant(_vi64, list(range(_LANES)))
            idx64 = builder.add(splat(builder, c0_, _vi64), lane)
            valid = builder.icmp_signed("<", idx64, splat(builder, m_, _vi64))
            uv = _load(builder, up, c0_, valid)
            xv = _load(builder, xp, c0_, valid)
            g = splat(builder, gamma_, _vd)
            th = splat(builder, vth_, _vd)
            dec = context.cast(builder, decay_, types.boolean, types.boolean)
            rz = context.cast(builder, reset_zero_, types.boolean, types.boolean)
            xi = builder.select(builder.trunc(dec, _i1) if dec.type != _i1 else dec,
                                builder.fmul(splat(builder, gain_, _vd), xv), xv)
            uu = builder.fadd(builder.fmul(g, uv), xi)
            fire = builder.and_(builder.fcmp_ordered(">=", uu, th), valid)
            zero = ir.Constant(_vd, [0.0] * _LANES)
            after = builder.select(builder.trunc(rz, _i1) if rz.type != _i1 else rz, zero, builder.fsub(uu, th))
            _store(builder, builder.select(fire, after, uu), up, c0_, valid)
            av = _load(builder, ap, c0_, valid)
            s = builder.select(fire, ir.Constant(_vd, [1.0] * _LANES), zero)
            _store(builder, builder.fadd(builder.fmul(g, av), s), ap, c0_, valid)
            feats = builder.trunc(idx64, _vi32)
            cs = declare(builder, "llvm.masked.compressstore.v8i32", ir.VoidType(), [_vi32, _i32.as_pointer(), _vb])
            builder.call(cs, [feats, builder.gep(ep, [k_]), fire])
            pop = declare(builder, "llvm.ctpop.i8", _i8, [_i8])
            n_fire = builder.zext(builder.call(pop, [builder.bitcast(fire, _i8)]), _i64)
            return builder.add(k_, n_fire)

        return sig, codegen


@njit(cache=True)
def lif_lanes(u, x, a, en, gamma, gain, v_th, decay, reset_zero):
    """One step of one position's ``F`` neurons (1-D contiguous float64 ``u``, ``x``, ``a``; int32 ``en``).

    ``u = gamma * u + x`` (``decay``: ``gamma * u + gain * x``); where ``u >= v_th`` the neuron
    spikes and ``u`` is reset (to zero, or by subtracting ``v_th``); ``a = gamma * a + s``. The features that spiked are written to ``en`` in increasing
    order; returns how many.
    """
    m = u.shape[0]
    k = 0
    for c0 in range(0, m, _LANES):
        k = _lanes(u, x, a, en, 0, c0, m, k, gamma, gain, v_th, decay, reset_zero)
    return k


@njit(cache=True)
def lif_lanes_row(u, x, a, en, n, gamma, gain, v_th, decay, reset_zero):
    """:func:`lif_lanes` for row ``n`` of ``[N, F]`` C-contiguous ``u``, ``x``, ``a`` and ``en``, without taking
    the rows as views (a view per row and population costs a reference count increment and decrement)."""
    m = u.shape[1]
    k = 0
    for c0 in range(0, m, _LANES):
        k = _lanes(u, x, a, en, n * m, c0, m, k, gamma, gain, v_th, decay, reset_zero)
    return k
