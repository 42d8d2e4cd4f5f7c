"""The engine against the torch model of the same checkpoint (torch is the oracle).

Torch runs in float64 over the checkpoint's float32 weights, the engine
accumulates in float64 over the same weights, so both compute the same numbers
up to summation order: logits agree to far better than rtol 1e-4 and every
threshold crossing (event) is identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eventsim.checkpoint import load_checkpoint  # noqa: E402
from eventsim.cli import default_checkpoint  # noqa: E402
from eventsim.engine import simulate_tokens  # noqa: E402
from eventsim.placement import even_placement  # noqa: E402
from eventsim.synthetic import prune_by_magnitude  # noqa: E402
from eventsim.text import encode, tokenize  # noqa: E402
from training.lm import LanguageModel, load_lm, save_lm  # noqa: E402

TEXT = (Path(__file__).parent / "data" / "news_paragraph.txt").read_text()
SHIPPED = Path(default_checkpoint())


@pytest.fixture(scope="module")
def pruned_random_egru(tmp_path_factory) -> str:
    """A randomly initialised torch EGRU LM, 90 % of its kernels pruned by magnitude."""
    torch.manual_seed(0)
    model = LanguageModel(vocab_size=600, emb_size=48, hidden_sizes=[96, 80, 48], kind="egru")
    with torch.no_grad():
        for layer in model.layers:
            for name in ("kernel", "recurrent_kernel"):
                w = getattr(layer, name)
                w.copy_(torch.from_numpy(prune_by_magnitude(w.numpy() * 4.0, 0.9)))
            # Low thresholds so the untrained cells fire now and then.
            layer.thr.copy_(torch.linspace(0.01, 0.08, layer.thr.numel()))
    vocab = ["<unk>", "<eos>"] + sorted(set(tokenize(TEXT)) - {"<unk>", "<eos>"})
    vocab += [f"extra{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(600 - len(vocab))]
    path = tmp_path_factory.mktemp("oracle") / "pruned.safetensors"
    save_lm(path, model, vocabulary=vocab, provenance={"note": "random init, 90% pruned"})
    return str(path)


def _checkpoints(request):
    return request.getfixturevalue("pruned_random_egru") if request.param == "pruned" else str(SHIPPED)


@pytest.fixture(params=["shipped", "pruned"])
def checkpoint_path(request):
    if request.param == "shipped" and not SHIPPED.exists():
        pytest.skip("shipped checkpoint not built")
    return _checkpoints(request)


def _token_ids(ck, n=200):
    ids = encode(tokenize(TEXT), ck.manifest.vocabulary)
    assert len(ids) >= n
    return np.array(ids[:n])


def test_engine_equals_torch(checkpoint_path):
    ck = load_checkpoint(checkpoint_path)
    ids = _token_ids(ck)
    model, _ = load_lm(checkpoint_path, dtype=torch.float64)
    ref = model.run_tokens(ids)
    res = simulate_tokens(ck, ids, placement=even_placement(ck.manifest, 37), record_logits=True,
                          record_outputs=True, chunk_tokens=64)
    np.testing.assert_allclose(res.logits, ref.logits, rtol=1e-4, atol=1e-6)
    assert np.max(np.abs(res.logits - ref.logits)) < 1e-9  # in fact equal to float64 rounding
    for i, out in enumerate(ref.layer_outputs):
        np.testing.assert_array_equal(res.layer_events[:, i], np.count_nonzero(out, axis=1))
        np.testing.assert_array_equal(res.layer_outputs[i] != 0, out != 0)
    # Activity must be sparse but present, or the comparison proves little.
    activity = res.layer_events.sum() / (len(ids) * sum(o.shape[1] for o in ref.layer_outputs))
    assert 0.001 < activity < 0.9


def test_effective_macs_equal_weights_times_activity(checkpoint_path):
    """Effective MACs = sum over tokens of the kernels' non-zeros in the rows picked by
    non-zero inputs (embedding row or the layer below's output) plus the recurrent
    kernel's rows picked by the layer's own previous non-zero outputs; computed here from
    the torch model's weights and activations only."""
    ck = load_checkpoint(checkpoint_path)
    ids = _token_ids(ck)
    model, _ = load_lm(checkpoint_path, dtype=torch.float64)
    ref = model.run_tokens(ids)
    emb = model.embedding.weight.detach().numpy()
    expected = np.zeros((len(ids), len(model.layers)), dtype=np.int64)
    for i, layer in enumerate(model.layers):
        nz_kernel = (layer.kernel.detach().numpy() != 0).sum(axis=1)
        nz_recurrent = (layer.recurrent_kernel.detach().numpy() != 0).sum(axis=1)
        inputs = emb[ids] if i == 0 else ref.layer_outputs[i - 1]
        prev = np.vstack([np.zeros((1, layer.recurrent_kernel.shape[0])), ref.layer_outputs[i][:-1]])
        expected[:, i] = (inputs != 0) @ nz_kernel + (prev != 0) @ nz_recurrent
    res = simulate_tokens(ck, ids)
    pop = res.trace.pe_population
    got = np.stack([res.trace.macs[:, pop == i + 1].sum(axis=1) for i in range(len(model.layers))], axis=1)
    np.testing.assert_array_equal(got, expected)
    # Readout: the tied decoder is dense, so each event of the last layer costs V MACs.
    readout = res.trace.macs[:, pop == len(model.layers) + 1].sum(axis=1)
    np.testing.assert_array_equal(readout, np.count_nonzero(ref.layer_outputs[-1], axis=1) * emb.shape[0])


def test_pruned_fixture_is_sparse_in_weights_and_activity(pruned_random_egru):
    ck = load_checkpoint(pruned_random_egru)
    res = simulate_tokens(ck, _token_ids(ck))
    activity = res.layer_events.mean(axis=0) / np.array([96, 80, 48])
    assert np.all(activity > 0.01) and np.all(activity < 0.9), activity
    w = ck["layers.1.recurrent_kernel"]
    assert 0.89 < 1 - np.count_nonzero(w) / w.size < 0.91
