"""The chip model on a 3-layer EGRU of the published SpiNNaker 2 study's shape.

Model: embedding 750; EGRU hidden 1350, 1350, 750; vocabulary 10 k; readout tied to
the embedding; 95 % of every weight matrix (embedding included) pruned by
magnitude; random initialisation (``eventsim.synthetic``), thresholds drawn
around ``--thr-mean`` so that 10-30 % of neurons fire per token. Built with numpy
and written with ``save_checkpoint`` (no torch). It is mapped onto the
``spinnaker2`` preset (fewest PEs that fit), run by the engine, and priced.

Prints, in one run: tokens/s of the engine alone, of the engine plus the analytic
chip model, and of the engine plus the SimPy chip model; then latency, power and
energy per token on the chip, split by part, next to the published figures
(Nazeer et al. 2024, arXiv:2312.09084: 0.39 W on SpiNNaker 2 against 60 W on a GPU;
0.0653 J against 1.1935 J per inference). No constant is tuned to those figures.
Usage::

    python benchmarks/bench_chip.py [--tokens 200] [--thr-mean 0.15] [--chip spinnaker2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from eventsim.checkpoint import load_checkpoint, save_checkpoint
from eventsim.engine import Engine
from eventsim.synthetic import prune_by_magnitude, random_language_model
from hw import evaluate, load_chip, map_model

PUBLISHED = "Nazeer et al. 2024 (arXiv:2312.09084), SpiNNaker 2: 0.39 W (GPU 60 W); 0.0653 J vs 1.1935 J per inference"


def build_checkpoint(path: Path, thr_mean: float, sparsity: float, seed: int) -> None:
    manifest, tensors = random_language_model(
        "egru", vocab_size=10_000, emb_size=750, hidden_sizes=(1350, 1350, 750),
        weight_sparsity=sparsity, thr_mean=thr_mean, seed=seed,
    )
    tensors["embedding.weight"] = prune_by_magnitude(tensors["embedding.weight"], sparsity)  # the tied readout too
    save_checkpoint(path, manifest, tensors)


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--thr-mean", type=float, default=0.15)
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--chip", default="spinnaker2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    chip = load_chip(args.chip)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "egru_study.safetensors"
        build_checkpoint(path, args.thr_mean, args.sparsity, args.seed)
        checkpoint = load_checkpoint(path)
    placement, mapping = map_model(checkpoint, chip, "auto")
    m = mapping.to_dict()
    print(f"model: EGRU 750 -> 1350, 1350, 750 -> 10k (tied), {args.sparsity:.0%} of weights pruned, "
          f"thr_mean {args.thr_mean}")
    print(f"mapping on {chip.name}: {m['pes_used']} of {chip.pe.count} PEs {m['pes_per_layer']}, "
          f"SRAM use {m['utilisation_mean']:.1%} mean / {m['utilisation_max']:.1%} max of "
          f"{m['capacity_bytes_per_pe']} B per PE, {m['routers_used']} routers")

    engine = Engine.from_checkpoint(checkpoint, placement)
    ids = np.random.default_rng(args.seed).integers(0, 10_000, args.tokens)
    warm = engine.simulate(ids[:8]).trace
    evaluate(warm, chip, mapping, "analytic")  # compile / load the Numba kernel
    t_engine, result = best_of(lambda: engine.simulate(ids, chunk_tokens=ids.size), args.repeats)
    trace = result.trace
    activity = result.layer_events.mean(axis=0) / np.array([1350, 1350, 750])
    t_analytic, analytic = best_of(lambda: evaluate(trace, chip, mapping, "analytic"), args.repeats)
    t_simpy, simpy = best_of(lambda: evaluate(trace, chip, mapping, "simpy"), 1)
    T = ids.size
    print(f"activity per layer: {', '.join(f'{a:.1%}' for a in activity)}; "
          f"{trace.macs.sum() / T:,.0f} MACs/token (readout included)")
    print()
    print(f"{'':<26}{'tokens/s':>10}{'ms/token':>10}")
    print(f"{'engine alone':<26}{T / t_engine:>10,.0f}{t_engine / T * 1e3:>10.3f}")
    ta = t_engine + t_analytic
    print(f"{'engine + analytic chip':<26}{T / ta:>10,.0f}{ta / T * 1e3:>10.3f}"
          f"   (analytic adds {t_analytic / t_engine:.0%} to the engine's time)")
    ts = t_engine + t_simpy
    print(f"{'engine + SimPy chip':<26}{T / ts:>10,.1f}{ts / T * 1e3:>10.3f}")
    print()
    for name, rep in (("analytic", analytic), ("simpy", simpy)):
        s = rep.summary()
        parts = s["energy_pj_per_token_by_part"]
        split = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in parts.items())
        print(f"{name:>8}: latency {s['latency_ns_mean'] / 1e3:,.1f} us/token ({s['tokens_per_s']:,.0f} tokens/s on chip), "
              f"power {s['power_w']:.3f} W, energy {s['energy_pj_per_token'] / 1e6:.2f} uJ/token "
              f"[uJ: {split}], {s['packets_per_token']:,.0f} packets, {s['hops_per_token']:,.0f} hops/token")
        if name == "simpy":
            lw = s["link_waits"]
            print(f"          link queueing: {lw['links_with_queueing']} links, "
                  f"{lw['wait_ns_total'] / T:,.1f} ns per token in total")
    print(f"published: {PUBLISHED}")


if __name__ == "__main__":
    main()
