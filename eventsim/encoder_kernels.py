"""Numba kernels of the encoder schedule: all T steps of one input in one call, all positions at once.

A step runs every node in schedule order over flat buffers, driven by an integer
program table; :func:`encoder_run` runs the T steps (segment by segment, a chunk of
steps at a time) and the per-step read-out. Node values are ``[positions, features]`` float64; a spike
population is, per position, the list of features that spiked
(``ev_idx[n, :ev_cnt[n]]``), which is what its readers take: work grows with
spikes, not with the size of the spike tensor. A node's features lie on PEs in
runs (``first feature, stop, PE``); every operation is counted on the PE of its
feature in ``counts_t[plane, pe]`` (planes :data:`eventsim.kernels.C_*`). Spike
projections sum weight rows in registers (:mod:`eventsim.row_tiles`) or scatter
CSR rows; real-valued inputs go through :func:`eventsim.kernels.deliver`; LIF
steps are :mod:`eventsim.lif_lanes`.

The arithmetic follows the contract in :mod:`eventsim.encoder_manifest` term by
term (same expressions, same order where the order is fixed; LayerNorm's divide
as a corrected reciprocal product, which gives the same quotient), so the numpy
reference and the torch oracle meet the same spikes.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from eventsim.csr_lanes import scatter_rows
from eventsim.kernels import (
    B_ACC_BASE,
    B_DENSE,
    B_DENSE_OFF,
    B_DENSE_STRIDE,
    B_NCOLS,
    B_NNZ_OFF,
    B_NNZ_UNIFORM,
    B_NPE,
    B_PE_FIRST,
    B_ROWPTR_OFF,
    C_ACS,
    C_ADDS,
    C_DIV,
    C_EMITTED,
    C_EXP,
    C_GELU,
    C_LAYERNORM,
    C_MULS,
    C_RECEIVED,
    C_ROWS,
    C_UPDATES,
    deliver,
)
from eventsim.lif_lanes import lif_lanes_row
from eventsim.row_tiles import add_rows, add_rows_from
from eventsim.vmath import exp_into, fma, gelu_into


@njit(cache=True)
def count_per_feature(counts_t, plane, runs, times):
    """Add ``times`` to ``plane`` for every feature, one add per PE run (element-wise work over all positions)."""
    for r in range(runs.shape[0]):
        counts_t[plane, runs[r, 2]] += times * (runs[r, 1] - runs[r, 0])


@njit(cache=True)
def count_emitted_real(out, runs, counts_t):
    """Graded events a real-valued node sends: its non-zero (position, feature) values, on their PEs.

    Features of one PE are contiguous (a run), so each run is one branch-free
    (vectorised) count over all positions.
    """
    N = out.shape[0]
    for r in range(runs.shape[0]):
        c0 = runs[r, 0]
        c1 = runs[r, 1]
        tot = 0
        for n in range(N):
            row = out[n, c0:c1]
            for c in range(row.shape[0]):
                tot += row[c] != 0.0
        counts_t[C_EMITTED, runs[r, 2]] += tot


@njit(cache=True, nogil=True)
def divide_by_node(num, den, cells, out):
    """``out[a:b] = num[a:b] / den[i]`` for every row ``(a, b, i)`` of ``cells`` (a LIF's state and its node)."""
    for r in range(cells.shape[0]):
        d = den[cells[r, 2]]
        for k in range(cells[r, 0], cells[r, 1]):
            out[k] = num[k] / d


@njit(cache=True)
def gather_input(dst, src, first, runs, counts_t):
    """Element-wise sum of a node's real inputs, one input at a time, in list order.

    The first input is copied; a further real input costs one add per element.
    """
    N, F = dst.shape
    if first:
        for n in range(N):
            d = dst[n]
            s = src[n]
            for c in range(F):
                d[c] = s[c]
    else:
        for n in range(N):
            d = dst[n]
            s = src[n]
            for c in range(F):
                d[c] += s[c]
        count_per_feature(counts_t, C_ADDS, runs, N)


@njit(cache=True, inline="always")
def _count_by_run(counts_t, plane, runs, ev_idx, n, k):
    """Add the sorted list ``ev_idx[n, :k]`` of features to ``plane``, each entry on the PE of the run holding
    it: one add for a single run, else per run the stretch below its stop, found by binary search."""
    if runs.shape[0] == 1:
        counts_t[plane, runs[0, 2]] += k
        return
    i = 0
    for r in range(runs.shape[0]):
        i_run = i
        stop = runs[r, 1]
        hi = k
        while i < hi:  # first entry >= stop in ev_idx[n, i:k]
            mid = (i + hi) >> 1
            if ev_idx[n, mid] < stop:
                i = mid + 1
            else:
                hi = mid
        counts_t[plane, runs[r, 2]] += i - i_run


@njit(cache=True)
def gather_spikes(dst, ev_idx, ev_cnt, first, runs, counts_t):
    """Add a spike input (0/1) to ``dst`` from its spike lists: one AC per spike (or a copy if it is the first).

    The ACs go to the PE of each spike's feature (:func:`_count_by_run`).
    """
    N = dst.shape[0]
    if first:
        dst[:, :] = 0.0
    for n in range(N):
        d = dst[n]
        e = ev_idx[n]
        k = ev_cnt[n]
        for i in range(k):
            d[e[i]] += 1.0
        _count_by_run(counts_t, C_ACS, runs, ev_idx, n, k)


@njit(cache=True)
def linear_init(out, bias, has_bias, runs, counts_t, write=True):
    """Start every position's accumulator at the bias (one add per output element) or at zero.

    ``write=False``: only count the bias adds; the first projection starts its sums
    at the bias itself (:func:`linear_from_spikes` with ``init``).
    """
    N, F = out.shape
    if has_bias:
        if write:
            for n in range(N):
                o = out[n]
                for c in range(F):
                    o[c] = bias[c]
        count_per_feature(counts_t, C_ADDS, runs, N)
    elif write:
        out[:, :] = 0.0


@njit(cache=True)
def linear_from_spikes(b, blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab, ev_idx, ev_cnt, out, counts_t,
                       per_row, n_rows, init=None):
    """Every position's spikes through block ``b``: one weight row per spike, ACs on the target PEs.

    A dense block goes position by position through :func:`eventsim.row_tiles.add_rows`
    (the accumulators of a 64-column tile in registers across the position's spike list); a
    CSR block scatters each spike's row (:func:`_csr_from_spikes`). Either way each
    output element receives its rows in the order of its position's list (increasing
    input order) after the bias, as adding the rows one at a time: the same sums, bit for
    bit. The ACs are counted apart from the sums (:func:`_count_spike_rows`). ``n_rows`` is
    the block's number of rows (input neurons); a list may name a row more than once (the
    concatenated lists of several spike inputs of one linear node). ``init`` (a block covering
    all of ``out``'s columns): the sums start at ``init`` (the bias) instead of at ``out``,
    position by position (dense: :func:`eventsim.row_tiles.add_rows_from`, ``out`` only
    written; CSR: ``out[n]`` set to ``init`` just before its rows).
    """
    if blocks[b, B_DENSE] != 1:
        _csr_from_spikes(b, blocks, rowptr, syn_idx, syn_val, ev_idx, ev_cnt, out, init)
    else:
        N, F = out.shape
        flat = out.reshape(N * F)
        ncols = blocks[b, B_NCOLS]
        base = blocks[b, B_ACC_BASE]
        doff = blocks[b, B_DENSE_OFF]
        stride = blocks[b, B_DENSE_STRIDE]
        if init is None:
            for n in range(N):
                add_rows(flat, n * F + base, dense_val, doff, ev_idx[n], ev_cnt[n], ncols, stride)
        else:
            for n in range(N):
                add_rows_from(flat, n * F + base, init, 0, dense_val, doff, ev_idx[n], ev_cnt[n], ncols, stride)
    _count_spike_rows(b, blocks, nnz_tab, ev_idx, ev_cnt, counts_t, per_row, n_rows)


@njit(cache=True)
def _count_spike_rows(b, blocks, nnz_tab, ev_idx, ev_cnt, counts_t, per_row, n_in):
    """ACs of block ``b`` on each target PE: for every spike, that row's non-zeros on the PE.

    A block whose rows all have the same non-zeros on each PE (unpruned) takes
    the first row's share once per spike list; otherwise a block on one PE adds
    its rows' non-zeros spike by spike, and a block split over several PEs tallies
    spikes per input neuron (``per_row``) first and takes each PE's share once per row.
    """
    N = ev_idx.shape[0]
    pe0 = blocks[b, B_PE_FIRST]
    npe = blocks[b, B_NPE]
    noff = blocks[b, B_NNZ_OFF]
    total = 0
    for n in range(N):
        total += ev_cnt[n]
    if blocks[b, B_NNZ_UNIFORM] == 1:
        for p in range(npe):
            counts_t[C_ACS, pe0 + p] += nnz_tab[noff + p] * total
    elif npe == 1:
        acs = 0
        for n in range(N):
            en = ev_idx[n]
            for e in range(ev_cnt[n]):
                acs += nnz_tab[noff + en[e]]
        counts_t[C_ACS, pe0] += acs
    else:
        for j in range(n_in):
            per_row[j] = 0
        for n in range(N):
            en = ev_idx[n]
            for e in range(ev_cnt[n]):
                per_row[en[e]] += 1
        for j in range(n_in):
            k = per_row[j]
            if k != 0:
                for p in range(npe):
                    counts_t[C_ACS, pe0 + p] += nnz_tab[noff + j * npe + p] * k
    for p in range(pe0, pe0 + npe):
        counts_t[C_RECEIVED, p] += total
        counts_t[C_ROWS, p] += total


@njit(cache=True)
def _csr_from_spikes(b, blocks, rowptr, syn_idx, syn_val, ev_idx, ev_cnt, out, init=None):
    """CSR block ``b``, position by position: each spike's row scattered into that position's accumulator.

    ``init``: each position's accumulator is first set to it (the bias), just before its
    rows come in (the accumulator is then in L1 for the scatter).
    """
    N = out.shape[0]
    ncols = blocks[b, B_NCOLS]
    base = blocks[b, B_ACC_BASE]
    roff = blocks[b, B_ROWPTR_OFF]
    for n in range(N):
        a = out[n, base:base + ncols]
        if init is not None:
            for c in range(ncols):
                a[c] = init[c]
        scatter_rows(a, syn_idx, syn_val, rowptr, roff, ev_idx[n], ev_cnt[n])


@njit(cache=True)
def linear_from_real(b, blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab, x, out, counts_t, tmp_idx, tmp_val):
    """Every position's non-zero real inputs through block ``b``: one weight row each, MACs on the target PEs."""
    for n in range(out.shape[0]):
        k = 0
        for j in range(x.shape[1]):
            if x[n, j] != 0.0:
                tmp_idx[k] = j
                tmp_val[k] = x[n, j]
                k += 1
        deliver(b, blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab, tmp_idx, tmp_val, k, out[n], counts_t)


@njit(cache=True, fastmath={"reassoc"})
def _row_sum(x):
    """Sum of a row, reassociated (vectorised): LayerNorm statistics, not a contract-ordered sum."""
    s = 0.0
    for c in range(x.shape[0]):
        s += x[c]
    return s


@njit(cache=True, fastmath={"reassoc"})
def _row_sq_dev(x, mu):
    s = 0.0
    for c in range(x.shape[0]):
        d = x[c] - mu
        s += d * d
    return s


@njit(cache=True, inline="always")
def _quotient(x, d, inv):
    """``x / d`` correctly rounded, given ``inv = 1 / d`` rounded: ``q = x * inv`` corrected once by the exact
    remainder ``x - q * d`` (a fused multiply-add) to ``q + rem * inv`` (Markstein's theorem; valid while the
    remainder does not underflow). A divide costs 8-16 times a multiply."""
    q = x * inv
    return fma(fma(-q, d, x), inv, q)


@njit(cache=True)
def layernorm_rows(x, weight, bias, eps, runs, counts_t):
    """In place, per position: ``(x - mean) / sqrt(var + eps) * weight + bias`` (biased variance).

    The mean and variance sums are vectorised (their order is not the
    contract's to fix; the numpy and torch references sum pairwise). The
    quotient is the correctly rounded ``(x - mean) / sd`` computed without a
    divide per element (a divide costs 8-16 times a multiply): with
    ``y = 1 / sd`` rounded, ``q = (x - mean) * y`` is corrected once by the exact
    remainder ``e = (x - mean) - q * sd`` (one fused multiply-add) to
    ``q + e * y`` (Markstein's theorem; tests compare it with the divide).
    """
    N, F = x.shape
    for n in range(N):
        r = x[n]
        mu = _row_sum(r) / F
        sd = math.sqrt(_row_sq_dev(r, mu) / F + eps)
        inv = 1.0 / sd
        for c in range(F):
            r[c] = _quotient(r[c] - mu, sd, inv) * weight[c] + bias[c]
    count_per_feature(counts_t, C_LAYERNORM, runs, N)


@njit(cache=True)
def gelu_rows(x, runs, counts_t):
    """In place: exact GELU ``0.5 * x * (1 + erf(x / sqrt(2)))``, vectorised (:func:`eventsim.vmath.gelu_into`)."""
    N, F = x.shape
    flat = x.reshape(N * F)
    gelu_into(flat, flat)
    count_per_feature(counts_t, C_GELU, runs, N)


@njit(cache=True)
def lif_step(current, u, ev_idx, ev_cnt, v_th, gamma, input_gain, decay_input, reset_zero,
             asr_num, cur_num, track_current, runs, counts_t):
    """One step of a LIF population at every position: membrane, spikes, their lists, the ASR numerator.

    ``u = gamma * u + I`` (or ``gamma * u + input_gain * I`` with ``decay_input``,
    ``input_gain = 1 - gamma``); spike where ``u >= v_th``; reset by subtraction
    or to zero. The ASR numerator ``sum gamma^(t-tau) s[tau]`` is updated in
    place (for IF neurons, ``gamma = 1``, the spike count). With ``track_current`` the
    gamma-weighted input current (for the steady-state residual) is kept too.
    Returns the number of spikes.

    Per position: one pass of 8-lane vector code (:func:`eventsim.lif_lanes.lif_lanes_row`:
    membrane, threshold, reset, the ASR numerator, and the spike list by
    vector compress); each PE's emitted events are then its stretch of the
    sorted list. The spikes themselves are only lists: every reader
    (projections, attention, element-wise adds) takes lists.
    """
    N, F = u.shape
    spikes = 0
    for n in range(N):  # rows by index, not as views (a view per row costs an atomic reference count)
        k = lif_lanes_row(u, current, asr_num, ev_idx, n, gamma, input_gain, v_th, decay_input, reset_zero)
        if track_current:
            for c in range(F):
                cur_num[n, c] = gamma * cur_num[n, c] + current[n, c]
        ev_cnt[n] = k
        spikes += k
        _count_by_run(counts_t, C_EMITTED, runs, ev_idx, n, k)
    count_per_feature(counts_t, C_UPDATES, runs, N)
    return spikes


@njit(cache=True, fastmath={"reassoc", "nsz", "arcp", "contract"})
def lif_residual(asr_num, cur_num, den, k_over_vth):
    """Sum over all cells of ``(a - clip(k * I_bar / v_th, 0, 1))^2``, ``a = asr_num / den``, ``I_bar = cur_num / den``.

    Statistics only (reassociated sums): the ASR itself and the spikes never go through here.
    """
    N, F = asr_num.shape
    inv = 1.0 / den
    sq_sum = 0.0
    for n in range(N):
        an = asr_num[n]
        cn = cur_num[n]
        for c in range(F):
            a = an[c] * inv
            pred = k_over_vth * (cn[c] * inv)
            pred = 0.0 if pred < 0.0 else pred
            pred = 1.0 if pred > 1.0 else pred
            sq_sum += (a - pred) * (a - pred)
    return sq_sum


@njit(cache=True)
def spiking_attention(q, q_binary, q_idx, q_cnt, k_idx, k_cnt, v_idx, v_cnt, heads, scale, softmax, out, runs,
                      counts_t, qt, st, ot, nq, nk, pc, row_sum, mx):
    """Per head: ``S = scale * Q K^T`` event by event over key spikes, optional softmax, ``out = P V``.

    With softmax, ``P`` is ``E = exp(S - rowmax)`` and the output is divided by
    the row sums afterwards (the contract's order: exact 1 when all keys spiked).

    ``q`` is real values, or with ``q_binary`` spikes given by their lists
    ``q_idx``/``q_cnt``. Work runs on transposed, query-contiguous scratch so that every event is
    one vector add over all ``N`` queries: ``st[h, m, :]`` is column ``m`` of
    head ``h``'s scores, ``qt[c, :]`` column ``c`` of ``Q``, ``ot[c, :]`` column
    ``c`` of the output. Each score sums its keys' features in increasing
    order, each output its value positions in increasing order (adding an
    exact zero where a query did not contribute changes no value).

    Counts: ``Q K^T`` is ``nnz(Q[:, c]) * nnz(K[:, c])`` ACs on the PE of feature
    ``c``; ``P V`` is ``nnz(P[:, j])`` ACs per value spike ``(j, c)``, on the PE
    of ``c``. Scaling, exponentials and row sums (``N * N`` each per head) are
    counted on the PE of the head's first feature, divisions (``N`` per
    feature) on the PE of each output feature.
    """
    N, F = q.shape
    d = F // heads
    qt_flat = qt.reshape(F * N)
    st_flat = st.reshape(st.shape[0] * N * N)
    ot_flat = ot.reshape(F * N)
    for c in range(F):
        nk[c] = 0
    if q_binary:  # Q from spikes (Spikformer): its lists
        qt[:, :] = 0.0
        for c in range(F):
            nq[c] = 0
        for n in range(N):
            qn = q_idx[n]
            for e in range(q_cnt[n]):
                qt[qn[e], n] = 1.0
                nq[qn[e]] += 1
    else:  # column by column: contiguous writes, and the N rows' lines stay in L1 from column to column
        for c in range(F):
            qc = qt[c]
            cnt = 0
            for n in range(N):
                x = q[n, c]
                qc[n] = x
                cnt += x != 0.0
            nq[c] = cnt
    # Q K^T: scores column (h, m) is the sum of the Q columns c of key m's spikes in head h, in increasing c
    # (the key lists are sorted, so a head's spikes are a stretch of the list), summed in registers.
    for m in range(N):
        km = k_idx[m]
        kc = k_cnt[m]
        e0 = 0
        for h in range(heads):
            e1 = e0
            while e1 < kc and km[e1] < (h + 1) * d:
                e1 += 1
            srow = st[h, m]
            for n in range(N):
                srow[n] = 0.0
            add_rows(st_flat, (h * N + m) * N, qt_flat, 0, km[e0:e1], e1 - e0, N, N)
            e0 = e1
        for e in range(kc):
            nk[km[e]] += 1
    for r in range(runs.shape[0]):
        tot = 0
        for c in range(runs[r, 0], runs[r, 1]):
            tot += nq[c] * nk[c]
        counts_t[C_ACS, runs[r, 2]] += tot
    for h in range(heads):
        sh = st[h]
        pe_h = _pe_of(runs, h * d)
        if scale != 1.0:
            for m in range(N):
                row = sh[m]
                for n in range(N):
                    row[n] = scale * row[n]
            counts_t[C_MULS, pe_h] += N * N
        if softmax:  # E = exp(S - rowmax) per query; the row sums divide the output after P V (contract)
            row = sh[0]
            for n in range(N):
                mx[n] = row[n]
            for m in range(1, N):
                row = sh[m]
                for n in range(N):
                    mx[n] = row[n] if row[n] > mx[n] else mx[n]
            for m in range(N):
                row = sh[m]
                for n in range(N):
                    row[n] = row[n] - mx[n]
            flat = sh.reshape(N * N)
            exp_into(flat, flat)
            rs = row_sum[h]
            for n in range(N):
                rs[n] = 0.0
            for m in range(N):
                row = sh[m]
                for n in range(N):
                    rs[n] += row[n]
            counts_t[C_EXP, pe_h] += N * N
            counts_t[C_ADDS, pe_h] += N * N
        for j in range(N):
            row = sh[j]
            cnt = 0
            for n in range(N):
                cnt += row[n] != 0.0
            pc[h, j] = cnt
    # P V: output column c is the sum of P columns j (of c's head) over the value spikes (j, c), in increasing
    # j: the value lists regrouped by feature (a counting sort), each group summed in registers.
    v_start = np.zeros(F + 1, np.int64)
    for j in range(N):
        vj = v_idx[j]
        for e in range(v_cnt[j]):
            v_start[vj[e] + 1] += 1
    for c in range(F):
        v_start[c + 1] += v_start[c]
    v_pos = np.empty(v_start[F], np.int32)
    fill = v_start[:F].copy()
    for j in range(N):
        vj = v_idx[j]
        for e in range(v_cnt[j]):
            c = vj[e]
            v_pos[fill[c]] = j
            fill[c] += 1
    for c in range(F):
        h = c // d
        j0 = v_start[c]
        j1 = v_start[c + 1]
        orow = ot[c]
        for n in range(N):
            orow[n] = 0.0
        add_rows(ot_flat, c * N, st_flat, h * N * N, v_pos[j0:j1], j1 - j0, N, N)
        tot = 0
        for k in range(j0, j1):
            tot += pc[h, v_pos[k]]
        nk[c] = tot  # from here: each output feature's P V ACs
    for r in range(runs.shape[0]):
        tot = 0
        for c in range(runs[r, 0], runs[r, 1]):
            tot += nk[c]
        counts_t[C_ACS, runs[r, 2]] += tot
    if softmax:  # the row sums divide the output, in the transposed layout (vectors over the N queries)
        for h in range(heads):
            _divide_by_row_sums(ot[h * d:(h + 1) * d], row_sum[h], mx, st[h])
        count_per_feature(counts_t, C_DIV, runs, N)
    for h in range(heads):  # back to [N, F], eight features at a time (short strided reads, contiguous writes)
        for c0 in range(h * d, (h + 1) * d, 8):
            c1 = min(c0 + 8, (h + 1) * d)
            for n in range(N):
                o = out[n]
                for c in range(c0, c1):
                    o[c] = ot[c, n]


#: Below this a remainder ``x - q * r`` can underflow (``r <= N``), and Markstein's correction may be off.
_TINY_QUOTIENT = 2.0 ** -960


@njit(cache=True)
def _divide_by_row_sums(ot_h, rs, inv, e_h):
    """``ot_h[c, n] /= rs[n]``, correctly rounded, with one divide per query instead of one per element.

    Through :func:`_quotient` (as :func:`layernorm_rows`), exact while the remainder does not underflow.
    ``x`` is a sum of the head's softmax
    numerators ``e_h`` (``0 <= e <= 1``, the row maximum's is 1, so ``rs >= 1``); if any numerator lies in
    ``(0, 2**-960)`` the head takes the plain divide instead.
    """
    N = rs.shape[0]
    tiny = False
    for m in range(N):
        row = e_h[m]
        for n in range(N):
            tiny |= (row[n] > 0.0) & (row[n] < _TINY_QUOTIENT)
    if tiny:
        for c in range(ot_h.shape[0]):
            row = ot_h[c]
            for n in range(N):
                row[n] = row[n] / rs[n]
        return
    for n in range(N):
        inv[n] = 1.0 / rs[n]
    for c in range(ot_h.shape[0]):
        row = ot_h[c]
        for n in range(N):
            row[n] = _quotient(row[n], rs[n], inv[n])


@njit(cache=True)
def _pe_of(runs, c):
    """The PE of feature ``c`` (the run that holds it; runs are few)."""
    for r in range(runs.shape[0]):
        if c < runs[r, 1]:
            return runs[r, 2]
    return runs[runs.shape[0] - 1, 2]


# ---------------------------------------------------------------------------------- the fused step
# Node kinds of the step program, and the columns of its integer table ``prog[node, column]``
# (offsets are into the flat buffers the engine lays out for one input of N positions).
K_SKIP, K_LINEAR, K_LAYERNORM, K_GELU, K_LIF, K_ATTENTION = range(6)
(P_KIND, P_SIZE, P_VAL, P_EV, P_CNT, P_BLOCK, P_BIAS, P_PAR0, P_PAR1, P_IN_OFF, P_N_IN, P_BINARY,
 P_DECAY, P_RESET_ZERO, P_SOFTMAX, P_HEADS, P_LIF, P_DELAYED_SRC, P_DIRECT, P_STATE, P_RUN, P_NRUN,
 P_INPLACE, P_SLOTTED) = range(24)
PROG_COLUMNS = 24
# Columns of the float table ``progf[node, column]``.
F_VTH, F_GAMMA, F_SCALE, F_EPS = range(4)
# Columns of the per-LIF statistics ``stats[lif, column]`` of one step.
S_ASR, S_SPIKES, S_SQ = range(3)


@njit(cache=True)
def _view(buf, off, N, F):
    return buf[off:off + N * F].reshape((N, F))


@njit(cache=True)
def keep_delayed(N, prog, vals, prev_vals, ev_idx, ev_cnt, prev_ev_idx, prev_ev_cnt):
    """Keep this step's values of the one-step-late sources for the next step."""
    for i in range(prog.shape[0]):  # one-step-late sources: keep this step's values for the next
        if prog[i, P_DELAYED_SRC] == 1:
            F = prog[i, P_SIZE]
            if prog[i, P_BINARY] == 0:
                o = prog[i, P_VAL]
                prev_vals[o:o + N * F] = vals[o:o + N * F]
            else:
                e = prog[i, P_EV]
                prev_ev_idx[e:e + N * F] = ev_idx[e:e + N * F]
                c = prog[i, P_CNT]
                prev_ev_cnt[c:c + N] = ev_cnt[c:c + N]


@njit(cache=True, inline="always")
def _val_off(prog, i, slot_len):
    """Offset of node ``i``'s value in ``vals`` at the step whose copies start ``slot_len`` in: a value read in a
    later segment (``P_SLOTTED``) has one copy per step of the chunk, the others one copy in all."""
    return prog[i, P_VAL] + slot_len * prog[i, P_SLOTTED]


@njit(cache=True, inline="always")
def _spike_lists(prog, src, delayed, N, ev_idx, ev_cnt, prev_ev_idx, prev_ev_cnt):
    """Spike input ``src``'s lists ``[N, size]`` and counts ``[N]``: this step's, or with ``delayed`` the previous
    step's copies."""
    F = prog[src, P_SIZE]
    e_buf = prev_ev_idx if delayed else ev_idx
    c_buf = prev_ev_cnt if delayed else ev_cnt
    return _view(e_buf, prog[src, P_EV], N, F), c_buf[prog[src, P_CNT]:prog[src, P_CNT] + N]


@njit(cache=True)
def _gather(N, i, prog, inputs, vals, prev_vals, ev_idx, ev_cnt, prev_ev_idx, prev_ev_cnt, dst, rn, counts_t,
            slot_len):
    """Element-wise sum of node ``i``'s inputs into ``dst``, input by input in list order.

    A real input is copied (the first) or added (one add per element); a spike
    input is added from its spike lists, one AC per spike. ``slot_len``: where
    this step's copy of a value held per step lies (:func:`_val_off`).
    """
    i0 = prog[i, P_IN_OFF]
    for j in range(prog[i, P_N_IN]):
        src = inputs[i0 + j, 0]
        delayed = inputs[i0 + j, 1] == 1
        F = prog[src, P_SIZE]
        if prog[src, P_BINARY] == 1:
            e_src, c_src = _spike_lists(prog, src, delayed, N, ev_idx, ev_cnt, prev_ev_idx, prev_ev_cnt)
            gather_spikes(dst, e_src, c_src, j == 0, rn, counts_t)
        elif not (j == 0 and prog[i, P_INPLACE] == 1):  # in place: the first input already is dst
            buf = prev_vals if delayed else vals
            o = prog[src, P_VAL] if delayed else _val_off(prog, src, slot_len)
            gather_input(dst, _view(buf, o, N, F), j == 0, rn, counts_t)


@njit(cache=True, nogil=True)
def encoder_run(T, N, prog, progf, inputs, vals, prev_vals, ev_idx, ev_cnt, prev_ev_idx, prev_ev_cnt,
                u, asr_num, cur_num, den, asr_tot, track_current, params, runs,
                blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab,
                counts, stats, qt, st, ot, nq, nk, pc, row_sum, mx, tmp_idx, tmp_val, per_row, cat_idx, cat_cnt,
                cls_src, cls_mean, cls_w, cls_b, pooled, logits, rec_spikes, rec_asr, segments, chunk):
    """All ``T`` steps of one input: segment by segment, each over ``chunk`` steps, with the read-out and records.

    Schedule: the steps go in chunks of ``chunk``. Within a chunk, the program's
    ``segments`` (rows ``first node, stop``: each a run of nodes ending at a LIF, in
    schedule order) take turns: a segment runs all the chunk's steps, node after
    node within each step, before the next segment starts. A node at step ``t``
    reads only earlier nodes at step ``t`` and its own state, so the arithmetic is
    that of the plain step order, bit for bit; but a segment's weights and
    membranes stay in cache over ``chunk`` steps instead of being evicted by all
    the other segments' between two of its steps. Values a later segment reads
    (``P_SLOTTED``; spike lists always) have one copy per step of the chunk: the
    buffers ``ev_idx`` and ``ev_cnt`` hold ``chunk`` copies each, ``vals`` too if
    any value is slotted (else one copy); a segment's own values one copy, reused
    by every step. With one-step-late (feedback) sources ``chunk`` must be 1.

    Node ``i``'s value is ``[N, size]`` at :func:`_val_off` in ``vals``; the engine
    hands value buffers from node to node
    (:func:`eventsim.encoder_engine.value_buffers`; ``P_INPLACE``: a LayerNorm or
    GELU working on its input's buffer). Spike populations are their lists
    ``ev_idx``/``ev_cnt`` at ``P_EV``/``P_CNT`` (a LIF's value is the sum of its
    inputs when it has several); its features' PEs as runs
    ``runs[P_RUN:][:P_NRUN]`` (rows ``first feature, stop, PE``); a LIF's state (``u``, ASR sums) at ``P_STATE`` in the state buffers (a
    single real input is read in place: ``P_DIRECT``). Inputs are rows ``(source
    node, delayed)`` of ``inputs``; delayed ones read the previous step's copies
    ``prev_*``, refreshed after each step (:func:`keep_delayed`). Each node runs
    the kernel above for its kind, so the arithmetic and the counts are those of
    the per-node kernels.

    ``counts[t]`` and ``stats[t]`` are step ``t``'s counters and per-LIF
    statistics. After each step the classifier reads the ASR ``asr_num / den``
    of its source LIF nodes ``cls_src``, pooled over positions (mean, summed
    position by position) or taken at position 0, summed over sources in
    ``cls_src`` order: ``logits[t] = pooled @ cls_w + cls_b``. ``rec_spikes``/``rec_asr``
    (``[T, LIF cells]``, laid out like the LIF state, or empty) record every
    spike and every neuron's ASR per step.
    """
    n_cls = cls_b.shape[0]
    f_cls = pooled.shape[0]
    slotted = False
    for i in range(prog.shape[0]):
        slotted = slotted or prog[i, P_SLOTTED] == 1
    v_len = vals.shape[0] // chunk if slotted else 0  # one copy of the values per step only if some value crosses
    e_len = ev_idx.shape[0] // chunk
    c_len = ev_cnt.shape[0] // chunk
    parts = np.zeros((chunk, cls_src.shape[0], f_cls))  # each source's pooled ASR, per step of the chunk
    pos_sum = np.zeros(f_cls)
    for t0 in range(0, T, chunk):
        tc = min(chunk, T - t0)
        for g in range(segments.shape[0]):
            for slot in range(tc):
                t = t0 + slot
                sl = slot * v_len  # this step's copies of the values and spike lists held per step
                ek = ev_idx[slot * e_len:(slot + 1) * e_len]
                ck = ev_cnt[slot * c_len:(slot + 1) * c_len]
                counts_t = counts[t]
                stats_t = stats[t]
                for i in range(segments[g, 0], segments[g, 1]):
                    kind = prog[i, P_KIND]
                    if kind == K_SKIP:
                        continue
                    F = prog[i, P_SIZE]
                    out = _view(vals, _val_off(prog, i, sl), N, F)  # real values; for a LIF with several inputs, their sum
                    rn = runs[prog[i, P_RUN]:prog[i, P_RUN] + prog[i, P_NRUN]]
                    i0 = prog[i, P_IN_OFF]
                    n_in = prog[i, P_N_IN]
                    if kind == K_LINEAR:
                        bias = params[prog[i, P_PAR0]:prog[i, P_PAR0] + F]
                        blk = prog[i, P_BLOCK]
                        # a block over all columns, fed spikes first: each position's sums start at the bias when its
                        # rows come in (no separate copy pass over all positions)
                        from_bias = (prog[i, P_BIAS] == 1 and prog[inputs[i0, 0], P_BINARY] == 1
                                     and blocks[blk, B_ACC_BASE] == 0 and blocks[blk, B_NCOLS] == F)
                        linear_init(out, bias, prog[i, P_BIAS] == 1, rn, counts_t, not from_bias)
                        all_spikes = n_in > 1
                        for j in range(n_in):
                            all_spikes = all_spikes and prog[inputs[i0 + j, 0], P_BINARY] == 1
                        if all_spikes:  # several spike inputs through one block: their lists joined per position, in input
                            # order (each element still gets the rows input by input), so each position's sum is one pass
                            for n in range(N):
                                cat_cnt[n] = 0
                            sF = prog[inputs[i0, 0], P_SIZE]
                            for j in range(n_in):
                                src = inputs[i0 + j, 0]
                                delayed = inputs[i0 + j, 1] == 1
                                e_src, c_src = _spike_lists(prog, src, delayed, N, ek, ck, prev_ev_idx, prev_ev_cnt)
                                for n in range(N):
                                    k = cat_cnt[n]
                                    dst = cat_idx[n]
                                    sn = e_src[n]
                                    for e in range(c_src[n]):
                                        dst[k + e] = sn[e]
                                    cat_cnt[n] = k + c_src[n]
                            if from_bias:
                                linear_from_spikes(blk, blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab, cat_idx, cat_cnt,
                                                   out, counts_t, per_row, sF, bias)
                            else:
                                linear_from_spikes(blk, blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab, cat_idx, cat_cnt,
                                                   out, counts_t, per_row, sF)
                        else:
                            for j in range(n_in):
                                src = inputs[i0 + j, 0]
                                delayed = inputs[i0 + j, 1] == 1
                                sF = prog[src, P_SIZE]
                                if prog[src, P_BINARY] == 1:
                                    e_src, c_src = _spike_lists(prog, src, delayed, N, ek, ck, prev_ev_idx,
                                                                prev_ev_cnt)
                                    if j == 0 and from_bias:
                                        linear_from_spikes(blk, blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab, e_src,
                                                           c_src, out, counts_t, per_row, sF, bias)
                                    else:
                                        linear_from_spikes(blk, blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab, e_src,
                                                           c_src, out, counts_t, per_row, sF)
                                else:
                                    v_buf = prev_vals if delayed else vals
                                    o = prog[src, P_VAL] if delayed else _val_off(prog, src, sl)
                                    linear_from_real(prog[i, P_BLOCK], blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab,
                                                     _view(v_buf, o, N, sF), out, counts_t, tmp_idx, tmp_val)
                        count_emitted_real(out, rn, counts_t)
                    elif kind == K_LAYERNORM or kind == K_GELU:
                        _gather(N, i, prog, inputs, vals, prev_vals, ek, ck, prev_ev_idx, prev_ev_cnt, out, rn,
                                counts_t, sl)
                        if kind == K_LAYERNORM:
                            layernorm_rows(out, params[prog[i, P_PAR0]:prog[i, P_PAR0] + F],
                                           params[prog[i, P_PAR1]:prog[i, P_PAR1] + F], progf[i, F_EPS], rn, counts_t)
                        else:
                            gelu_rows(out, rn, counts_t)
                        count_emitted_real(out, rn, counts_t)
                    elif kind == K_ATTENTION:
                        qs = inputs[i0, 0]
                        q = _view(vals, _val_off(prog, qs, sl), N, F)
                        ks = inputs[i0 + 1, 0]
                        vs = inputs[i0 + 2, 0]
                        H = prog[i, P_HEADS]
                        spiking_attention(q, prog[qs, P_BINARY] == 1, _view(ek, prog[qs, P_EV], N, F),
                                          ck[prog[qs, P_CNT]:prog[qs, P_CNT] + N],
                                          _view(ek, prog[ks, P_EV], N, F), ck[prog[ks, P_CNT]:prog[ks, P_CNT] + N],
                                          _view(ek, prog[vs, P_EV], N, F), ck[prog[vs, P_CNT]:prog[vs, P_CNT] + N],
                                          H, progf[i, F_SCALE], prog[i, P_SOFTMAX] == 1, out, rn, counts_t,
                                          qt[:F], st, ot[:F], nq, nk, pc, row_sum, mx)
                        count_emitted_real(out, rn, counts_t)
                    elif kind == K_LIF:
                        off = prog[i, P_STATE]
                        if prog[i, P_DIRECT] == 1:
                            current = _view(vals, _val_off(prog, inputs[i0, 0], sl), N, F)
                        else:
                            current = out
                            _gather(N, i, prog, inputs, vals, prev_vals, ek, ck, prev_ev_idx, prev_ev_cnt, current,
                                    rn, counts_t, sl)
                        gamma = progf[i, F_GAMMA]
                        v_th = progf[i, F_VTH]
                        den[i] = gamma * den[i] + 1.0
                        decay = prog[i, P_DECAY] == 1
                        a_num = _view(asr_num, off, N, F)
                        c_num = _view(cur_num, off, N, F)
                        spikes = lif_step(current, _view(u, off, N, F), _view(ek, prog[i, P_EV], N, F),
                                          ck[prog[i, P_CNT]:prog[i, P_CNT] + N], v_th, gamma, 1.0 - gamma, decay,
                                          prog[i, P_RESET_ZERO] == 1, a_num, c_num, track_current, rn, counts_t)
                        asr_tot[i] = gamma * asr_tot[i] + spikes  # sum over cells of the ASR numerators
                        p = prog[i, P_LIF]
                        stats_t[p, S_ASR] = asr_tot[i] / den[i]
                        stats_t[p, S_SPIKES] = spikes
                        if track_current:
                            kk = (1.0 - gamma) if decay else 1.0
                            stats_t[p, S_SQ] = lif_residual(a_num, c_num, den[i], kk / v_th)
                        else:
                            stats_t[p, S_SQ] = math.nan
                        _read_lif(i, slot, t, N, prog, ek, ck, asr_num, den, cls_src, cls_mean, parts, pos_sum, rec_spikes,
                                  rec_asr)
        if chunk == 1:
            keep_delayed(N, prog, vals, prev_vals, ev_idx, ev_cnt, prev_ev_idx, prev_ev_cnt)
        for slot in range(tc):
            for f in range(f_cls):
                pooled[f] = 0.0
            for j in range(cls_src.shape[0]):
                for f in range(f_cls):
                    pooled[f] = pooled[f] + parts[slot, j, f]
            for c in range(n_cls):
                z = 0.0
                for f in range(f_cls):
                    z += pooled[f] * cls_w[f, c]
                logits[t0 + slot, c] = z + cls_b[c]


@njit(cache=True)
def _read_lif(i, k, t, N, prog, ev_idx, ev_cnt, asr_num, den, cls_src, cls_mean, parts, pos_sum, rec_spikes,
              rec_asr):
    """Right after LIF node ``i``'s step ``t`` (the chunk's ``k``-th): its share of the read-out, its records."""
    F = prog[i, P_SIZE]
    off = prog[i, P_STATE]
    a = _view(asr_num, off, N, F)
    d = den[i]
    for j in range(cls_src.shape[0]):
        if cls_src[j] != i:
            continue
        if cls_mean:  # per feature, the sum over positions in increasing n, position rows read contiguously
            for f in range(F):
                pos_sum[f] = 0.0
            for n in range(N):
                an = a[n]
                for f in range(F):
                    pos_sum[f] += an[f] / d
            for f in range(F):
                parts[k, j, f] = pos_sum[f] / N
        else:
            for f in range(F):
                parts[k, j, f] = a[0, f] / d
    if rec_spikes.shape[0] > 0:
        e = _view(ev_idx, prog[i, P_EV], N, F)
        c = ev_cnt[prog[i, P_CNT]:prog[i, P_CNT] + N]
        for n in range(N):
            for m in range(c[n]):
                rec_spikes[t, off + n * F + e[n, m]] = 1
    if rec_asr.shape[0] > 0:
        for x in range(N * F):
            rec_asr[t, off + x] = asr_num[off + x] / d
