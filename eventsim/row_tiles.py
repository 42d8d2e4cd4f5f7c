"""Sums of weight rows with the accumulators in registers: the binary-spike projection's inner loop.

A spike of input neuron ``j`` at position ``n`` adds weight row ``j`` to that
position's accumulator. Done one row at a time over the whole accumulator, every
accumulate (AC) loads and stores the accumulator (16 bytes per AC through L2 when
the accumulators of all positions do not fit L1); that traffic, not the adds,
was the cost (~0.2 ns per AC here). :func:`add_rows` instead takes one position's
whole spike list and goes tile by tile over the columns: a tile of 64 float64
accumulators stays in eight 8-lane vector registers while every spiking row's
64 weights (float32, widened exactly) are added to it, then is stored once.
Per AC that is a quarter of a vector load and an eighth of a vector add.

Each accumulator still receives its rows in the order of the list, after its
initial value: the sums are the same, bit for bit, as adding the rows one at a
time.

The tile loop is LLVM vector code emitted through ``numba.extending.intrinsic``
(numba has no vector type, and its loop vectoriser does not keep a loop-carried
accumulator in registers); columns past the last full tile go through a 32-wide
tile, 8-wide tiles and then a scalar loop. With ``NUMBA_DISABLE_JIT`` the same sums run as
plain Python.
"""

from __future__ import annotations

from llvmlite import ir
from numba import config, njit, types
from numba.extending import intrinsic

__all__ = ["TILE", "add_rows", "add_rows_from"]

#: Columns per register tile (8 vectors of 8 float64).
TILE = 64
_LANES = 8

if config.DISABLE_JIT:

    def _tile_sum(acc, acc_off, w, rows, n_rows, stride, w_off, width):
        for c in range(width):
            a = acc[acc_off + c]
            for e in range(n_rows):
                a += w[w_off + rows[e] * stride + c]
            acc[acc_off + c] = a

    def _tile8x8(acc, acc_off, w, rows, n_rows, stride, w_off):
        _tile_sum(acc, acc_off, w, rows, n_rows, stride, w_off, TILE)

    def _tile4x8(acc, acc_off, w, rows, n_rows, stride, w_off):
        _tile_sum(acc, acc_off, w, rows, n_rows, stride, w_off, TILE // 2)

    def _tile1x8(acc, acc_off, w, rows, n_rows, stride, w_off):
        _tile_sum(acc, acc_off, w, rows, n_rows, stride, w_off, _LANES)

    def _tile_sum_from(acc, acc_off, init, init_off, w, rows, n_rows, stride, w_off, width):
        for c in range(width):
            a = init[init_off + c]
            for e in range(n_rows):
                a += w[w_off + rows[e] * stride + c]
            acc[acc_off + c] = a

    def _from8x8(acc, acc_off, init, init_off, w, rows, n_rows, stride, w_off):
        _tile_sum_from(acc, acc_off, init, init_off, w, rows, n_rows, stride, w_off, TILE)

    def _from4x8(acc, acc_off, init, init_off, w, rows, n_rows, stride, w_off):
        _tile_sum_from(acc, acc_off, init, init_off, w, rows, n_rows, stride, w_off, TILE // 2)

    def _from1x8(acc, acc_off, init, init_off, w, rows, n_rows, stride, w_off):
        _tile_sum_from(acc, acc_off, init, init_off, w, rows, n_rows, stride, w_off, _LANES)

else:
    _f64 = ir.DoubleType()
    _i64 = ir.IntType(64)
    _vd = ir.VectorType(_f64, _LANES)

    def _make_tile(n_vec: int, from_init: bool = False):
        """Intrinsic ``(acc, acc_off, w, rows, n_rows, stride, w_off)``: for ``c < n_vec * 8``,
        ``acc[acc_off + c] += w[w_off + rows[e] * stride + c]`` for ``e = 0 .. n_rows - 1`` in order,
        the ``n_vec`` accumulator vectors held in registers across the rows. With ``from_init`` it takes
        ``(acc, acc_off, init, init_off, w, rows, n_rows, stride, w_off)`` and the sums start at
        ``init[init_off + c]`` instead of ``acc[acc_off + c]`` (``acc`` is only written)."""

        def tile_from(typingctx, acc, acc_off, init, init_off, w, rows, n_rows, stride, w_off):
            if not (isinstance(init, types.Array) and init.dtype == types.float64):
                return None
            got = tile(typingctx, acc, acc_off, w, rows, n_rows, stride, w_off)
            if got is None:
                return None
            inner_sig, inner_codegen = got
            sig = types.void(acc, types.int64, init, types.int64, w, rows, types.int64, types.int64, types.int64)

            def codegen(context, builder, signature, args):
                acc_, acc_off_, init_, init_off_, w_, rows_, n_rows_, stride_, w_off_ = args
                ip = context.make_array(signature.args[2])(context, builder, init_).data
                i_base = builder.gep(ip, [init_off_])
                start = [builder.load(builder.bitcast(builder.gep(i_base, [ir.Constant(_i64, k * _LANES)]),
                                                      _vd.as_pointer()), align=8) for k in range(n_vec)]
                return inner_codegen(context, builder, inner_sig, [acc_, acc_off_, w_, rows_, n_rows_, stride_,
                                                                   w_off_], start)

            return sig, codegen

        def tile(typingctx, acc, acc_off, w, rows, n_rows, stride, w_off):
            if not (isinstance(acc, types.Array) and acc.dtype == types.float64 and isinstance(w, types.Array)
                    and w.dtype in (types.float32, types.float64) and isinstance(rows, types.Array)
                    and isinstance(rows.dtype, types.Integer)):
                return None
            sig = types.void(acc, types.int64, w, rows, types.int64, types.int64, types.int64)
            w_narrow = w.dtype == types.float32
            w_vec = ir.VectorType(ir.FloatType() if w_narrow else _f64, _LANES)

            def codegen(context, builder, signature, args, start=None):
                acc_, acc_off_, w_, rows_, n_rows_, stride_, w_off_ = args
                ap = context.make_array(signature.args[0])(context, builder, acc_).data
                wp = context.make_array(signature.args[2])(context, builder, w_).data
                rp = context.make_array(signature.args[3])(context, builder, rows_).data
                a_base = builder.gep(ap, [acc_off_])
                a_ptrs = [builder.bitcast(builder.gep(a_base, [ir.Constant(_i64, k * _LANES)]), _vd.as_pointer())
                          for k in range(n_vec)]
                if start is None:
                    start = [builder.load(p, align=8) for p in a_ptrs]
                entry = builder.basic_block
                head = builder.append_basic_block("rows.head")
                body = builder.append_basic_block("rows.body")
                done = builder.append_basic_block("rows.done")
                builder.branch(head)
                builder.position_at_end(head)
                e = builder.phi(_i64)
                e.add_incoming(ir.Constant(_i64, 0), entry)
                acc_v = []
                for k in range(n_vec):
                    phi = builder.phi(_vd)
                    phi.add_incoming(start[k], entry)
                    acc_v.append(phi)
                builder.cbranch(builder.icmp_signed("<", e, n_rows_), body, done)
                builder.position_at_end(body)
                r = builder.load(builder.gep(rp, [e]))
                r = builder.sext(r, _i64) if r.type.width < 64 else r
                w_base = builder.gep(wp, [builder.add(w_off_, builder.mul(r, stride_))])
                nxt = []
                for k in range(n_vec):
                    q = builder.bitcast(builder.gep(w_base, [ir.Constant(_i64, k * _LANES)]), w_vec.as_pointer())
                    x = builder.load(q, align=4 if w_narrow else 8)
                    if w_narrow:
                        x = builder.fpext(x, _vd)  # exact
                    nxt.append(builder.fadd(acc_v[k], x))
                tail = builder.basic_block
                e.add_incoming(builder.add(e, ir.Constant(_i64, 1)), tail)
                for k in range(n_vec):
                    acc_v[k].add_incoming(nxt[k], tail)
                builder.branch(head)
                builder.position_at_end(done)
                for k in range(n_vec):
                    builder.store(acc_v[k], a_ptrs[k], align=8)
                return context.get_dummy_value()

            return sig, codegen

        return intrinsic(tile_from if from_init else tile)

    _tile8x8 = _make_tile(TILE // _LANES)
    _tile4x8 = _make_tile(TILE // _LANES // 2)
    _tile1x8 = _make_tile(1)
    _from8x8 = _make_tile(TILE // _LANES, True)
    _from4x8 = _make_tile(TILE // _LANES // 2, True)
    _from1x8 = _make_tile(1, True)


@njit(cache=True)
def add_rows(acc, acc_off, w, w_off, rows, n_rows, ncols, stride):
    """``acc[acc_off + c] += w[w_off + rows[e] * stride + c]`` for ``c < ncols``, ``e = 0 .. n_rows - 1`` in order.

    ``acc`` is a flat float64 array, ``w`` a flat float32 or float64 array of
    row-major rows ``stride >= ncols`` elements apart (a padded row keeps rows'
    same columns out of one cache set), ``rows`` the row numbers (a spike list).
    """
    if n_rows == 0:
        return
    c = 0
    while c + TILE <= ncols:
        _tile8x8(acc, acc_off + c, w, rows, n_rows, stride, w_off + c)
        c += TILE
    if c + TILE // 2 <= ncols:
        _tile4x8(acc, acc_off + c, w, rows, n_rows, stride, w_off + c)
        c += TILE // 2
    while c + _LANES <= ncols:
        _tile1x8(acc, acc_off + c, w, rows, n_rows, stride, w_off + c)
        c += _LANES
    while c < ncols:
        a = acc[acc_off + c]
        for e in range(n_rows):
            a += w[w_off + rows[e] * stride + c]
        acc[acc_off + c] = a
        c += 1


@njit(cache=True)
def add_rows_from(acc, acc_off, init, init_off, w, w_off, rows, n_rows, ncols, stride):
    """``acc[acc_off + c] = init[init_off + c] + w[w_off + rows[0] * stride + c] + ...`` (rows in list order).

    :func:`add_rows` with the sums starting at ``init`` (a projection's bias, or
    zeros) instead of at ``acc``: the accumulator is written once, never read, so
    a projection needs no separate pass that first copies the bias into it. The
    same sums, bit for bit, as copying ``init`` into ``acc`` and calling
    :func:`add_rows`.
    """
    c = 0
    while c + TILE <= ncols:
        _from8x8(acc, acc_off + c, init, init_off + c, w, rows, n_rows, stride, w_off + c)
        c += TILE
    if c + TILE // 2 <= ncols:
        _from4x8(acc, acc_off + c, init, init_off + c, w, rows, n_rows, stride, w_off + c)
        c += TILE // 2
    while c + _LANES <= ncols:
        _from1x8(acc, acc_off + c, init, init_off + c, w, rows, n_rows, stride, w_off + c)
        c += _LANES
    while c < ncols:
        a = init[init_off + c]
        for e in range(n_rows):
            a += w[w_off + rows[e] * stride + c]
        acc[acc_off + c] = a
        c += 1
