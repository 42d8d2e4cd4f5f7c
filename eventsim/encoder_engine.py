"""The encoder schedule: one input of N tokens, T time steps from the zero state, all positions together.

Per step, the nodes run in manifest order (:mod:`eventsim.encoder_manifest`),
all T steps in one call of :func:`eventsim.encoder_kernels.encoder_run` over
every position, so the cost of a step is its events (spikes through weight rows,
key/value spikes through attention) plus one element-wise pass per node. Where
a population's input path holds large dense weights, that piece of the program
runs several steps back to back (:func:`schedule_segments`), the same
arithmetic in an order that keeps its weights in cache.
Counters, the :class:`EventTrace`, the placement and the weight blocks are the
language models' own.

Per input and per step it records the classifier's read-out of the ASR, the
mean ASR and the spike fraction of every LIF population, and the RMS residual
of the ASR against its steady-state prediction; per PE, every counted
operation. The embedding (table rows from off-chip memory, its LayerNorm) and
the classifier read-out happen once per input: they are in ``counts_once`` and,
for pricing, in the trace's first (embedding) and last (classifier) step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from eventsim import aligned
from eventsim.checkpoint import Checkpoint
from eventsim.encoder_kernels import (
    F_EPS,
    F_GAMMA,
    F_SCALE,
    F_VTH,
    K_ATTENTION,
    K_GELU,
    K_LAYERNORM,
    K_LIF,
    K_LINEAR,
    K_SKIP,
    P_BIAS,
    P_BINARY,
    P_BLOCK,
    P_CNT,
    P_DECAY,
    P_DELAYED_SRC,
    P_DIRECT,
    P_EV,
    P_HEADS,
    P_IN_OFF,
    P_INPLACE,
    P_KIND,
    P_LIF,
    P_N_IN,
    P_NRUN,
    P_PAR0,
    P_PAR1,
    P_RESET_ZERO,
    P_RUN,
    P_SIZE,
    P_SLOTTED,
    P_SOFTMAX,
    P_STATE,
    P_VAL,
    PROG_COLUMNS,
    S_ASR,
    S_SPIKES,
    S_SQ,
    count_emitted_real,
    divide_by_node,
    encoder_run,
    layernorm_rows,
)
from eventsim.encoder_network import CompiledEncoder, EncoderNode, compile_encoder, dense_counts
from eventsim.errors import EventsimError
from eventsim.kernels import B_DENSE, C_DRAM, C_EMITTED, C_MACS, C_RECEIVED
from eventsim.network import padded_row
from eventsim.placement import Placement
from eventsim.run_buffers import BufferPool, Workspace
from eventsim.trace import COUNTERS, EventTrace

# Result count keys and the trace planes they sum ("spikes" are the LIF populations' emitted events).
COUNT_PLANES = {
    "acs": "acs", "macs": "macs", "adds": "adds", "muls": "muls", "exp": "exp_ops", "div": "div_ops",
    "layernorm": "layernorm_ops", "gelu": "gelu_ops", "neuron_updates": "neuron_updates",
}
PLANE = {name: i for i, name in enumerate(COUNTERS)}
#: Steps a segment runs back to back before the next one (:func:`eventsim.encoder_kernels.encoder_run`): 16 was
#: 1.03-1.05x faster than 8 on the benchmark network once the per-step spike-list copies were no longer zeroed
#: per input (8 had been faster than 4, 6, 12 and 16 before; ``benchmarks/ab_encoder.py``; docs/performance.md).
CHUNK_STEPS = 16
#: Dense weight bytes from which a population's input path is a segment of its own (:func:`schedule_segments`):
#: 1 MiB (a 256 x 1024 float32 block) was faster than 256 KiB, which also chunks 256 x 256 blocks.
CHUNK_DENSE_BYTES = 1024 * 1024
#: Cache lines added between two steps' copies of a buffer (:func:`slot_stride`).
PAD_LINES = 3
KIND_CODE = {"linear": K_LINEAR, "layernorm": K_LAYERNORM, "gelu": K_GELU, "lif": K_LIF,
             "spiking_attention": K_ATTENTION}


@dataclass
class EncoderResult:
    """What one input did, step by step (see the module docstring)."""

    token_ids: np.ndarray
    steps: int
    populations: tuple[str, ...]  # lif node names in schedule order
    logits: np.ndarray  # [T, classes]
    asr_mean: np.ndarray  # [T, P]
    spike_fraction: np.ndarray  # [T, P]
    steady_residual: np.ndarray  # [T, P]
    asr_final: dict[str, np.ndarray]  # [N, size]
    current_mean_final: dict[str, np.ndarray]  # [N, size]
    counts: dict[str, np.ndarray]  # [T] per key of COUNT_PLANES plus "spikes"
    counts_once: dict[str, int]
    dense: dict[str, int]
    trace: EventTrace
    node_counts: dict[str, np.ndarray]  # [T, nodes] per count key, nodes in manifest order
    node_names: tuple[str, ...]
    spikes: dict[str, np.ndarray] | None = None  # [T, N, size] bool
    asr: dict[str, np.ndarray] | None = None  # [T, N, size]

    @property
    def probabilities(self) -> np.ndarray:
        """Softmax of the last step's logits."""
        z = self.logits[-1] - self.logits[-1].max()
        e = np.exp(z)
        return e / e.sum()

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.logits[-1]))


class EncoderEngine:
    """A compiled encoder; :meth:`run` is one input from the zero state."""

    def __init__(self, network: CompiledEncoder):
        self.net = network
        self.buffers = BufferPool()  # per-input buffers reused from input to input (eventsim.run_buffers)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, placement: Placement | None = None, vth_scale: float = 1.0,
        vth: float | None = None, **kw,
    ) -> EncoderEngine:
        return cls(compile_encoder(checkpoint, placement, vth_scale=vth_scale, vth=vth, **kw))

    def run(self, token_ids, steps: int, record_spikes: bool = False, record_asr: bool = False,
            record_residual: bool = False) -> EncoderResult:
        """Run one input of ``N <= max_positions`` token ids for ``steps`` time steps.

        ``record_spikes``/``record_asr`` keep every spike / every neuron's ASR per
        step; ``record_residual`` keeps each LIF's gamma-weighted input current
        for the steady-state residual (one more pass per population and step;
        without it ``steady_residual`` is NaN and ``current_mean_final`` empty).
        """
        net = self.net
        ids = np.asarray(token_ids, dtype=np.int64)
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps <= 0:
            raise EventsimError(f"time steps T must be a positive integer, got {steps!r}")
        steps = int(steps)
        emb = net.nodes[0]
        vocab = emb.params["word"].shape[0]
        if ids.ndim != 1 or ids.size == 0:
            raise EventsimError("no tokens to classify")
        if ids.size > net.max_positions:
            raise EventsimError(f"{ids.size} tokens exceed the model's {net.max_positions} positions")
        if ids.min() < 0 or ids.max() >= vocab:
            raise EventsimError(f"token ids must lie in [0, {vocab}), got {ids.min()}..{ids.max()}")
        ws = self.buffers.acquire()
        try:
            return _Run(net, ids, steps, record_spikes, record_asr, record_residual, ws).result()
        finally:
            self.buffers.release(ws)

    def run_many(self, inputs, steps: int, jobs: int = 1, **kw) -> Iterator[EncoderResult]:
        """:meth:`run` over several inputs, ``jobs`` at a time on as many threads; results in input order.

        The T-step loop (:func:`eventsim.encoder_kernels.encoder_run`) releases
        the GIL and every input has its own state (:class:`_Run`; the network is
        only read), so the inputs run on separate cores; each result is what
        :meth:`run` gives for that input alone, bit for bit. ``kw``: :meth:`run`'s
        options. Lazy: at most ``jobs`` inputs beyond the one being taken are in
        flight.
        """
        if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
            raise EventsimError(f"jobs must be a positive integer, got {jobs!r}")
        return self._run_many(inputs, steps, int(jobs), kw)

    def _run_many(self, inputs, steps: int, jobs: int, kw: dict) -> Iterator[EncoderResult]:
        if jobs == 1:
            for ids in inputs:
                yield self.run(ids, steps, **kw)
            return
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="eventsim-encoder") as pool:
            pending: deque = deque()
            try:
                for ids in inputs:
                    pending.append(pool.submit(self.run, ids, steps, **kw))
                    if len(pending) > jobs:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for f in pending:  # taken no further (an error, an interrupt): start nothing new
                    f.cancel()


class _Run:
    """State and loop of one input (kept out of :class:`EncoderEngine` so the engine stays reusable).

    All node values, spike lists and LIF states live in flat buffers laid out
    for this input's ``N`` positions (:meth:`layout`), taken from ``workspace``
    (:mod:`eventsim.run_buffers`; a fresh one if none is given); all T steps are
    one call of :func:`eventsim.encoder_kernels.encoder_run` over them.
    """

    def __init__(self, net: CompiledEncoder, ids: np.ndarray, steps: int, record_spikes: bool, record_asr: bool,
                 record_residual: bool = False, workspace: Workspace | None = None):
        self.net, self.ids, self.T = net, ids, steps
        ws = self.ws = Workspace() if workspace is None else workspace
        self.record_spikes, self.record_asr, self.record_residual = record_spikes, record_asr, record_residual
        N = self.N = ids.size
        P = net.placement.pe_count
        self.counts = np.zeros((steps, len(COUNTERS), P), dtype=np.int64)
        self.once = np.zeros((len(COUNTERS), P), dtype=np.int64)
        nodes = net.nodes
        self.lifs = [n for n in nodes if n.kind == "lif"]
        self.layout()
        max_in = max(n.size for n in nodes)
        self.tmp_idx = ws.take("tmp_idx", max_in, np.int32, zeroed=True)
        self.tmp_val = ws.take("tmp_val", max_in, zeroed=True)
        self.per_row = ws.take("per_row", max_in, np.int64, zeroed=True)
        # Joined spike lists of a linear node with several spike inputs (one row per position).
        cat = [sum(nodes[j].size for j in n.inputs) for n in nodes
               if n.kind == "linear" and len(n.inputs) > 1 and all(nodes[j].binary for j in n.inputs)]
        cat_max = max(cat, default=0)
        self.cat_idx = ws.take("cat_idx", N * cat_max, np.int32, zeroed=True).reshape(N, cat_max)
        self.cat_cnt = np.zeros(N, np.int64)
        # Attention scratch, transposed so every event is a vector add over the N queries.
        attn = [n for n in nodes if n.kind == "spiking_attention"]
        f_max = max([n.size for n in attn], default=1)
        h_max = max([n.heads for n in attn], default=1)
        self.qt = ws.take("qt", f_max * N, zeroed=True).reshape(f_max, N)
        self.ot = ws.take("ot", f_max * N, zeroed=True).reshape(f_max, N)
        self.st = ws.take("st", h_max * N * N, zeroed=True).reshape(h_max, N, N)
        self.nq, self.nk = np.zeros(f_max, np.int64), np.zeros(f_max, np.int64)
        self.pc = np.zeros((h_max, N), np.int64)
        self.row_sum = np.zeros((h_max, N))
        self.mx = np.zeros(N)
        self.stats = np.zeros((steps, len(self.lifs), 3))

    def layout(self) -> None:
        """The step program (:data:`eventsim.encoder_kernels.PROG_COLUMNS`) for ``N`` positions and its buffers.

        The program depends only on the network and ``N``; it is built once per
        ``N`` and kept on the network (``net.programs``).
        """
        net, N = self.net, self.N
        if N not in net.programs:
            net.programs[N] = _program(net, N, self.lifs)
        g = net.programs[N]
        self.prog, self.progf, self.inputs, self.params = g["prog"], g["progf"], g["inputs"], g["params"]
        self.runs, self.val_off, self.state_off = g["runs"], g["val_off"], g["state_off"]
        self.tally = g["tally"]
        val, ev, cnt, st = g["sizes"]
        nodes = net.nodes
        self.chunk = min(self.T, CHUNK_STEPS) if g["chunked"] and not g["prog"][:, P_DELAYED_SRC].any() else 1
        self.segments = g["segments"]
        c = self.chunk
        # One copy of the values per step of the chunk only if some value is read by a later segment (P_SLOTTED);
        # otherwise every node uses the first copy (its slot offset is multiplied by P_SLOTTED = 0).
        copies = c if g["prog"][:, P_SLOTTED].any() else 1
        # Every buffer starts on a cache line (:mod:`eventsim.aligned`); offsets inside are whole lines where the
        # sizes are multiples of 8 features. They come from the workspace and are zeroed there without the GIL.
        ws = self.ws
        self.vals = ws.take("vals", copies * slot_stride(val, 8), zeroed=True)
        self.prev_vals = ws.take("prev_vals", val, zeroed=True)
        # Spike lists are read only below their counts (zero until a step writes them), so their buffers (the
        # largest: 12 MB of 24 at the benchmark's size) need no zeroing; nor does the current average unless
        # the residual is kept. Zeroing them cost ~2 ms per input in memset.
        self.ev_idx = ws.take("ev_idx", c * slot_stride(ev, 4), np.int32)
        self.prev_ev_idx = ws.take("prev_ev_idx", ev, np.int32)
        self.ev_cnt = ws.take("ev_cnt", c * slot_stride(cnt, 8), np.int64, zeroed=True)
        self.prev_ev_cnt = ws.take("prev_ev_cnt", cnt, np.int64, zeroed=True)
        self.u, self.asr_num = ws.take("u", st, zeroed=True), ws.take("asr_num", st, zeroed=True)
        self.cur_num = ws.take("cur_num", st, zeroed=self.record_residual)
        self.den = np.zeros(len(nodes))
        self.asr_tot = np.zeros(len(nodes))

    def node_runs(self, node: EncoderNode) -> np.ndarray:
        """``[runs, 3]`` rows (first feature, stop, PE) of ``node``'s features."""
        r = self.prog[node.index]
        return self.runs[r[P_RUN]:r[P_RUN] + r[P_NRUN]]

    def per_lif_final(self, num: np.ndarray) -> dict[str, np.ndarray]:
        """``num / den`` per LIF (``[N, size]`` each) in one fresh array, divided without the GIL."""
        g = self.net.programs[self.N]
        out = np.empty(num.size)
        divide_by_node(num, self.den, g["lif_cells"], out)
        return {name: out[a:b].reshape(self.N, -1) for name, (a, b) in g["cell_range"].items()}

    # ---------------------------------------------------------------- once per input
    def embed(self) -> None:
        """``x = LN(word[token] + position)``: the constant input current, read once per input."""
        node = self.net.nodes[0]
        p = node.params
        x = self.vals[self.val_off[0]:self.val_off[0] + self.N * node.size].reshape(self.N, node.size)
        x[:] = p["word"][self.ids] + p["position"][: self.N]
        runs = self.node_runs(node)
        if "weight" in p:
            layernorm_rows(x, p["weight"], p["bias"], node.eps, runs, self.once)
        for c in range(node.size):  # two table words (word and position row) per position, per feature
            self.once[C_DRAM, node.feat_pe[c]] += 2 * self.N
        count_emitted_real(x, runs, self.once)

    # ---------------------------------------------------------------- the step loop
    def result(self) -> EncoderResult:
        """Embed, run all T steps in one call (:func:`eventsim.encoder_kernels.encoder_run`), collect."""
        net, T, N = self.net, self.T, self.N
        names = tuple(n.name for n in self.lifs)
        cls = net.nodes[-1]
        logits = np.zeros((T, cls.size))
        cells_total = self.u.size
        rec_spikes = np.zeros((T if self.record_spikes else 0, cells_total), np.uint8)
        rec_asr = np.zeros((T if self.record_asr else 0, cells_total))
        self.embed()
        tb = net.table
        cls_w = np.ascontiguousarray(cls.params["weight"], dtype=np.float64)
        encoder_run(T, N, self.prog, self.progf, self.inputs, self.vals, self.prev_vals, self.ev_idx, self.ev_cnt,
                    self.prev_ev_idx, self.prev_ev_cnt, self.u, self.asr_num, self.cur_num, self.den,
                    self.asr_tot, self.record_residual, self.params, self.runs, tb.blocks, tb.rowptr,
                    tb.syn_idx, tb.syn_val, tb.dense_val, tb.nnz_tab, self.counts, self.stats, self.qt, self.st,
                    self.ot, self.nq, self.nk, self.pc, self.row_sum, self.mx, self.tmp_idx,
                    self.tmp_val, self.per_row, self.cat_idx, self.cat_cnt, np.array(cls.inputs, np.int64),
                    cls.pooling == "mean", cls_w, np.asarray(cls.params["bias"], np.float64),
                    np.zeros(cls_w.shape[0]), logits, rec_spikes, rec_asr, self.segments, self.chunk)
        g = net.programs[N]
        cells = (g["lif_cells"][:, 1] - g["lif_cells"][:, 0]).astype(np.float64)  # N * size per LIF
        asr_mean = self.stats[:, :, S_ASR] / cells
        spike_fraction = self.stats[:, :, S_SPIKES] / cells
        residual = np.sqrt(self.stats[:, :, S_SQ] / cells)
        spikes_rec = asr_rec = None
        cell_range = g["cell_range"]
        if self.record_spikes:
            spikes_rec = {n.name: rec_spikes[:, a:b].reshape(T, N, -1).astype(bool) for n, (a, b) in
                          zip(self.lifs, cell_range.values())}
        if self.record_asr:
            asr_rec = {n.name: rec_asr[:, a:b].reshape(T, N, -1).copy() for n, (a, b) in
                       zip(self.lifs, cell_range.values())}
        # One read-out per input: its MACs, on the classifier's PEs.
        per_class = len(cls.inputs) * cls.params["weight"].shape[0]
        for c in range(cls.size):
            self.once[C_MACS, cls.feat_pe[c]] += per_class
        trace = self.trace()
        tally = self.tally
        node_counts = {}
        for key, plane in COUNT_PLANES.items():
            node_counts[key] = _by_node(self.counts[:, PLANE[plane], :], tally["pe_node"])
        node_counts["spikes"] = _by_node(self.counts[:, C_EMITTED, :], tally["pe_node"] * tally["lif_pe"][:, None])
        counts = {key: v.sum(axis=1) for key, v in node_counts.items()}
        once = {key: int(self.once[PLANE[plane]].sum()) for key, plane in COUNT_PLANES.items()}
        once["dram_words"] = int(self.once[C_DRAM].sum())
        current_final = (self.per_lif_final(self.cur_num) if self.record_residual else {})
        return EncoderResult(
            token_ids=self.ids, steps=T, populations=names, logits=logits, asr_mean=asr_mean,
            spike_fraction=spike_fraction, steady_residual=residual,
            asr_final=self.per_lif_final(self.asr_num),
            current_mean_final=current_final,
            counts=counts, counts_once=once, dense=dict(g["dense"]), trace=trace,
            node_counts=node_counts, node_names=tuple(n.name for n in net.nodes),
            spikes=spikes_rec, asr=asr_rec,
        )

    def trace(self) -> EventTrace:
        """Per-step counts with the once-per-input work in the first and last step, received from the routes."""
        net = self.net
        c = self.counts.copy()
        g = net.programs[self.N]
        cls_pes = g["cls_pes"]
        read_out = np.zeros_like(self.once)  # the classifier reads out after the last step
        read_out[:, cls_pes.start:cls_pes.stop] = self.once[:, cls_pes.start:cls_pes.stop]
        c[0] += self.once - read_out
        c[-1] += read_out
        # Received events follow the routes: same-step sources now, delayed (feedback) sources a step later.
        emitted = c[:, C_EMITTED, :].astype(np.float64)
        received = emitted @ self.tally["forward"]
        received[1:] += emitted[:-1] @ self.tally["late"]
        c[:, C_RECEIVED, :] = received
        return EventTrace(
            placement=net.placement,
            pe_population=g["pe_population"].copy(),
            population_kinds=tuple(s.kind for s in net.manifest.layers),
            event_type=net.event_type,
            routes=net.routes,
            synapses_stored=net.table.synapses_stored,
            neurons=g["neurons"].copy(),
            **{name: np.ascontiguousarray(c[:, i, :]) for i, name in enumerate(COUNTERS)},
        )


def _program(net: CompiledEncoder, N: int, lifs: list[EncoderNode]) -> dict:
    """The step program of ``net`` for inputs of ``N`` positions, and the sizes of its flat buffers."""
    nodes = net.nodes
    prog = np.zeros((len(nodes), PROG_COLUMNS), np.int64)
    progf = np.zeros((len(nodes), 4))
    inputs, params, runs = [], [np.zeros(0)], []
    ev = cnt = par = st = 0
    state_off = {}
    tb = net.table
    dense_bytes = {n.index: int(tb.dense_val.itemsize * n.size * nodes[n.inputs[0]].size)
                   for n in nodes if n.kind == "linear" and tb.blocks[n.block, B_DENSE] == 1}
    pieces = schedule_segments(nodes, dense_bytes)
    segments = [(a, b) for a, b, _ in pieces]
    crossing = read_in_later_segment(nodes, segments)
    val_off, in_place, val = value_buffers(nodes, N, crossing)
    delayed_src = {src for n in nodes for src, d in zip(n.inputs, n.delayed) if d}
    lif_index = {n.index: p for p, n in enumerate(lifs)}
    for n in nodes:
        row = prog[n.index]
        if n.kind not in KIND_CODE and n.kind not in ("token_embedding", "classifier"):
            raise EventsimError(f"node {n.name!r}: kind {n.kind!r} has no encoder kernel")
        row[P_KIND] = KIND_CODE.get(n.kind, K_SKIP)
        row[P_SIZE] = n.size
        row[P_VAL], row[P_INPLACE] = val_off[n.index], int(in_place[n.index])
        row[P_SLOTTED] = int(n.index in crossing)
        node_runs = pe_runs(n.feat_pe)
        row[P_RUN], row[P_NRUN] = len(runs), len(node_runs)
        runs += node_runs
        row[P_IN_OFF] = len(inputs)
        row[P_N_IN] = len(n.inputs)
        inputs += [(src, int(d)) for src, d in zip(n.inputs, n.delayed)]
        row[P_BINARY] = int(n.binary)
        row[P_DELAYED_SRC] = int(n.index in delayed_src)
        if n.binary:
            row[P_EV], row[P_CNT] = ev, cnt
            ev += N * n.size
            cnt += N
        if n.kind == "linear":
            row[P_BLOCK] = n.block
            row[P_BIAS] = int(bool(net.manifest.layers[n.index].bias))
            row[P_PAR0] = par
            params.append(n.params["bias"])
            par += n.size
        elif n.kind == "layernorm":
            row[P_PAR0], row[P_PAR1] = par, par + n.size
            params += [n.params["weight"], n.params["bias"]]
            par += 2 * n.size
            progf[n.index, F_EPS] = n.eps
        elif n.kind == "spiking_attention":
            row[P_HEADS], row[P_SOFTMAX] = n.heads, int(n.softmax)
            progf[n.index, F_SCALE] = n.scale
        elif n.kind == "lif":
            row[P_LIF] = lif_index[n.index]
            row[P_DECAY], row[P_RESET_ZERO] = int(n.decay_input), int(n.reset_zero)
            row[P_DIRECT] = int(len(n.inputs) == 1 and not n.delayed[0] and not nodes[n.inputs[0]].binary)
            progf[n.index, F_VTH], progf[n.index, F_GAMMA] = n.v_th, n.gamma
            row[P_STATE] = st
            state_off[n.index] = st
            st += N * n.size
    return {"prog": prog, "progf": progf, "inputs": np.array(inputs, np.int64).reshape(-1, 2),
            "params": aligned.copy(np.concatenate(params)),
            "runs": np.array(runs, np.int64).reshape(-1, 3), "val_off": val_off, "state_off": state_off,
            "sizes": (val, ev, cnt, st), "segments": np.array(segments, np.int64).reshape(-1, 2),
            "chunked": any(heavy for _, _, heavy in pieces), "tally": _tally_matrices(net, lifs),
            # what every result of N positions shares (read-only), computed once
            "cell_range": {n.name: (state_off[n.index], state_off[n.index] + N * n.size) for n in lifs},
            "lif_cells": np.array([(state_off[n.index], state_off[n.index] + N * n.size, n.index) for n in lifs],
                                  np.int64).reshape(-1, 3),
            "dense": dense_counts(net.manifest, N), "cls_pes": net.placement.pes_of(nodes[-1].name),
            "pe_population": net.placement.pe_population_index(),
            "neurons": np.array([s.size for s in net.placement.slices()], dtype=np.int64)}


def _tally_matrices(net: CompiledEncoder, lifs: list[EncoderNode]) -> dict:
    """float64 0/1 matrices that sum per-PE counts by node and along the routes, as BLAS products.

    Counts are integers far below 2**53, so the float64 products are exact (numpy's int64 products do not
    use BLAS: they took ~1 ms of the Python work per input at the benchmark size).
    ``pe_node[p, j]``: PE ``p`` holds node ``j``; ``lif_pe[p]``: a LIF's PE (its emitted events are spikes);
    ``forward``/``late``: routes from an earlier / a later population (received in the same step / the next).
    """
    pop = net.placement.pe_population_index()
    routes = net.routes.astype(np.float64)
    forward = routes * (pop[:, None] < pop[None, :])
    pe_node = np.zeros((pop.size, len(net.nodes)))
    pe_node[np.arange(pop.size), pop] = 1.0
    return {"pe_node": pe_node, "lif_pe": np.isin(pop, [n.index for n in lifs]).astype(np.float64),
            "forward": forward, "late": routes - forward}


REAL_KINDS = ("token_embedding", "linear", "layernorm", "gelu", "spiking_attention")


def slot_stride(n: int, itemsize: int) -> int:
    """Elements between two steps' copies of a buffer of ``n`` elements: at least :data:`PAD_LINES` cache lines
    past its end, an odd number of lines in all (:func:`eventsim.network.padded_row`), so that the same feature
    of two steps does not fall into the same cache set."""
    return padded_row(n, itemsize, PAD_LINES)


def schedule_segments(nodes: list[EncoderNode], dense_bytes: dict[int, int]) -> list[tuple[int, int, bool]]:
    """``(first node, stop, heavy)`` runs of the program, each run over a chunk of steps at a time.

    The program is cut after every LIF: a piece is a population's input path and
    the population itself (projections, LayerNorm, GELU or attention, then the
    LIF), so what it computes within a step it also consumes within that step
    (:func:`read_in_later_segment`). A piece whose dense weights take at least
    :data:`CHUNK_DENSE_BYTES` (``dense_bytes``: per linear node) is a segment of
    its own, run a chunk of steps while those weights stay in cache; consecutive
    lighter pieces are joined into one segment (also run a chunk of steps at a
    time; their weights together stay near the cache's size).
    """
    cuts = [i + 1 for i, n in enumerate(nodes) if n.kind == "lif"]
    bounds = [0] + [c for c in cuts if c < len(nodes)] + [len(nodes)]
    segments: list[tuple[int, int, bool]] = []
    for a, b in zip(bounds, bounds[1:]):
        heavy = sum(dense_bytes.get(i, 0) for i in range(a, b)) >= CHUNK_DENSE_BYTES
        if segments and not segments[-1][2] and not heavy:
            segments[-1] = (segments[-1][0], b, False)
        else:
            segments.append((a, b, heavy))
    return segments


def read_in_later_segment(nodes: list[EncoderNode], segments: list[tuple[int, int]]) -> set[int]:
    """Real values (not the embedding's constant current) read, in the same step, by a node of a later segment.

    A segment runs a chunk of steps before the next one starts, so such a value
    needs a copy per step of the chunk; the others are written and read within one
    step of their segment and need one copy in all.
    """
    seg_of = {i: g for g, (a, b) in enumerate(segments) for i in range(a, b)}
    crossing = set()
    for j, node in enumerate(nodes):
        if node.kind == "classifier":
            continue
        for src, delayed in zip(node.inputs, node.delayed):
            if not delayed and src != 0 and nodes[src].kind in REAL_KINDS and seg_of[src] != seg_of[j]:
                crossing.add(src)
    return crossing


def value_buffers(nodes: list[EncoderNode], N: int, own: set[int] = frozenset()) -> tuple[list[int], list[bool], int]:
    """Offsets of every node's real values (``[N, size]`` float64) in one flat buffer, reused once dead.

    A step's real values live only until their last reader in the same step,
    so buffers are handed from node to node (a free list of ``N * max size``
    buffers) and the values of a whole step stay within a few of them, in
    cache. Values read one step late (feedback sources) and the embedding's
    constant current keep buffers of their own. A LayerNorm or GELU whose one
    input dies with it works in place on that input's buffer; a LIF with
    several inputs gets a buffer for the summed current. The nodes in ``own``
    (values held per step of a chunk: :func:`read_in_later_segment`) get buffers
    of their own, never shared and never worked on in place. Returns ``(offsets, in
    place, total size)``.
    """
    n = len(nodes)
    last_read = [-1] * n
    keep = [i in own for i in range(n)]
    keep[0] = True
    for j, node in enumerate(nodes):
        if node.kind == "classifier":
            continue
        for src, delayed in zip(node.inputs, node.delayed):
            if delayed:
                keep[src] = True
            else:
                last_read[src] = max(last_read[src], j)
    pool = N * max(node.size for node in nodes)
    offsets, in_place = [0] * n, [False] * n
    free: list[int] = []
    total = 0

    def take(size: int) -> int:
        nonlocal total
        if size == pool and free:
            return free.pop()
        total += size
        return total - size

    for i, node in enumerate(nodes):
        real = node.kind in REAL_KINDS
        summed = node.kind == "lif" and not (len(node.inputs) == 1 and not node.delayed[0]
                                             and not nodes[node.inputs[0]].binary)
        first = node.inputs[0] if node.inputs else -1
        if real and node.kind in ("layernorm", "gelu") and len(node.inputs) == 1 and not node.delayed[0] \
                and not nodes[first].binary and last_read[first] == i and not keep[first] and i not in own:
            offsets[i], in_place[i] = offsets[first], True
        elif real or summed:
            offsets[i] = take(N * node.size if keep[i] else pool)
        dead = {src for src, d in zip(node.inputs, node.delayed)
                if not d and nodes[src].kind in REAL_KINDS and last_read[src] == i and not keep[src]}
        if in_place[i]:
            dead.discard(first)
        free += [offsets[src] for src in sorted(dead)]
        if summed or (real and last_read[i] < 0 and not keep[i]):
            free.append(offsets[i])
    return offsets, in_place, max(total, pool)  # a LIF's unused view must fit too


def pe_runs(feat_pe: np.ndarray) -> list[tuple[int, int, int]]:
    """``(first feature, stop, PE)`` for each run of consecutive features on one PE."""
    cut = np.flatnonzero(np.diff(feat_pe)) + 1
    starts = np.concatenate([[0], cut]).astype(int)
    stops = np.concatenate([cut, [feat_pe.size]]).astype(int)
    return [(int(a), int(b), int(feat_pe[a])) for a, b in zip(starts, stops)]


def _by_node(plane: np.ndarray, pe_node: np.ndarray) -> np.ndarray:
    """``[T, PEs]`` -> ``[T, nodes]`` by summing each node's PEs (``pe_node``: :func:`_tally_matrices`; exact)."""
    return (plane.astype(np.float64) @ pe_node).astype(np.int64)


def classify_tokens(checkpoint: Checkpoint, token_ids, steps: int, **kw) -> EncoderResult:
    """Compile ``checkpoint`` and run one input (see :meth:`EncoderEngine.run`)."""
    run_kw = {k: kw.pop(k) for k in ("record_spikes", "record_asr", "record_residual") if k in kw}
    return EncoderEngine.from_checkpoint(checkpoint, **kw).run(token_ids, steps, **run_kw)
