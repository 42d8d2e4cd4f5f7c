"""Distillation losses from a BERT-family teacher into a spiking encoder.

The student's output (``training.encoder.EncoderOutput`` of the spiking forward or
``training.equilibrium.EquilibriumOutput`` of the fixed point: both have
``logits``, ``rates``, ``attention`` and ``embedding``) is compared with a batch of
a :class:`training.teacher_cache.TeacherCache` (``hidden [B, layers, N, H_t]``,
``attention [B, A, heads, N, N]``, ``logits``, ``labels``, ``attention_mask``):

- ``hidden``: per mapped block, MSE between ``W_b a_b`` and the teacher's hidden
  state of the mapped layer, over real positions. ``a_b`` is the block's output
  ASR (SpikingBERT: ``blocks.b.out_lif``; Spikformer: the residual stream, the sum
  of the ASR of ``embedding_lif`` and every ``attn_out``/``mlp_out`` up to block b),
  ``W_b`` a learned linear map ``H_s -> H_t`` (TinyBERT-style; not exported).
- ``embedding``: MSE between ``W_e x`` (``x`` the student's token_embedding current)
  and the teacher's layer 0 (embedding output), if the cache holds layer 0.
- ``attention``: MSE between the student's attention probabilities of block b
  (averaged over the T steps by the spiking forward; the rate surrogate's at the
  equilibrium), averaged over heads, and the teacher's of the mapped layer,
  averaged over heads, over the real query x key block.
- ``soft``: prediction-layer soft cross-entropy ``-tau^2 sum softmax(t/tau) log softmax(s/tau)``.
- ``ce``: cross-entropy on the labels.

Mapping: the teacher's cached layers other than 0, ``L_1 < ... < L_m``; student block
``b`` (of ``B``) takes ``L_k`` with ``k = ceil((b + 1) m / B)``, so the last block
meets the last cached layer (TinyBERT's uniform mapping).

Stages (TinyBERT, SpikeBERT): stage 1, representation distillation, trains on
``hidden + embedding + attention``; stage 2, prediction distillation, on ``soft + ce``.
Each term has its own weight; a zero weight drops it (and its computation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from eventsim.errors import EventsimError

STAGE_TERMS = {1: ("hidden", "embedding", "attention"), 2: ("soft", "ce")}


@dataclass(frozen=True)
class DistillWeights:
    """Weight of every loss term and the soft cross-entropy's temperature."""

    hidden: float = 1.0
    embedding: float = 1.0
    attention: float = 1.0
    soft: float = 1.0
    ce: float = 1.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        for name in ("hidden", "embedding", "attention", "soft", "ce"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise EventsimError(f"distillation weight {name} must be a finite number >= 0, got {v!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise EventsimError(f"distillation temperature must be a finite number > 0, got {self.temperature!r}")


def layer_map(blocks: int, teacher_layers: tuple[int, ...]) -> list[int]:
    """Teacher layer of each student block (uniform; the last block meets the last layer)."""
    deep = [k for k in teacher_layers if k > 0]
    if not deep:
        return []
    return [deep[math.ceil((b + 1) * len(deep) / blocks) - 1] for b in range(blocks)]


def count_blocks(model) -> int:
    b = 0
    while f"blocks.{b}.attn" in model.specs:
        b += 1
    return b


def block_outputs(model, rates: Mapping[str, Tensor]) -> list[Tensor]:
    """The output ASR of every block (see the module doc for the two styles)."""
    out, residual = [], rates.get("embedding_lif")
    for b in range(count_blocks(model)):
        p = f"blocks.{b}"
        if f"{p}.out_lif" in rates:
            out.append(rates[f"{p}.out_lif"])
        elif f"{p}.mlp_out" in rates:
            residual = residual + rates[f"{p}.attn_out"] + rates[f"{p}.mlp_out"]
            out.append(residual)
        else:
            raise EventsimError(f"block {b} has neither out_lif nor mlp_out: not a SpikingBERT or Spikformer encoder")
    return out


def masked_mse(a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``(a - b)^2`` over the entries where ``mask`` (broadcast over trailing features) is set."""
    m = mask.to(a.dtype)
    while m.dim() < a.dim():
        m = m[..., None]
    per = ((a - b) ** 2 * m).sum()
    count = m.expand_as(a).sum()
    return per / count.clamp_min(1.0)


def soft_cross_entropy(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    t = temperature
    return -(torch.softmax(teacher / t, -1) * torch.log_softmax(student / t, -1)).sum(-1).mean() * t * t


class Distiller(nn.Module):
    """The learned maps and the loss terms; ``losses(out, batch, stage)`` -> weighted terms by name."""

    def __init__(self, model, teacher_layers: tuple[int, ...], attention_layers: tuple[int, ...],
                 teacher_hidden: int, weights: DistillWeights) -> None:
        super().__init__()
        self.weights = weights
        self.teacher_layers = tuple(teacher_layers)
        self.attention_layers = tuple(attention_layers)
        self.blocks = count_blocks(model)
        self.mapping = layer_map(self.blocks, self.teacher_layers)
        self.attention_names = [f"blocks.{b}.attn" for b in range(self.blocks)]
        size = model.embedding_spec.size
        self.maps = nn.ModuleDict({f"block{b}": nn.Linear(size, teacher_hidden) for b in range(len(self.mapping))})
        if 0 in self.teacher_layers:
            self.maps["embedding"] = nn.Linear(size, teacher_hidden)

    def active(self, stage: int) -> tuple[str, ...]:
        """Terms with a non-zero weight in ``stage`` that this teacher cache can feed."""
        names = [n for n in STAGE_TERMS[stage] if getattr(self.weights, n) > 0]
        if not self.mapping:
            names = [n for n in names if n not in ("hidden", "attention")]
        if "embedding" not in self.maps:
            names = [n for n in names if n != "embedding"]
        return tuple(names)

    def losses(self, model, out, batch: Mapping[str, Tensor], stage: int) -> dict[str, Tensor]:
        """Weighted loss terms of ``stage`` (1 or 2); their sum is the training loss."""
        mask = batch["attention_mask"]
        w, terms = self.weights, {}
        active = self.active(stage)
        if "hidden" in active:
            hs = block_outputs(model, out.rates)
            parts = [masked_mse(self.maps[f"block{b}"](hs[b]), batch["hidden"][:, self.teacher_layers.index(k)], mask)
                     for b, k in enumerate(self.mapping)]
            terms["hidden"] = w.hidden * torch.stack(parts).mean()
        if "embedding" in active:
            target = batch["hidden"][:, self.teacher_layers.index(0)]
            terms["embedding"] = w.embedding * masked_mse(self.maps["embedding"](out.embedding), target, mask)
        if "attention" in active:
            pair = mask[:, :, None] * mask[:, None, :]
            parts = []
            for b, k in enumerate(self.mapping):
                if k not in self.attention_layers:
                    continue
                student = out.attention[self.attention_names[b]].mean(1)
                teacher = batch["attention"][:, self.attention_layers.index(k)].mean(1)
                parts.append(masked_mse(student, teacher.to(student.dtype), pair))
            if parts:
                terms["attention"] = w.attention * torch.stack(parts).mean()
        if "soft" in active:
            terms["soft"] = w.soft * soft_cross_entropy(out.logits, batch["logits"].to(out.logits.dtype), w.temperature)
        if "ce" in active:
            terms["ce"] = w.ce * nn.functional.cross_entropy(out.logits, batch["labels"])
        if not terms:
            raise EventsimError(f"stage {stage} has no loss term with a non-zero weight")
        return terms
