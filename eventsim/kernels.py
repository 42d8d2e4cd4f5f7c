"""Numba kernels of the engine: flat arrays in, counts and outputs out.

One call runs a chunk of tokens through the whole network (one fused call, no
Python per event). Work per token is: for every received event, its weight
row (the concatenation of every target PE's slice; CSR, or a contiguous row for
dense blocks); then one update per neuron. Each PE's MACs are its slices'
non-zeros (``nnz_tab``), added on the same event loop.

Array layouts are described in :mod:`eventsim.network`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from eventsim.neurons import egru_cells, lstm_cells
from eventsim.vmath import exp_into

KIND_EGRU = 0
KIND_LSTM = 1

# Columns of the per-block table ``blocks``.
B_DENSE, B_ACC_BASE, B_NCOLS, B_ROWPTR_OFF, B_DENSE_OFF, B_NNZ_OFF, B_PE_FIRST, B_NPE, B_DENSE_STRIDE = range(9)
#: 1 where every row of the block has the same non-zeros on each PE (an unpruned block): a spike's ACs are then
#: the first row's, and the encoder counts them per spike list instead of per spike.
B_NNZ_UNIFORM = 9
BLOCK_COLUMNS = 10
# Columns of the per-recurrent-layer table ``layers``.
L_KIND, L_H, L_ACC_OFF, L_STATE_OFF, L_PE_FIRST, L_PE_STOP, L_IN_BLOCK, L_REC_BLOCK = range(8)
# Counter planes of ``counts[t, counter, pe]``; order matches eventsim.trace.COUNTERS.
C_RECEIVED, C_EMITTED, C_MACS, C_ACS, C_ROWS, C_UPDATES, C_DRAM = range(7)
C_ADDS, C_MULS, C_EXP, C_DIV, C_LAYERNORM, C_GELU = range(7, 13)


# FMA contraction only (no reassociation): a += x * w rounds once instead of twice.
@njit(cache=True, fastmath={"contract"})
def deliver(b, blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab, ev_idx, ev_val, n_ev, acc, counts_t):
    """Accumulate ``n_ev`` graded events through block ``b`` and count each target PE's share."""
    ncols = blocks[b, B_NCOLS]
    # Array views (not offset arithmetic) let LLVM prove the loops alias-free and vectorise them.
    a = acc[blocks[b, B_ACC_BASE]:blocks[b, B_ACC_BASE] + ncols]
    if blocks[b, B_DENSE] == 1:
        doff = blocks[b, B_DENSE_OFF]
        stride = blocks[b, B_DENSE_STRIDE]
        for e in range(n_ev):
            x = ev_val[e]
            w = dense_val[doff + ev_idx[e] * stride:doff + ev_idx[e] * stride + ncols]
            for c in range(ncols):
                a[c] += x * w[c]
    else:
        roff = blocks[b, B_ROWPTR_OFF]
        for e in range(n_ev):
            x = ev_val[e]
            start = rowptr[roff + ev_idx[e]]
            stop = rowptr[roff + ev_idx[e] + 1]
            idx = syn_idx[start:stop]
            val = syn_val[start:stop]
            for s in range(idx.shape[0]):
                a[idx[s]] += x * val[s]
    pe0 = blocks[b, B_PE_FIRST]
    npe = blocks[b, B_NPE]
    noff = blocks[b, B_NNZ_OFF]
    macs = counts_t[C_MACS, pe0:pe0 + npe]
    for e in range(n_ev):
        share = nnz_tab[noff + ev_idx[e] * npe:noff + (ev_idx[e] + 1) * npe]
        for p in range(npe):
            macs[p] += share[p]
    for p in range(pe0, pe0 + npe):
        counts_t[C_RECEIVED, p] += n_ev
        counts_t[C_ROWS, p] += n_ev


@njit(cache=True)
def update_layer(layers, l, pe_start, pe_stop, acc_in, acc_rec, state_c, thr, out_idx, out_val, counts_t, scratch):
    """Update every neuron of recurrent layer ``l``; write its events; return their number.

    Each gate is a contiguous vector of the accumulators, so the cell updates of
    :mod:`eventsim.neurons` run as vectorised passes over the whole layer; events
    and counters are then taken PE by PE.
    """
    H = layers[l, L_H]
    b = layers[l, L_ACC_OFF]
    st = layers[l, L_STATE_OFF]
    c = state_c[st:st + H]
    n_out = 0
    if layers[l, L_KIND] == KIND_EGRU:
        egru_cells(acc_in[b:b + H], acc_in[b + H:b + 2 * H], acc_in[b + 2 * H:b + 3 * H],
                   acc_rec[b:b + H], acc_rec[b + H:b + 2 * H], acc_rec[b + 2 * H:b + 3 * H],
                   c, scratch[0, :H], scratch[1, :H], scratch[2, :H])
        th = thr[st:st + H]
        for pe in range(layers[l, L_PE_FIRST], layers[l, L_PE_STOP]):
            emitted = 0
            for i in range(pe_start[pe], pe_stop[pe]):
                if c[i] >= th[i]:  # fire a graded event, reset by subtraction
                    out_idx[n_out] = i
                    out_val[n_out] = c[i]
                    c[i] -= th[i]
                    n_out += 1
                    emitted += 1
            counts_t[C_EMITTED, pe] += emitted
            counts_t[C_UPDATES, pe] += pe_stop[pe] - pe_start[pe]
    else:
        for q in range(4):
            s = scratch[q, :H]
            for i in range(H):
                s[i] = acc_in[b + q * H + i] + acc_rec[b + q * H + i]
        h = scratch[4, :H]
        lstm_cells(scratch[0, :H], scratch[1, :H], scratch[2, :H], scratch[3, :H], c, h)
        for i in range(H):
            out_idx[i] = i  # dense baseline: every h_i is sent, zero or not
            out_val[i] = h[i]
        n_out = H
        for pe in range(layers[l, L_PE_FIRST], layers[l, L_PE_STOP]):
            counts_t[C_EMITTED, pe] += pe_stop[pe] - pe_start[pe]
            counts_t[C_UPDATES, pe] += pe_stop[pe] - pe_start[pe]
    return n_out


@njit(cache=True)
def log_softmax_topk(logits, target, topk_ids, topk_lp, buf):
    """Fill top-k ids and log-probabilities; return log p(target) (NaN when target < 0).

    One pass finds the top k (whose first is the maximum), one vectorised pass
    exponentiates, and the sum runs in four interleaved partial sums.
    """
    k = topk_ids.shape[0]
    for i in range(k):
        topk_ids[i] = -1
        topk_lp[i] = -np.inf
    floor = -np.inf  # the k-th best so far
    for v in range(logits.shape[0]):
        x = logits[v]
        if x > floor:
            i = k - 1
            while i > 0 and x > topk_lp[i - 1]:
                topk_lp[i] = topk_lp[i - 1]
                topk_ids[i] = topk_ids[i - 1]
                i -= 1
            topk_lp[i] = x
            topk_ids[i] = v
            floor = topk_lp[k - 1]
    m = topk_lp[0]
    n = logits.shape[0]
    for v in range(n):
        buf[v] = logits[v] - m
    exp_into(buf, buf)
    s0 = s1 = s2 = s3 = 0.0
    n4 = n - n % 4
    for v in range(0, n4, 4):
        s0 += buf[v]
        s1 += buf[v + 1]
        s2 += buf[v + 2]
        s3 += buf[v + 3]
    for v in range(n4, n):
        s0 += buf[v]
    lse = m + math.log((s0 + s1) + (s2 + s3))
    for i in range(k):
        topk_lp[i] -= lse
    if target < 0:
        return np.nan
    return logits[target] - lse


@njit(cache=True)
def run_tokens(
    tokens, targets,
    emb_table, emb_pe_first, emb_pe_stop_id,
    layers, pe_start, pe_stop, bias_in, bias_rec, state_c, thr,
    ev_idx, ev_val, ev_count,
    blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab,
    readout_block, readout_off, vocab,
    acc_in, acc_rec,
    target_lp, topk_ids, topk_lp, layer_events, counts,
    record_logits, logits_out, record_outputs, outputs_out, out_offsets,
):
    """Run ``tokens`` through the network, carrying state in the arrays passed in.

    ``ev_idx/ev_val/ev_count`` hold each layer's events of the previous token and
    are overwritten with this token's (they are the recurrent input of the next).
    """
    n_layers = layers.shape[0]
    emb_dim = emb_table.shape[1]
    in_idx = np.empty(max(emb_dim, ev_idx.shape[1]), dtype=np.int32)
    in_val = np.empty(max(emb_dim, ev_idx.shape[1]), dtype=np.float64)
    scratch = np.empty((5, ev_idx.shape[1]), dtype=np.float64)
    lse_buf = np.empty(vocab, dtype=np.float64)
    for t in range(tokens.shape[0]):
        counts_t = counts[t]
        # Embedding: table row from off-chip memory; non-zero dimensions become graded events.
        tok = tokens[t]
        n_in = 0
        for pe in range(emb_pe_first, emb_pe_stop_id):
            emitted = 0
            for j in range(pe_start[pe], pe_stop[pe]):
                x = emb_table[tok, j]
                if x != 0.0:
                    in_idx[n_in] = j
                    in_val[n_in] = x
                    n_in += 1
                    emitted += 1
            counts_t[C_EMITTED, pe] += emitted
            counts_t[C_DRAM, pe] += pe_stop[pe] - pe_start[pe]
        for l in range(n_layers):
            H = layers[l, L_H]
            acc_off = layers[l, L_ACC_OFF]
            width = H * (3 if layers[l, L_KIND] == KIND_EGRU else 4)
            for a in range(acc_off, acc_off + width):
                acc_in[a] = bias_in[a]
                acc_rec[a] = bias_rec[a]
            deliver(layers[l, L_IN_BLOCK], blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab,
                    in_idx, in_val, n_in, acc_in, counts_t)
            deliver(layers[l, L_REC_BLOCK], blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab,
                    ev_idx[l], ev_val[l], ev_count[l], acc_rec, counts_t)
            n_out = update_layer(layers, l, pe_start, pe_stop, acc_in, acc_rec, state_c, thr,
                                 ev_idx[l], ev_val[l], counts_t, scratch)
            ev_count[l] = n_out
            layer_events[t, l] = n_out
            for e in range(n_out):
                in_idx[e] = ev_idx[l, e]
                in_val[e] = ev_val[l, e]
            n_in = n_out
            if record_outputs:
                o = out_offsets[l]
                for e in range(n_out):
                    outputs_out[t, o + ev_idx[l, e]] = ev_val[l, e]
        # Readout: logits from the last layer's events.
        for v in range(vocab):
            acc_in[readout_off + v] = bias_in[readout_off + v]
        deliver(readout_block, blocks, rowptr, syn_idx, syn_val, dense_val, nnz_tab,
                in_idx, in_val, n_in, acc_in, counts_t)
        logits = acc_in[readout_off:readout_off + vocab]
        target_lp[t] = log_softmax_topk(logits, targets[t], topk_ids[t], topk_lp[t], lse_buf)
        if record_logits:
            logits_out[t, :] = logits
