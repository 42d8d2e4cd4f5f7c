"""Randomly initialised, magnitude-pruned language models, without torch.

For benchmarks and tests that need a model of a given shape and weight
sparsity but no training: weights are Xavier-normal like the torch layers,
thresholds Beta-distributed around ``thr_mean`` like EvNN's initialisation, and
the smallest-magnitude weights of each recurrent/input matrix are zeroed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eventsim.checkpoint import save_checkpoint
from eventsim.manifest import EGRUSpec, EmbeddingSpec, LSTMSpec, Manifest, ReadoutSpec


def prune_by_magnitude(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero the ``sparsity`` fraction of entries with the smallest magnitude."""
    if sparsity <= 0:
        return w
    k = int(round(sparsity * w.size))
    if k == 0:
        return w
    cut = np.partition(np.abs(w).ravel(), k - 1)[k - 1]
    out = w.copy()
    out[np.abs(w) <= cut] = 0.0
    return out


def synthetic_word(i: int) -> str:
    """Letters-only stand-in words (``a``, ``b``, ..., ``ba``, ...) that survive tokenisation."""
    letters = ""
    while True:
        letters = chr(ord("a") + i % 26) + letters
        i //= 26
        if i == 0:
            return letters


def random_language_model(
    cell: str = "egru",
    vocab_size: int = 1000,
    emb_size: int = 32,
    hidden_sizes: Sequence[int] = (64, 32),
    weight_sparsity: float = 0.0,
    thr_mean: float = 0.3,
    seed: int = 0,
) -> tuple[Manifest, dict[str, np.ndarray]]:
    """Manifest and tensors of an embedding -> recurrent stack -> tied readout model."""
    if hidden_sizes[-1] != emb_size:
        raise ValueError("the last hidden size must equal the embedding size (tied readout)")
    rng = np.random.default_rng(seed)
    spec_cls = {"egru": EGRUSpec, "lstm": LSTMSpec}[cell]
    layers = [EmbeddingSpec("embedding", vocab_size, emb_size)]
    tensors = {"embedding.weight": rng.uniform(-0.1, 0.1, (vocab_size, emb_size)).astype(np.float32)}
    prev = emb_size
    for i, h in enumerate(hidden_sizes):
        spec = spec_cls(f"layers.{i}", prev, h)
        g = spec.n_gates
        for name, rows in (("kernel", prev), ("recurrent_kernel", h)):
            std = np.sqrt(2.0 / (rows + g * h))
            w = rng.normal(0.0, std, (rows, g * h)).astype(np.float32)
            tensors[f"{spec.name}.{name}"] = prune_by_magnitude(w, weight_sparsity)
        tensors[f"{spec.name}.bias"] = rng.normal(0.0, 0.1, g * h).astype(np.float32)
        tensors[f"{spec.name}.recurrent_bias"] = rng.normal(0.0, 0.1, g * h).astype(np.float32)
        if cell == "egru":
            beta = 3.0
            alpha = beta * thr_mean / (1 - thr_mean)
            tensors[f"{spec.name}.thr"] = rng.beta(alpha, beta, h).astype(np.float32).clip(1e-3, None)
        layers.append(spec)
        prev = h
    layers.append(ReadoutSpec("decoder", emb_size, vocab_size, tied_to="embedding"))
    tensors["decoder.bias"] = np.zeros(vocab_size, np.float32)
    vocabulary = ["<unk>", "<eos>"] + [synthetic_word(i) for i in range(vocab_size - 2)]
    manifest = Manifest(
        model_kind="language_model",
        layers=tuple(layers),
        vocabulary=tuple(vocabulary),
        provenance={"source": "eventsim.synthetic.random_language_model", "seed": seed,
                    "weight_sparsity": weight_sparsity},
    )
    return manifest, tensors


def write_random_language_model(path, **kw) -> str:
    """Write :func:`random_language_model` to ``path``; returns the path."""
    manifest, tensors = random_language_model(**kw)
    save_checkpoint(path, manifest, tensors)
    return str(path)
