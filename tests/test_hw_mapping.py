"""Mapping a model onto PEs: bytes per PE by hand, fewest PEs, overflow errors, PE count against sparsity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventsim.checkpoint import Checkpoint
from eventsim.errors import EventsimError
from eventsim.manifest import EGRUSpec, EmbeddingSpec, Manifest, ReadoutSpec
from eventsim.placement import even_placement
from eventsim.synthetic import random_language_model
from hw.chip import load_chip
from hw.mapping import PopulationCost, check_placement, map_costs, map_model, pes_by_sparsity


def small_sram_chip(sram_bytes: int, reserved: int = 0, count: int = 152):
    chip = load_chip("spinnaker2")
    pe = dataclasses.replace(chip.pe, sram_bytes_per_pe=sram_bytes, sram_reserved_bytes_per_pe=reserved, count=count)
    return dataclasses.replace(chip, pe=pe)


def tiny_checkpoint() -> Checkpoint:
    """Embedding 6 x 2 -> EGRU 2 -> 2 -> tied readout (6 logits), with chosen zeros."""
    manifest = Manifest(
        model_kind="language_model",
        layers=(EmbeddingSpec("embedding", 6, 2), EGRUSpec("layers.0", 2, 2), ReadoutSpec("decoder", 2, 6, "embedding")),
    )
    # kernel [input 2, 3 gates x 2 neurons]; columns are gate * 2 + neuron.
    kernel = np.array([[1, 0, 1, 1, 0, 0],
                       [0, 0, 1, 0, 1, 1]], np.float32)  # neuron 0: columns 0, 2, 4 -> 1 + 2 + 1 = 4; neuron 1: 0 + 1 + 1 = 2
    recurrent = np.array([[0, 1, 0, 0, 0, 1],
                          [1, 1, 0, 0, 0, 0]], np.float32)  # neuron 0: 1 + 0 + 0 = 1; neuron 1: 2 + 0 + 1 = 3
    emb = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [1, 1], [1, 0]], np.float32)  # logit synapses 1,2,0,1,2,1 = 7
    tensors = {
        "embedding.weight": emb,
        "layers.0.kernel": kernel,
        "layers.0.recurrent_kernel": recurrent,
        "layers.0.bias": np.zeros(6, np.float32),
        "layers.0.recurrent_bias": np.zeros(6, np.float32),
        "layers.0.thr": np.ones(2, np.float32),
        "decoder.bias": np.zeros(6, np.float32),
    }
    return Checkpoint("tiny", manifest, tensors)


def test_bytes_per_pe_by_hand():
    chip = load_chip("spinnaker2")  # values 4 B, indices 2 B, pointers 2 B, state words 4 B, buffer 2048 B
    placement, report = map_model(tiny_checkpoint(), chip, "auto")
    assert report.pes_per_layer == {"embedding": 1, "layers.0": 1, "decoder": 1}
    parts = report.bytes_by_part
    # Embedding PE: no table (DRAM), 2 dims x 1 state word x 4 B = 8, plus the 2048 B buffer.
    assert [parts[k][0] for k in ("values", "indices", "pointers", "state", "buffer")] == [0, 0, 0, 8, 2048]
    # EGRU PE: synapses 4 + 2 + 1 + 3 = 10 -> values 40, indices 20; row pointers (2 + 1) + (2 + 1) = 6 x 2 = 12;
    # state 2 neurons x 14 words x 4 B = 112.
    assert [parts[k][1] for k in ("values", "indices", "pointers", "state", "buffer")] == [40, 20, 12, 112, 2048]
    # Readout PE: 7 synapses -> 28 + 14; pointers (2 + 1) x 2 = 6; state 6 logits x 2 words x 4 B = 48.
    assert [parts[k][2] for k in ("values", "indices", "pointers", "state", "buffer")] == [28, 14, 6, 48, 2048]
    assert report.bytes_per_pe.tolist() == [2056, 2232, 2144]
    assert report.synapses_per_pe.tolist() == [0, 10, 7]
    assert report.storage == {"embedding": "dram", "layers.0": "csr", "decoder": "csr"}
    assert report.pe_xy.tolist() == [[0, 0], [0, 0], [0, 0]]  # four PEs share a router


def test_split_follows_bytes_and_fixed_count_overflow_names_layer_pe_bytes():
    ck = tiny_checkpoint()
    # Room for the fixed 12 + 2048 B and one EGRU neuron at most (neuron 0: 4+1 synapses x 6 B + 56 = 86 B).
    chip = small_sram_chip(2048 + 12 + 100, count=8)
    placement, report = map_model(ck, chip, "auto")
    assert placement.bounds["layers.0"] == (0, 1, 2)
    assert report.minimum_pes == report.pes_used
    with pytest.raises(EventsimError) as err:
        map_model(ck, chip, report.pes_used - 1)
    msg = str(err.value)
    assert "does not fit" in msg and "PE " in msg and "overflow" in msg and "bytes" in msg and "\n" not in msg


def test_single_neuron_that_cannot_fit():
    chip = small_sram_chip(2048 + 12 + 60)  # neuron 0 needs 86 B beside the 2060 B fixed part
    with pytest.raises(EventsimError, match=r"layer 'layers.0': neuron 0 alone .* needs 2146 bytes .* overflow 26 bytes"):
        map_model(tiny_checkpoint(), chip, "auto")


def test_fixed_part_that_cannot_fit():
    chip = small_sram_chip(2048 + 10)  # the EGRU PE's 12 B of row pointers and 2048 B buffer do not fit
    with pytest.raises(EventsimError, match=r"layer 'layers.0': its row pointers .* 2060 bytes .* overflow 2 bytes"):
        map_model(tiny_checkpoint(), chip, "auto")


def test_model_larger_than_chip_and_bad_pe_counts():
    ck = tiny_checkpoint()
    chip = small_sram_chip(2048 + 12 + 100, count=3)
    with pytest.raises(EventsimError, match=r"the model needs 4 PEs .* chip 'spinnaker2' has 3"):
        map_model(ck, chip, "auto")
    with pytest.raises(EventsimError, match="has 152 PEs"):
        map_model(ck, load_chip("spinnaker2"), 200)
    with pytest.raises(EventsimError, match="needs at least one PE each"):
        map_model(ck, load_chip("spinnaker2"), 2)
    with pytest.raises(EventsimError, match="'auto' or a positive integer"):
        map_model(ck, load_chip("spinnaker2"), "many")


def test_extra_pes_spread_the_load():
    placement, report = map_model(tiny_checkpoint(), load_chip("spinnaker2"), 6)
    assert report.pes_used == 6
    assert report.bytes_per_pe.max() < map_model(tiny_checkpoint(), load_chip("spinnaker2"))[1].bytes_per_pe.max()


def test_pe_count_falls_as_weight_sparsity_rises():
    manifest, tensors = random_language_model("egru", vocab_size=200, emb_size=32, hidden_sizes=(64, 32), seed=3)
    ck = Checkpoint("dense", manifest, tensors)
    chip = small_sram_chip(16 * 1024, reserved=2048)
    rows = pes_by_sparsity(ck, chip, [0.0, 0.5, 0.8, 0.95])
    pes = [r["pes"] for r in rows]
    assert pes == sorted(pes, reverse=True) and len(set(pes)) == 4, pes
    # The dense model is stored dense (4 B a weight beats 6 B per CSR non-zero); pruned ones as CSR.
    assert map_model(ck, chip)[1].storage["layers.0"] == "dense"


def test_even_placement_checked_against_sram():
    manifest, tensors = random_language_model("egru", vocab_size=200, emb_size=32, hidden_sizes=(64, 32), seed=3)
    ck = Checkpoint("dense", manifest, tensors)
    with pytest.raises(EventsimError, match=r"layer 'layers.0' does not fit: PE 1 needs \d+ bytes.*overflow \d+ bytes"):
        check_placement(ck, small_sram_chip(16 * 1024, reserved=2048), even_placement(manifest, 256))
    report = check_placement(ck, load_chip("spinnaker2"), even_placement(manifest, 16))
    assert report.pes_used == even_placement(manifest, 16).pe_count


@pytest.mark.slow
def test_published_study_shape_fits_spinnaker2():
    """Embedding 750; EGRU 1350, 1350, 750; vocabulary 10 k; 95 % of every weight matrix zero."""
    rng = np.random.default_rng(0)
    layers = [EmbeddingSpec("embedding", 10_000, 750)]
    tensors = {"embedding.weight": (rng.random((10_000, 750)) < 0.05).astype(np.float32)}
    prev = 750
    for i, h in enumerate((1350, 1350, 750)):
        layers.append(EGRUSpec(f"layers.{i}", prev, h))
        tensors[f"layers.{i}.kernel"] = (rng.random((prev, 3 * h)) < 0.05).astype(np.float32)
        tensors[f"layers.{i}.recurrent_kernel"] = (rng.random((h, 3 * h)) < 0.05).astype(np.float32)
        prev = h
    layers.append(ReadoutSpec("decoder", 750, 10_000, "embedding"))
    ck = Checkpoint("study", Manifest("language_model", tuple(layers)), tensors)
    placement, report = map_model(ck, load_chip("spinnaker2"))
    assert report.pes_used <= 152
    assert report.bytes_per_pe.max() <= report.capacity_bytes_per_pe
    assert report.pes_per_layer["embedding"] == 1


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=60), min_size=1, max_size=4),
    room=st.integers(300, 2000),
)
def test_auto_is_the_fewest_pes_that_fit(sizes, room):
    costs = [PopulationCost(f"layers.{i}", "egru", np.array(s, np.int64), 1, 4, 2) for i, s in enumerate(sizes)]
    fixed = (4 + 2) * 2 + 2048
    chip = small_sram_chip(fixed + room, count=160)
    try:
        placement, report = map_costs(costs, chip, "auto")
    except EventsimError as exc:
        assert "alone" in str(exc) or "needs" in str(exc)
        return
    assert (report.bytes_per_pe <= report.capacity_bytes_per_pe).all()
    assert sum(len(b) - 1 for b in placement.bounds.values()) == report.minimum_pes
    if report.pes_used > len(costs):
        with pytest.raises(EventsimError, match="overflow"):
            map_costs(costs, chip, report.pes_used - 1)
