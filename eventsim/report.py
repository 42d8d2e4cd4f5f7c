"""Turn a simulation result into the numbers a user reads: per token and in sum.

Metric names follow NeuroBench where it has them: ``Effective_MACs`` (weight
non-zeros touched by non-zero graded inputs), ``Effective_ACs`` (the same for
binary inputs), ``Dense`` (MACs of the same layers with every weight kept and
every input active). Recurrent-layer figures exclude the readout (the usual
convention for recurrent language models); the readout is reported beside them.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eventsim.checkpoint import Checkpoint
from eventsim.engine import SimulationResult
from eventsim.network import CompiledNetwork


@dataclass(frozen=True)
class LayerCounts:
    """Counts of one population, summed over its PEs, per token ``[T]``."""

    name: str
    kind: str
    neurons: int
    events: np.ndarray
    macs: np.ndarray
    acs: np.ndarray
    dense_macs_per_token: int


def weight_sparsity(checkpoint: Checkpoint) -> dict[str, float]:
    """Fraction of zero weights per recurrent layer (input and recurrent kernels together)."""
    out = {}
    for spec in checkpoint.manifest.recurrent_layers:
        ws = [checkpoint[f"{spec.name}.kernel"], checkpoint[f"{spec.name}.recurrent_kernel"]]
        size = sum(w.size for w in ws)
        out[spec.name] = 1.0 - sum(int(np.count_nonzero(w)) for w in ws) / size
    return out


def layer_counts(result: SimulationResult, net: CompiledNetwork) -> list[LayerCounts]:
    """Per-population sums over PEs; recurrent layers first, then the readout."""
    trace = result.trace
    out = []
    specs = net.manifest.layers
    for pop, spec in enumerate(specs[1:], start=1):
        cols = trace.pe_population == pop
        dense = int(net.dense_macs_per_layer[pop - 1]) if spec.kind != "readout" else net.readout_dense_macs
        out.append(
            LayerCounts(
                name=spec.name,
                kind=spec.kind,
                neurons=spec.output_size,
                events=trace.events_emitted[:, cols].sum(axis=1),
                macs=trace.macs[:, cols].sum(axis=1),
                acs=trace.acs[:, cols].sum(axis=1),
                dense_macs_per_token=dense,
            )
        )
    return out


def perplexity(result: SimulationResult) -> float:
    """exp of the mean negative log-likelihood over tokens that have a successor."""
    lp = result.target_logprob[np.isfinite(result.target_logprob)]
    return float(math.exp(-lp.mean())) if lp.size else float("nan")


def summarize(result: SimulationResult, net: CompiledNetwork, checkpoint: Checkpoint) -> dict:
    """The ``summary.json`` record."""
    T = int(result.token_ids.size)
    layers = layer_counts(result, net)
    recurrent = [lc for lc in layers if lc.kind != "readout"]
    readout = layers[-1]
    eff = int(sum(lc.macs.sum() for lc in recurrent))
    eff_acs = int(sum(lc.acs.sum() for lc in recurrent))
    dense = int(sum(lc.dense_macs_per_token for lc in recurrent)) * T
    sparsity = weight_sparsity(checkpoint)
    lp = result.target_logprob[np.isfinite(result.target_logprob)]
    trace = result.trace
    return {
        "checkpoint": checkpoint.path,
        "model": {
            "cell": recurrent[0].kind,
            "layers": [{"name": s.name, "kind": s.kind, "size": s.output_size} for s in net.manifest.layers],
            "vocabulary_size": len(net.manifest.vocabulary) or int(net.emb_table.shape[0]),
            "provenance": net.manifest.provenance,
        },
        "tokens": T,
        "predicted_tokens": int(lp.size),
        "mean_nll_nats": float(-lp.mean()) if lp.size else None,
        "perplexity": perplexity(result) if lp.size else None,
        "pes": net.placement.pe_count,
        "layers": [
            {
                "name": lc.name,
                "kind": lc.kind,
                "neurons": lc.neurons,
                "weight_sparsity": sparsity.get(lc.name),
                "events_per_token": float(lc.events.mean()),
                "activity": float(lc.events.mean() / lc.neurons) if lc.kind != "readout" else None,
                "effective_macs_per_token": float(lc.macs.mean()),
                "dense_macs_per_token": lc.dense_macs_per_token,
            }
            for lc in layers
        ],
        "effective_macs": eff,
        "effective_acs": eff_acs,
        "dense_macs": dense,
        "mac_reduction": dense / eff if eff else None,
        "readout_effective_macs": int(readout.macs.sum()),
        "readout_dense_macs": readout.dense_macs_per_token * T,
        "neurobench": {
            "Effective_MACs": eff / T,
            "Effective_ACs": eff_acs / T,
            "Dense": dense / T,
            "ActivationSparsity": 1.0 - float(
                sum(lc.events.sum() for lc in recurrent) / (T * sum(lc.neurons for lc in recurrent))
            ),
        },
        "trace_totals": {
            "events_received": int(trace.events_received.sum()),
            "events_emitted": int(trace.events_emitted.sum()),
            "row_slices": int(trace.row_slices.sum()),
            "neuron_updates": int(trace.neuron_updates.sum()),
            "dram_words": int(trace.dram_words.sum()),
            "packets_sent": int(trace.packets_sent().sum()),
        },
    }


def per_token_rows(result: SimulationResult, net: CompiledNetwork) -> list[dict]:
    """One record per token for ``per_token.csv`` and the printed table."""
    vocab = net.manifest.vocabulary
    word = (lambda i: vocab[i]) if vocab else str
    layers = layer_counts(result, net)
    rows = []
    for t, tok in enumerate(result.token_ids):
        lp = result.target_logprob[t]
        row = {
            "index": t,
            "token": word(int(tok)),
            "next_token": word(int(result.token_ids[t + 1])) if t + 1 < result.token_ids.size else "",
            "next_logprob": float(lp) if np.isfinite(lp) else "",
        }
        for k in range(result.topk_ids.shape[1]):
            row[f"top{k + 1}"] = word(int(result.topk_ids[t, k]))
            row[f"top{k + 1}_prob"] = float(np.exp(result.topk_logprob[t, k]))
        for lc in layers:
            if lc.kind != "readout":
                row[f"events[{lc.name}]"] = int(lc.events[t])
        for lc in layers:
            row[f"macs[{lc.name}]"] = int(lc.macs[t])
        row["effective_macs"] = int(sum(int(lc.macs[t]) for lc in layers if lc.kind != "readout"))
        rows.append(row)
    return rows


def write_outputs(out_dir: Path, summary: dict, rows: list[dict]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    csv_path = out_dir / "per_token.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["index"])
        writer.writeheader()
        writer.writerows(rows)
    return [summary_path, csv_path]


def format_table(rows: list[dict], layer_names: list[str], limit: int) -> str:
    """A fixed-width per-token table for the terminal."""
    head = f"{'#':>5}  {'token':<14} {'next':<14} {'p(next)':>8}  {'top-3 predictions':<40}"
    head += "".join(f" {('ev:' + n.split('.')[-1]):>7}" for n in layer_names) + f" {'MACs':>10}"
    lines = [head, "-" * len(head)]
    for row in rows[:limit]:
        p = f"{math.exp(row['next_logprob']):.3f}" if row["next_logprob"] != "" else ""
        top = ", ".join(f"{row[f'top{k}']}:{row[f'top{k}_prob']:.2f}" for k in (1, 2, 3))
        line = f"{row['index']:>5}  {row['token'][:14]:<14} {row['next_token'][:14]:<14} {p:>8}  {top[:40]:<40}"
        line += "".join(f" {row[f'events[{n}]']:>7}" for n in layer_names) + f" {row['effective_macs']:>10}"
        lines.append(line)
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more tokens (all in per_token.csv with --out)")
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    lines = []
    if summary["perplexity"] is not None:
        lines.append(f"perplexity over {summary['predicted_tokens']} predicted tokens: {summary['perplexity']:.2f}")
    lines.append(f"PEs: {summary['pes']}")
    for layer in summary["layers"]:
        macs = f"{layer['effective_macs_per_token']:,.0f} of {layer['dense_macs_per_token']:,} MACs/token"
        if layer["kind"] == "readout":
            lines.append(f"  {layer['name']:<10} {layer['kind']:<8} {macs}")
            continue
        sp = f", weight sparsity {layer['weight_sparsity']:.1%}" if layer["weight_sparsity"] is not None else ""
        lines.append(
            f"  {layer['name']:<10} {layer['kind']:<8} activity {layer['activity']:.3%}, "
            f"{layer['events_per_token']:.1f} events/token, {macs}{sp}"
        )
    T = summary["tokens"]
    red = summary["mac_reduction"]
    lines.append(
        f"recurrent layers: {summary['effective_macs'] / T:,.0f} effective vs {summary['dense_macs'] / T:,.0f} dense "
        f"MACs/token" + (f" -> {red:.1f}x fewer" if red else "")
    )
    return "\n".join(lines)
