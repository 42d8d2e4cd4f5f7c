"""A plain-numpy oracle of the language models, written from the equations.

It shares no code with the engine: dense float64 matrix products over the
checkpoint's tensors, and op counts from the definition (weight non-zeros in
the rows selected by non-zero inputs).
"""

from __future__ import annotations

import numpy as np

from eventsim.checkpoint import Checkpoint


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def run_reference(ck: Checkpoint, tokens) -> dict:
    """Logits ``[T, V]``, outputs per layer ``[T, H]`` and MACs per layer ``[T]``."""
    t = ck.tensors
    specs = ck.manifest.layers
    recurrent, readout = specs[1:-1], specs[-1]
    emb = t["embedding.weight"].astype(np.float64)
    dec = emb if readout.tied_to else t[f"{readout.name}.weight"].astype(np.float64)
    c = [np.zeros(s.hidden_size) for s in recurrent]
    y = [np.zeros(s.hidden_size) for s in recurrent]
    logits, outputs = [], [[] for _ in recurrent]
    macs = np.zeros((len(tokens), len(recurrent) + 1), dtype=np.int64)
    # Which outputs travel: EGRU only its non-zero y; LSTM every h_i (none before the first step).
    sent = [np.zeros(s.hidden_size, bool) for s in recurrent]
    for step, tok in enumerate(tokens):
        x = emb[tok]
        x_sent = x != 0
        for i, s in enumerate(recurrent):
            W = t[f"{s.name}.kernel"].astype(np.float64)
            R = t[f"{s.name}.recurrent_kernel"].astype(np.float64)
            macs[step, i] = np.count_nonzero(W[x_sent]) + np.count_nonzero(R[sent[i]])
            a = x @ W + t[f"{s.name}.bias"]
            r_ = y[i] @ R + t[f"{s.name}.recurrent_bias"]
            H = s.hidden_size
            if s.kind == "egru":
                z = _sigmoid(a[:H] + r_[:H])
                r = _sigmoid(a[H:2 * H] + r_[H:2 * H])
                g = np.tanh(a[2 * H:] + r * r_[2 * H:])
                cc = z * c[i] + (1 - z) * g
                thr = t[f"{s.name}.thr"].astype(np.float64)
                fire = cc >= thr
                y[i] = np.where(fire, cc, 0.0)
                c[i] = cc - fire * thr
            else:
                s_ = a + r_
                c[i] = _sigmoid(s_[H:2 * H]) * c[i] + _sigmoid(s_[:H]) * np.tanh(s_[2 * H:3 * H])
                y[i] = _sigmoid(s_[3 * H:]) * np.tanh(c[i])
            sent[i] = (y[i] != 0) if s.kind == "egru" else np.ones(H, bool)
            outputs[i].append(y[i].copy())
            x, x_sent = y[i], sent[i]
        macs[step, -1] = np.count_nonzero(dec.T[x_sent])
        logits.append(x @ dec.T + t[f"{readout.name}.bias"])
    return {"logits": np.array(logits), "outputs": [np.array(o) for o in outputs], "macs": macs}
