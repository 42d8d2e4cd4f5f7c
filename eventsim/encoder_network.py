"""Compile a spiking-encoder checkpoint into populations, projections and a schedule.

The same representation as the language models (:mod:`eventsim.network`):
every node of the manifest is a population placed on PEs by feature slices
(all positions of a feature on the same PE), every ``linear`` node's weight
is a block of :func:`eventsim.network.compile_blocks` (CSR or dense, with each
row's non-zeros per target PE in ``nnz_tab``), and the schedule is the
manifest's node order. What differs is only the loop that runs it
(:mod:`eventsim.encoder_engine`).

Thresholds can be moved at compile time: ``vth`` sets the first LIF
population's threshold and scales every other one by the same factor (so
Spikformer's attention LIF keeps its ``v_th / 2``), ``vth_scale`` multiplies
them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from eventsim.checkpoint import Checkpoint
from eventsim.encoder_manifest import is_binary
from eventsim.errors import EventsimError
from eventsim.network import DEFAULT_DENSE_THRESHOLD, BlockTable, compile_blocks
from eventsim.placement import Placement, even_placement
from eventsim.trace import BINARY, GRADED


@dataclass
class EncoderNode:
    """One node of the schedule, with its parameters as float64 arrays."""

    index: int
    name: str
    kind: str
    size: int
    binary: bool
    inputs: tuple[int, ...]  # node indices
    delayed: tuple[bool, ...]  # per input: read the previous step
    feat_pe: np.ndarray  # [size] global PE of each feature
    block: int = -1  # linear: its weight block
    params: dict[str, np.ndarray] = field(default_factory=dict)
    v_th: float = 0.0
    gamma: float = 1.0
    reset_zero: bool = False
    decay_input: bool = False
    heads: int = 0
    scale: float = 1.0
    softmax: bool = False
    pooling: str = "mean"
    eps: float = 0.0


@dataclass
class CompiledEncoder:
    """Nodes in schedule order plus the shared block table, placement and routes."""

    checkpoint: Checkpoint
    placement: Placement
    nodes: list[EncoderNode]
    table: BlockTable
    routes: np.ndarray  # [P, P] bool: a PE's events reach these PEs (delayed ones a step later)
    event_type: np.ndarray  # [P] BINARY (lif) or GRADED
    vth_factor: float
    programs: dict = field(default_factory=dict)  # N -> the engine's step program for inputs of N positions

    @property
    def manifest(self):
        return self.checkpoint.manifest

    @property
    def lif_nodes(self) -> list[EncoderNode]:
        return [n for n in self.nodes if n.kind == "lif"]

    @property
    def max_positions(self) -> int:
        return int(self.manifest.layers[0].max_positions)


def threshold_factor(layers, vth: float | None, vth_scale: float) -> float:
    """The factor every LIF threshold is multiplied by; bad values are one-line errors."""
    if not _positive_finite(vth_scale):
        raise EventsimError(f"threshold scale must be a finite number > 0, got {vth_scale!r}")
    factor = float(vth_scale)
    if vth is not None:
        if not _positive_finite(vth):
            raise EventsimError(f"threshold V_th must be a finite number > 0, got {vth!r}")
        first = next(s for s in layers if s.kind == "lif")
        factor *= float(vth) / first.v_th
    return factor


def _positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def compile_encoder(
    checkpoint: Checkpoint,
    placement: Placement | None = None,
    vth_scale: float = 1.0,
    vth: float | None = None,
    dense_threshold: float | None = None,
) -> CompiledEncoder:
    """Build the encoder's nodes and weight blocks; ``placement`` defaults to :func:`even_placement`.

    A weight block is stored dense when its density is at least ``dense_threshold``
    (default :data:`~eventsim.network.DEFAULT_DENSE_THRESHOLD`; > 1: CSR everywhere).
    The storage changes no sum and no count, only the time.
    """
    if dense_threshold is None:
        dense_threshold = DEFAULT_DENSE_THRESHOLD
    manifest = checkpoint.manifest
    if manifest.model_kind != "spiking_encoder":
        raise EventsimError(
            f"{checkpoint.path}: model kind {manifest.model_kind!r} is not a spiking encoder "
            f"(use 'eventsim simulate' for language models)"
        )
    factor = threshold_factor(manifest.layers, vth, vth_scale)
    placement = placement or even_placement(manifest)
    placement.validate(manifest)
    t = checkpoint.tensors
    index = {s.name: i for i, s in enumerate(manifest.layers)}
    P = placement.pe_count
    nodes: list[EncoderNode] = []
    blocks: list[tuple[np.ndarray, int, int, str]] = []
    routes = np.zeros((P, P), dtype=bool)
    event_type = np.full(P, GRADED, dtype=np.int64)
    f64 = lambda name: np.ascontiguousarray(t[name], dtype=np.float64)  # noqa: E731
    for i, spec in enumerate(manifest.layers):
        pes = placement.pes_of(spec.name)
        bounds = placement.bounds[spec.name]
        feat_pe = np.repeat(np.arange(pes.start, pes.stop), np.diff(bounds)).astype(np.int64)
        inputs = tuple(index[s] for s in spec.inputs)
        node = EncoderNode(i, spec.name, spec.kind, spec.output_size, is_binary(spec), inputs,
                           tuple(s in spec.delayed for s in spec.inputs), feat_pe)
        if spec.kind != "classifier":
            for src in spec.inputs:
                src_pes = placement.pes_of(src)
                routes[src_pes.start:src_pes.stop, pes.start:pes.stop] = True
        if spec.kind == "token_embedding":
            node.params = {"word": f64(f"{spec.name}.word"), "position": f64(f"{spec.name}.position")}
            if spec.layernorm:
                node.params.update(weight=f64(f"{spec.name}.ln_weight"), bias=f64(f"{spec.name}.ln_bias"))
            node.eps = float(spec.eps)
        elif spec.kind == "linear":
            node.block = len(blocks)
            blocks.append((t[f"{spec.name}.weight"], 0, 1, spec.name))
            node.params = {"bias": f64(f"{spec.name}.bias") if spec.bias else np.zeros(spec.size)}
        elif spec.kind == "layernorm":
            node.params = {"weight": f64(f"{spec.name}.weight"), "bias": f64(f"{spec.name}.bias")}
            node.eps = float(spec.eps)
        elif spec.kind == "lif":
            node.v_th = float(spec.v_th) * factor
            node.gamma = float(spec.gamma)
            node.reset_zero = spec.reset == "zero"
            node.decay_input = bool(spec.decay_input)
            event_type[pes.start:pes.stop] = BINARY
        elif spec.kind == "spiking_attention":
            node.heads, node.scale, node.softmax = int(spec.heads), float(spec.scale), bool(spec.softmax)
        elif spec.kind == "classifier":
            node.params = {"weight": f64(f"{spec.name}.weight"), "bias": f64(f"{spec.name}.bias")}
            node.pooling = spec.pooling
        nodes.append(node)
    # dense rows padded to an odd number of cache lines (:func:`eventsim.network.padded_row`)
    table = compile_blocks(blocks, placement, dense_threshold, pad_rows=True)
    return CompiledEncoder(checkpoint, placement, nodes, table, routes, event_type, factor)


DENSE_KEYS = ("acs", "macs", "adds", "muls", "exp", "div", "layernorm", "gelu", "neuron_updates", "spikes")


def dense_counts(manifest, positions: int) -> dict[str, int]:
    """Per-step counts with every input active and every weight kept (``N = positions``).

    - ``linear`` ``[in, out]``: ``N * in * out`` per input (ACs from spikes, MACs
      from reals) plus ``N * out`` bias adds;
    - element-wise input sums: ``N * size`` ACs per binary input, ``N * size``
      adds per real input after the first;
    - ``spiking_attention`` (``H`` heads of ``d``): ``Q K^T`` ``H * N * N * d``
      ACs, ``P V`` ``H * N * N * d`` ACs; ``H * N * N`` muls unless the scale is
      1; with softmax ``H * N * N`` exps and adds and ``N * size`` divisions;
    - ``layernorm``/``gelu``: ``N * size`` ops; ``lif``: ``N * size`` updates and
      at most ``N * size`` spikes.

    The embedding and the classifier work once per input (see ``counts_once``).
    """
    N = positions
    out = dict.fromkeys(DENSE_KEYS, 0)
    by_name = {s.name: s for s in manifest.layers}
    for spec in manifest.layers:
        srcs = [by_name[s] for s in spec.inputs]
        if spec.kind == "linear":
            for src in srcs:
                out["acs" if is_binary(src) else "macs"] += N * spec.in_size * spec.size
            if spec.bias:
                out["adds"] += N * spec.size
        elif spec.kind in ("layernorm", "gelu", "lif"):
            for j, src in enumerate(srcs):
                if is_binary(src):
                    out["acs"] += N * spec.size
                elif j > 0:
                    out["adds"] += N * spec.size
            if spec.kind == "lif":
                out["neuron_updates"] += N * spec.size
                out["spikes"] += N * spec.size
            else:
                out[spec.kind] += N * spec.size
        elif spec.kind == "spiking_attention":
            H, d = spec.heads, spec.head_dim
            out["acs"] += 2 * H * N * N * d
            if spec.scale != 1.0:
                out["muls"] += H * N * N
            if spec.softmax:
                out["exp"] += H * N * N
                out["adds"] += H * N * N
                out["div"] += N * spec.size
    return out
