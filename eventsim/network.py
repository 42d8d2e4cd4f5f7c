"""Compile a checkpoint and a placement into the flat arrays the kernels run on.

Every projection (embedding -> layer 0, layer l -> layer l (recurrent),
layer l -> layer l+1, last layer -> readout) is a *block*: rows are its source
neurons, columns its targets in the checkpoint's gate blocks (``g * H + n``), so
each gate of a layer is one contiguous vector of its accumulator.

A PE holding neurons ``[lo, hi)`` owns their columns in every gate block; one
pass over an event's row does the work of every PE that receives it (a loop per
PE per event cost more than the work itself at 95 % sparsity), and each PE's
share of the row is kept in ``nnz_tab[row, pe]``, which is what the PE counters
add up. Blocks are CSR (``rowptr``, ``syn_idx``, ``syn_val``) or, with density
at least ``dense_threshold``, dense rows (same arithmetic, no index loads); the
counted MACs are the non-zeros whatever the storage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eventsim import aligned
from eventsim.checkpoint import Checkpoint
from eventsim.errors import EventsimError
from eventsim.kernels import BLOCK_COLUMNS, KIND_EGRU, KIND_LSTM
from eventsim.manifest import EGRUSpec, Manifest
from eventsim.placement import Placement, even_placement
from eventsim.trace import GRADED

DEFAULT_DENSE_THRESHOLD = 0.3  # measured crossover: dense 0.21 ns per entry vs CSR 0.67 ns per non-zero
KIND_CODES = {"egru": KIND_EGRU, "lstm": KIND_LSTM}


@dataclass
class CompiledNetwork:
    """Flat arrays for :func:`eventsim.kernels.run_tokens` plus what reports need."""

    manifest: Manifest
    placement: Placement
    emb_table: np.ndarray
    layers: np.ndarray  # [L, 8] int64, columns kernels.L_*
    pe_start: np.ndarray
    pe_stop: np.ndarray
    bias_in: np.ndarray
    bias_rec: np.ndarray
    thr: np.ndarray
    blocks: np.ndarray  # [B, BLOCK_COLUMNS] int64, columns kernels.B_*
    rowptr: np.ndarray
    syn_idx: np.ndarray
    syn_val: np.ndarray
    dense_val: np.ndarray
    nnz_tab: np.ndarray  # per block [sources, PEs] non-zeros of each row on each target PE, flattened
    readout_block: int
    readout_off: int
    acc_size: int
    routes: np.ndarray  # [P, P] bool
    synapses_stored: np.ndarray  # [P]
    dense_macs_per_layer: np.ndarray  # [L] MACs per step with every input active and every weight kept
    readout_dense_macs: int

    @property
    def hidden_sizes(self) -> list[int]:
        return [int(h) for h in self.layers[:, 1]]

    @property
    def max_hidden(self) -> int:
        return max(self.hidden_sizes)


def pe_column_shares(matrix: np.ndarray, bounds: tuple[int, ...], gates: int) -> np.ndarray:
    """``[rows, PEs]`` non-zeros of each row among each PE's targets (all its gates).

    Columns are in gate blocks (``g * H + n``); PE ``[lo, hi)`` owns ``[g*H + lo, g*H + hi)`` of each.
    """
    hidden = matrix.shape[1] // gates
    nz = (matrix != 0).reshape(matrix.shape[0], gates, hidden).sum(axis=1)
    return np.add.reduceat(nz, np.asarray(bounds[:-1]), axis=1).astype(np.int32)


@dataclass
class BlockTable:
    """Weight blocks in the kernels' flat layout (see the module docstring); shared by every schedule."""

    blocks: np.ndarray  # [B, BLOCK_COLUMNS] int64, columns kernels.B_*
    rowptr: np.ndarray
    syn_idx: np.ndarray
    syn_val: np.ndarray
    dense_val: np.ndarray
    nnz_tab: np.ndarray
    synapses_stored: np.ndarray  # [P] weight non-zeros held by each PE


def padded_row(ncols: int, itemsize: int = 4, extra_lines: int = 0) -> int:
    """Elements from one dense row to the next: ``ncols`` rounded up to whole 64-byte lines, plus ``extra_lines``,
    plus one line when that is an even number of lines, so that the same column of successive rows falls into
    different cache sets (rows a power of two apart would all compete for one set while a kernel sums a few
    columns of many rows)."""
    per_line = 64 // itemsize
    lines = -(-ncols // per_line) + extra_lines
    return (lines + (lines % 2 == 0)) * per_line


def compile_blocks(
    blocks: list[tuple[np.ndarray, int, int, str]], placement: Placement, dense_threshold: float,
    pad_rows: bool = False,
) -> BlockTable:
    """Flatten ``(source-row matrix, accumulator offset, gates, target population)`` blocks.

    Each block is CSR, or dense when its density is at least ``dense_threshold``;
    ``nnz_tab`` holds each row's non-zeros on each PE of the target population.
    A dense block's rows lie ``blocks[b, B_DENSE_STRIDE]`` elements apart: its
    column count, or with ``pad_rows`` :func:`padded_row` of it (the padding is zeros
    that no kernel reads).
    """
    block_rows, rowptr_parts, idx_parts, val_parts, dense_parts, nnz_parts = [], [], [], [], [], []
    rowptr_len = syn_len = dense_len = nnz_len = 0
    synapses_stored = np.zeros(placement.pe_count, dtype=np.int64)
    for matrix, base, gates, population in blocks:
        pes = placement.pes_of(population)
        nz = matrix != 0
        nnz_tab = pe_column_shares(matrix, placement.bounds[population], gates)  # each PE's share of the work
        synapses_stored[pes.start:pes.stop] += nnz_tab.sum(axis=0)
        nnz = int(nnz_tab.sum())
        dense = matrix.size > 0 and nnz >= dense_threshold * matrix.size
        stride = padded_row(matrix.shape[1]) if dense and pad_rows else matrix.shape[1]
        uniform = int(nnz_tab.shape[0] > 0 and bool((nnz_tab == nnz_tab[:1]).all()))
        block_rows.append([int(dense), base, matrix.shape[1], rowptr_len, dense_len, nnz_len, pes.start, len(pes),
                           stride, uniform])
        ptr = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
        if dense:
            rows_f32 = np.zeros((matrix.shape[0], stride), np.float32)
            rows_f32[:, :matrix.shape[1]] = matrix
            dense_parts.append(rows_f32.ravel())
            dense_len += rows_f32.size
        else:
            rows_i, cols_i = np.nonzero(nz)
            np.cumsum(nz.sum(axis=1), out=ptr[1:])
            idx_parts.append(cols_i)
            val_parts.append(matrix[rows_i, cols_i].astype(np.float32))
        rowptr_parts.append(ptr + syn_len)
        syn_len += 0 if dense else nnz
        rowptr_len += ptr.size
        nnz_parts.append(nnz_tab.ravel())
        nnz_len += nnz_tab.size

    max_cols = max(b[2] for b in block_rows)
    idx_dtype = np.uint16 if max_cols <= 65536 else np.int32
    # weights and tables on cache-line boundaries (:mod:`eventsim.aligned`: no vector load split over two lines)
    cat = lambda parts, dtype: aligned.copy(np.concatenate(parts), dtype) if parts else aligned.zeros(0, dtype)  # noqa: E731
    return BlockTable(
        blocks=np.array(block_rows, dtype=np.int64).reshape(-1, BLOCK_COLUMNS),
        rowptr=cat(rowptr_parts, np.int64),
        syn_idx=cat(idx_parts, idx_dtype),
        syn_val=cat(val_parts, np.float32),
        dense_val=cat(dense_parts, np.float32),
        nnz_tab=cat(nnz_parts, np.int32),
        synapses_stored=synapses_stored,
    )


def compile_network(
    checkpoint: Checkpoint,
    placement: Placement | None = None,
    dense_threshold: float = DEFAULT_DENSE_THRESHOLD,
) -> CompiledNetwork:
    """Build the engine's arrays. ``dense_threshold`` > 1 forces CSR everywhere."""
    manifest = checkpoint.manifest
    if manifest.model_kind != "language_model":
        raise EventsimError(f"{checkpoint.path}: model kind {manifest.model_kind!r} is not a language model")
    placement = placement or even_placement(manifest)
    placement.validate(manifest)
    slices_meta = placement.slices()
    n_pe = len(slices_meta)
    pe_start = np.array([s.start for s in slices_meta], dtype=np.int64)
    pe_stop = np.array([s.stop for s in slices_meta], dtype=np.int64)
    specs = manifest.layers
    emb_spec, recurrent, readout = specs[0], specs[1:-1], specs[-1]
    t = checkpoint.tensors

    layer_rows, bias_in, bias_rec, thr = [], [], [], []
    acc_off = 0
    state_off = 0
    blocks: list[tuple[np.ndarray, int, int, str]] = []  # (source-row matrix, acc offset, gates, population)
    dense_macs = []
    for spec in recurrent:
        gates = spec.n_gates
        h = spec.hidden_size
        pes = placement.pes_of(spec.name)
        in_block, rec_block = len(blocks), len(blocks) + 1
        layer_rows.append([KIND_CODES[spec.kind], h, acc_off, state_off, pes.start, pes.stop, in_block, rec_block])
        blocks.append((t[f"{spec.name}.kernel"], acc_off, gates, spec.name))
        blocks.append((t[f"{spec.name}.recurrent_kernel"], acc_off, gates, spec.name))
        bias_in.append(t[f"{spec.name}.bias"])
        bias_rec.append(t[f"{spec.name}.recurrent_bias"])
        thr.append(t[f"{spec.name}.thr"] if isinstance(spec, EGRUSpec) else np.zeros(h, np.float32))
        dense_macs.append(gates * h * (spec.input_size + h))
        acc_off += gates * h
        state_off += h
    readout_off = acc_off
    weight = t[f"{readout.tied_to}.weight"] if readout.tied_to else t[f"{readout.name}.weight"]
    readout_block = len(blocks)
    blocks.append((np.ascontiguousarray(weight.T), readout_off, 1, readout.name))
    bias_in.append(t[f"{readout.name}.bias"])
    bias_rec.append(np.zeros(readout.output_size, np.float32))
    acc_size = acc_off + readout.output_size

    table = compile_blocks(blocks, placement, dense_threshold)

    pop_index = placement.pe_population_index()
    routes = np.zeros((n_pe, n_pe), dtype=bool)
    n_pop = len(specs)
    for src in range(n_pop - 1):
        consumers = [src + 1] + ([src] if src >= 1 else [])
        for dst in consumers:
            routes[np.ix_(pop_index == src, pop_index == dst)] = True

    return CompiledNetwork(
        manifest=manifest,
        placement=placement,
        emb_table=np.ascontiguousarray(t[f"{emb_spec.name}.weight"], dtype=np.float32),
        layers=np.array(layer_rows, dtype=np.int64).reshape(-1, 8),
        pe_start=pe_start,
        pe_stop=pe_stop,
        bias_in=np.concatenate(bias_in).astype(np.float64),
        bias_rec=np.concatenate(bias_rec).astype(np.float64),
        thr=np.concatenate(thr).astype(np.float64),
        blocks=table.blocks,
        rowptr=table.rowptr,
        syn_idx=table.syn_idx,
        syn_val=table.syn_val,
        dense_val=table.dense_val,
        nnz_tab=table.nnz_tab,
        readout_block=readout_block,
        readout_off=readout_off,
        acc_size=acc_size,
        routes=routes,
        synapses_stored=table.synapses_stored,
        dense_macs_per_layer=np.array(dense_macs, dtype=np.int64),
        readout_dense_macs=int(readout.input_size * readout.output_size),
    )


def event_types(net: CompiledNetwork) -> np.ndarray:
    """Payload type of each PE's events: every population here sends graded values."""
    return np.full(net.placement.pe_count, GRADED, dtype=np.int64)
