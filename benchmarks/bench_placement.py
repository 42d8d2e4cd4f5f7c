"""Engine time per token against the number of PEs a model is placed on.

The engine does one pass per event row whatever the placement, and counts each
PE's share from a row x PE non-zero table, so its time should barely change
with the PE count while every per-PE counter stays exact. Prints, in one run,
microseconds per token for several neurons-per-PE settings on the 3-layer EGRU
(750 -> 1350, 1350, 750 -> 10 k) at 95 % weight sparsity. Usage::

    python benchmarks/bench_placement.py [--tokens 300] [--sparsity 0.95]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from eventsim.checkpoint import load_checkpoint
from eventsim.engine import Engine
from eventsim.placement import even_placement
from eventsim.synthetic import write_random_language_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ids = np.random.default_rng(0).integers(0, 10_000, args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_random_language_model(Path(tmp) / "egru.safetensors", cell="egru", vocab_size=10_000,
                                           emb_size=750, hidden_sizes=(1350, 1350, 750),
                                           weight_sparsity=args.sparsity, seed=0)
        ck = load_checkpoint(path)
    print(f"{'neurons/PE':>10} {'PEs':>5} {'us/token':>9} {'MACs/token':>11}")
    base = None
    for per_pe in (100_000, 1024, 256, 64):
        engine = Engine.from_checkpoint(ck, even_placement(ck.manifest, per_pe))
        engine.simulate(ids[:8])
        best = np.inf
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = engine.simulate(ids, chunk_tokens=ids.size)
            best = min(best, time.perf_counter() - t)
        us = best / ids.size * 1e6
        base = base or us
        print(f"{per_pe:>10} {engine.net.placement.pe_count:>5} {us:>9.1f} {res.trace.macs.sum() / ids.size:>11,.0f}"
              f"   ({us / base:.2f}x the 1-PE-per-layer time)")


if __name__ == "__main__":
    main()
