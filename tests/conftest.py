"""Shared fixtures: small random checkpoints written once per session."""

from __future__ import annotations

import pytest

from eventsim.synthetic import write_random_language_model


@pytest.fixture(scope="session")
def small_egru(tmp_path_factory) -> str:
    """EGRU 24 -> 40, 30, 24; vocabulary 500; 90 % of weights pruned."""
    path = tmp_path_factory.mktemp("ckpt") / "egru.safetensors"
    return write_random_language_model(path, cell="egru", vocab_size=500, emb_size=24,
                                       hidden_sizes=(40, 30, 24), weight_sparsity=0.9, seed=1)


@pytest.fixture(scope="session")
def small_lstm(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "lstm.safetensors"
    return write_random_language_model(path, cell="lstm", vocab_size=300, emb_size=16,
                                       hidden_sizes=(20, 16), weight_sparsity=0.5, seed=2)
