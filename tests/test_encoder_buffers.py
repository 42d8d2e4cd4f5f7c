"""The encoder engine's value buffers: values reused across nodes never overwrite one that is still to be read."""

from __future__ import annotations

import numpy as np
import pytest

from eventsim.checkpoint import load_checkpoint, save_checkpoint
from eventsim.encoder_engine import REAL_KINDS, EncoderEngine, value_buffers
from eventsim.synthetic_encoder import random_encoder


def _net(tmp_path, style, feedback):
    manifest, tensors = random_encoder(style, vocab_size=60, max_positions=8, hidden=16, intermediate=32,
                                       mlp_ratio=2, heads=2, blocks=2, feedback=feedback, seed=2)
    save_checkpoint(tmp_path / "e.safetensors", manifest, tensors)
    return EncoderEngine.from_checkpoint(load_checkpoint(tmp_path / "e.safetensors")).net


def _intervals(nodes, N, offsets, in_place):
    """Per node with a buffer: (first step index written, last index read, byte range), derived independently."""
    n = len(nodes)
    last, kept = [-1] * n, [False] * n
    kept[0] = True
    for j, node in enumerate(nodes):
        for src, delayed in zip(node.inputs, node.delayed):
            if node.kind == "classifier":
                continue
            if delayed:
                kept[src] = True
            else:
                last[src] = max(last[src], j)
    out = []
    for i, node in enumerate(nodes):
        summed = node.kind == "lif" and not (len(node.inputs) == 1 and not node.delayed[0]
                                             and not nodes[node.inputs[0]].binary)
        if summed:  # a LIF's buffer is the sum of its inputs, read by the LIF alone
            out.append((i, i, offsets[i], offsets[i] + N * node.size))
        elif node.kind in REAL_KINDS:
            end = len(nodes) if kept[i] else max(last[i], i)
            out.append((i, end, offsets[i], offsets[i] + N * node.size))
    return out


@pytest.mark.parametrize("style,feedback", [("spikingbert", False), ("spikingbert", True), ("spikformer", False)])
def test_live_values_never_share_memory(tmp_path, style, feedback):
    net = _net(tmp_path, style, feedback)
    N = 7
    offsets, in_place, total = value_buffers(net.nodes, N)
    spans = _intervals(net.nodes, N, offsets, in_place)
    for a, (i, end_i, lo_i, hi_i) in enumerate(spans):
        assert hi_i <= total
        for j, _end_j, lo_j, hi_j in spans[a + 1:]:
            overlap = lo_i < hi_j and lo_j < hi_i
            if not overlap:
                continue
            # j is written while i may still be read: allowed only when j works in place on i, its input,
            # and i is read by nobody after j
            assert j > end_i or (in_place[j] and net.nodes[j].inputs[0] == i and end_i == j), (
                f"{net.nodes[j].name} overwrites {net.nodes[i].name} while it is live")
    # one-step-late sources and the embedding's current keep their own memory
    kept = {s for n in net.nodes for s, d in zip(n.inputs, n.delayed) if d and not net.nodes[s].binary} | {0}
    for src in kept:
        lo, hi = offsets[src], offsets[src] + N * net.nodes[src].size
        for i, _, lo_i, hi_i in spans:
            assert i == src or not (lo < hi_i and lo_i < hi), f"{net.nodes[i].name} shares the kept buffer of {src}"
    # reuse is real: the whole step's values take far less than one buffer per node
    per_node = sum(N * n.size for n in net.nodes if n.kind in REAL_KINDS)
    assert total < per_node / 2


def test_in_place_nodes_are_layernorm_or_gelu_on_a_dying_input(tmp_path):
    net = _net(tmp_path, "spikingbert", False)
    offsets, in_place, _ = value_buffers(net.nodes, 5)
    assert any(in_place)
    for i, flag in enumerate(in_place):
        if flag:
            node = net.nodes[i]
            assert node.kind in ("layernorm", "gelu") and len(node.inputs) == 1
            assert offsets[i] == offsets[node.inputs[0]]


def test_residual_is_opt_in(tmp_path):
    net = _net(tmp_path, "spikingbert", True)
    engine = EncoderEngine(net)
    ids = np.arange(3, 9)
    plain, full = engine.run(ids, 12), engine.run(ids, 12, record_residual=True)
    assert np.isnan(plain.steady_residual).all() and plain.current_mean_final == {}
    assert np.isfinite(full.steady_residual).all() and set(full.current_mean_final) == set(full.populations)
    np.testing.assert_array_equal(plain.logits, full.logits)
    np.testing.assert_array_equal(plain.asr_mean, full.asr_mean)
    for key in plain.counts:
        np.testing.assert_array_equal(plain.counts[key], full.counts[key])


def test_value_read_one_step_late_keeps_its_buffer():
    """A real value read a step late (here a linear's, read by a later linear) must survive the whole step."""
    from eventsim.encoder_network import EncoderNode

    def node(i, kind, inputs=(), delayed=None, binary=False):
        return EncoderNode(i, f"n{i}", kind, 4, binary, tuple(inputs), tuple(delayed or [False] * len(inputs)),
                           np.zeros(4, np.int64))

    nodes = [node(0, "token_embedding"), node(1, "linear", [0]), node(2, "linear", [1]), node(3, "gelu", [2]),
             node(4, "lif", [3], binary=True), node(5, "linear", [4, 1], [False, True]), node(6, "layernorm", [5]),
             node(7, "lif", [6, 4], binary=True), node(8, "classifier", [7])]
    offsets, in_place, total = value_buffers(nodes, 3)
    assert in_place[3] and in_place[6]
    kept = (offsets[1], offsets[1] + 12)
    for i in (2, 3, 5, 6, 7):  # everything written after node 1 avoids its buffer
        assert not (offsets[i] < kept[1] and kept[0] < offsets[i] + 12), f"node {i} overwrites the delayed value"
    assert offsets[0] != offsets[1]
