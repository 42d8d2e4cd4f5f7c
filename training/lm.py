"""Word-level language model: embedding -> stacked EGRU/LSTM layers -> tied decoder.

The torch parameter names are the checkpoint tensor names (``embedding.weight``,
``layers.0.kernel``, ..., ``decoder.bias``), so export and import are a copy.
A model built from a checkpoint by :func:`load_lm` is the oracle the eventsim
engine is tested against: :meth:`LanguageModel.run_tokens` runs token ids one
by one (batch 1, eval mode) and returns the logits and every layer's outputs
per token, in the model's dtype (``load_lm(path, dtype=torch.float64)``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from eventsim.checkpoint import load_checkpoint, save_checkpoint
from eventsim.errors import EventsimError
from eventsim.manifest import EGRUSpec, EmbeddingSpec, LSTMSpec, Manifest, ReadoutSpec
from training.egru import EGRU
from training.lstm import LSTM

LAYER_CLASSES = {"egru": EGRU, "lstm": LSTM}
SPEC_CLASSES = {"egru": EGRUSpec, "lstm": LSTMSpec}
State = list[tuple[Tensor, Tensor]]


class TiedDecoder(nn.Module):
    """Holds the decoder bias; the weight is the embedding table."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout on ``[T, B, D]``: one mask per sequence, shared over time."""
    if not training or p <= 0:
        return x
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


def embedding_dropout(weight: Tensor, p: float, training: bool) -> Tensor:
    """Drop whole words: zero rows of the embedding table (scaled to keep the mean)."""
    if not training or p <= 0:
        return weight
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
    return weight * mask


@dataclass(frozen=True)
class TokenRun:
    """Result of :meth:`LanguageModel.run_tokens` for T tokens.

    ``logits [T, V]``; ``layer_outputs[l] [T, H_l]`` are what layer ``l`` sent at
    each token (for an EGRU, the non-zeros are its events); ``state`` continues the run.
    """

    logits: np.ndarray
    layer_outputs: tuple[np.ndarray, ...]
    state: State


class LanguageModel(nn.Module):
    """``forward(tokens [T, B], state) -> (logits [T, B, V], state, layer outputs [T, B, H_l] per layer)``."""

    def __init__(
        self,
        vocab_size: int,
        emb_size: int,
        hidden_sizes: Sequence[int],
        kind: str | Sequence[str] = "egru",
        dropout_emb: float = 0.0,
        dropout_in: float = 0.0,
        dropout_hidden: float = 0.0,
        dropout_out: float = 0.0,
        dropconnect: float = 0.0,
        egru_options: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        hidden_sizes = [int(h) for h in hidden_sizes]
        kinds = [kind] * len(hidden_sizes) if isinstance(kind, str) else list(kind)
        if not hidden_sizes or len(kinds) != len(hidden_sizes):
            raise ValueError(f"need one kind per layer, got {kinds} for sizes {hidden_sizes}")
        if any(k not in LAYER_CLASSES for k in kinds):
            raise ValueError(f"layer kinds must be among {sorted(LAYER_CLASSES)}, got {kinds}")
        if vocab_size <= 0 or emb_size <= 0 or any(h <= 0 for h in hidden_sizes):
            raise ValueError(f"sizes must be positive: vocab {vocab_size}, emb {emb_size}, hidden {hidden_sizes}")
        if hidden_sizes[-1] != emb_size:
            raise ValueError(f"the last hidden size ({hidden_sizes[-1]}) must equal the embedding size ({emb_size})")
        for name, p in (("dropout_emb", dropout_emb), ("dropout_in", dropout_in), ("dropout_hidden", dropout_hidden),
                        ("dropout_out", dropout_out), ("dropconnect", dropconnect)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.vocab_size, self.emb_size = vocab_size, emb_size
        self.hidden_sizes, self.kinds = tuple(hidden_sizes), tuple(kinds)
        self.dropout_emb, self.dropout_in = dropout_emb, dropout_in
        self.dropout_hidden, self.dropout_out = dropout_hidden, dropout_out
        self.embedding = nn.Embedding(vocab_size, emb_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        layers = []
        sizes = [emb_size, *hidden_sizes]
        for k, (n_in, n_out) in zip(kinds, zip(sizes[:-1], sizes[1:], strict=True), strict=True):
            if k == "egru":
                layers.append(EGRU(n_in, n_out, dropconnect=dropconnect, **dict(egru_options or {})))
            else:
                layers.append(LSTM(n_in, n_out, dropconnect=dropconnect))
        self.layers = nn.ModuleList(layers)
        self.decoder = TiedDecoder(vocab_size)

    def init_state(self, batch: int) -> State:
        return [layer.init_state(batch) for layer in self.layers]

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State, list[Tensor]]:
        weight = embedding_dropout(self.embedding.weight, self.dropout_emb, self.training)
        h = nn.functional.embedding(tokens, weight)
        h = locked_dropout(h, self.dropout_in, self.training)
        new_state: State = []
        outputs: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            h, s = layer(h, None if state is None else state[i])
            new_state.append(s)
            outputs.append(h)
            last = i == len(self.layers) - 1
            h = locked_dropout(h, self.dropout_out if last else self.dropout_hidden, self.training)
        logits = torch.matmul(h, self.embedding.weight.t()) + self.decoder.bias
        return logits, new_state, outputs

    def clamp_thresholds(self) -> None:
        for layer in self.layers:
            if isinstance(layer, EGRU):
                layer.clamp_thresholds()

    @torch.no_grad()
    def run_tokens(self, token_ids: Sequence[int] | np.ndarray | Tensor, state: State | None = None) -> TokenRun:
        """Run ids one sequence at batch 1 in eval mode; carry ``state`` from a previous call."""
        was_training = self.training
        self.eval()
        try:
            ids = torch.as_tensor(np.asarray(token_ids, dtype=np.int64)).view(-1, 1)
            logits, new_state, outputs = self(ids, state)
        finally:
            self.train(was_training)
        return TokenRun(
            logits=logits[:, 0].cpu().numpy(),
            layer_outputs=tuple(o[:, 0].cpu().numpy() for o in outputs),
            state=new_state,
        )


def detach_state(state: State | None) -> State | None:
    return None if state is None else [tuple(t.detach() for t in s) for s in state]


def manifest_for(model: LanguageModel, vocabulary: Sequence[str] = (), provenance: Mapping[str, Any] | None = None) -> Manifest:
    layers: list = [EmbeddingSpec("embedding", model.vocab_size, model.emb_size)]
    sizes = [model.emb_size, *model.hidden_sizes]
    for i, kind in enumerate(model.kinds):
        layers.append(SPEC_CLASSES[kind](f"layers.{i}", sizes[i], sizes[i + 1]))
    layers.append(ReadoutSpec("decoder", model.emb_size, model.vocab_size, tied_to="embedding"))
    return Manifest(
        model_kind="language_model",
        layers=tuple(layers),
        vocabulary=tuple(vocabulary),
        provenance=dict(provenance or {}),
    )


def to_checkpoint(
    model: LanguageModel, vocabulary: Sequence[str], provenance: Mapping[str, Any] | None = None
) -> tuple[Manifest, dict[str, np.ndarray]]:
    """The manifest and float32 tensors (named as in the manifest) of ``model``."""
    if len(vocabulary) != model.vocab_size:
        raise EventsimError(f"vocabulary has {len(vocabulary)} words but the model has {model.vocab_size} embeddings")
    manifest = manifest_for(model, vocabulary, provenance)
    tensors = {k: v.detach().cpu().to(torch.float32).numpy().copy() for k, v in model.state_dict().items()}
    return manifest, tensors


def save_lm(
    path: str | os.PathLike,
    model: LanguageModel,
    vocabulary: Sequence[str],
    provenance: Mapping[str, Any] | None = None,
    sparse: bool | None = None,
) -> Manifest:
    """Write ``model`` as one eventsim checkpoint; returns the manifest written."""
    manifest, tensors = to_checkpoint(model, vocabulary, provenance)
    save_checkpoint(path, manifest, tensors, sparse=sparse)
    return manifest


def model_from_manifest(manifest: Manifest) -> LanguageModel:
    """An untrained model with the architecture a language-model manifest describes."""
    if manifest.model_kind != "language_model":
        raise EventsimError(f"checkpoint holds a {manifest.model_kind!r}, not a language_model")
    embedding, readout = manifest.layers[0], manifest.layers[-1]
    if readout.tied_to != embedding.name:
        raise EventsimError("training.lm supports only a decoder tied to the embedding")
    recurrent = manifest.layers[1:-1]
    return LanguageModel(
        vocab_size=embedding.num_embeddings,
        emb_size=embedding.embedding_dim,
        hidden_sizes=[s.hidden_size for s in recurrent],
        kind=[s.kind for s in recurrent],
    )


def load_lm(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> tuple[LanguageModel, Manifest]:
    """Build the torch model of a checkpoint (eval mode, in ``dtype``)."""
    ckpt = load_checkpoint(path)
    model = model_from_manifest(ckpt.manifest)
    expected = set(model.state_dict())
    if expected != set(ckpt.tensors):
        raise EventsimError(f"{path}: tensors {sorted(set(ckpt.tensors) ^ expected)} do not match the model")
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in ckpt.tensors.items()}
    model.load_state_dict(state)
    model.to(dtype)
    model.eval()
    return model, ckpt.manifest


def oracle_run(path: str | os.PathLike, token_ids: Sequence[int] | np.ndarray, dtype: torch.dtype = torch.float64) -> TokenRun:
    """Logits and per-layer outputs of a checkpoint on ``token_ids`` (batch 1, from a zero state)."""
    model, _ = load_lm(path, dtype=dtype)
    return model.run_tokens(token_ids)


_EVNN_LAYER = re.compile(r"^(?:(.*?)\.)?(\d+)\.(kernel|recurrent_kernel|bias|recurrent_bias|thr)$")
_EVNN_BARE = re.compile(r"^(kernel|recurrent_kernel|bias|recurrent_bias|thr)$")
_EMBEDDING_KEYS = ("embedding.weight", "embeddings.weight", "encoder.weight", "embed.weight", "emb.weight")


def import_evnn_state_dict(model: LanguageModel, state_dict: Mapping[str, Any]) -> list[str]:
    """Copy an EvNN-style state dict into ``model``; returns the model tensors filled.

    Recurrent layers are found by their parameter names (``kernel``,
    ``recurrent_kernel``, ``bias``, ``recurrent_bias``, ``thr``) under a numbered
    prefix (``rnns.0.kernel``, ``layers.1.thr``, ...; a bare ``kernel`` is layer 0),
    numbered in order. The embedding is any ``*embedding.weight`` /
    ``*encoder.weight``; the decoder bias ``*decoder.bias``. A ``decoder.weight``
    is accepted only when it equals the embedding (tied). Every recurrent tensor
    of the model must be present with the model's shape.
    """
    layers: dict[int, dict[str, Any]] = {}
    prefixes: set[str] = set()
    found: dict[str, Any] = {}
    for key, value in state_dict.items():
        m = _EVNN_LAYER.match(key)
        bare = _EVNN_BARE.match(key)
        if m:
            prefixes.add(m.group(1) or "")
            layers.setdefault(int(m.group(2)), {})[m.group(3)] = value
        elif bare:
            layers.setdefault(0, {})[bare.group(1)] = value
        elif key.endswith(_EMBEDDING_KEYS):
            found["embedding.weight"] = value
        elif key.endswith("decoder.bias"):
            found["decoder.bias"] = value
        elif key.endswith("decoder.weight"):
            found["_decoder.weight"] = value
    if len(prefixes) > 1:
        raise EventsimError(f"EvNN state dict has recurrent layers under several prefixes: {sorted(prefixes)}")
    order = sorted(layers)
    if len(order) != len(model.layers):
        raise EventsimError(f"EvNN state dict has {len(order)} recurrent layers, the model has {len(model.layers)}")
    own = model.state_dict()
    for i, idx in enumerate(order):
        for param in own:
            if param.startswith(f"layers.{i}."):
                short = param.split(".", 2)[2]
                if short not in layers[idx]:
                    raise EventsimError(f"EvNN state dict lacks {short!r} of recurrent layer {idx}")
                found[param] = layers[idx][short]
    tied = found.pop("_decoder.weight", None)
    filled = []
    with torch.no_grad():
        for name, value in found.items():
            tensor = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value))
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise EventsimError(
                    f"EvNN tensor for {name} has shape {list(tensor.shape)}, the model needs {list(own[name].shape)}"
                )
            if name.endswith(".thr") and bool((tensor <= 0).any()):
                raise EventsimError(f"EvNN tensor for {name} has non-positive thresholds")
            own[name].copy_(tensor.to(own[name].dtype))
            filled.append(name)
        if tied is not None:
            tied_t = torch.as_tensor(np.asarray(tied.detach().cpu() if isinstance(tied, Tensor) else tied))
            if tuple(tied_t.shape) != tuple(own["embedding.weight"].shape) or not torch.equal(
                tied_t.to(own["embedding.weight"].dtype), own["embedding.weight"]
            ):
                raise EventsimError("EvNN decoder.weight differs from the embedding; only tied decoders are supported")
    return filled
