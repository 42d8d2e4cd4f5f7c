"""Engine (with exact counting) against torch dense batch-1 inference of the same model.

For a 3-layer EGRU language model (embedding 750; hidden 1350, 1350, 750;
vocabulary 10 k) at weight sparsity 0, 80 and 95 %, prints in one run:

- tokens/s of the engine and of torch streaming one token at a time (state
  carried, float32, ``torch.no_grad``), timed alternately (best of
  ``--repeats`` each), and their ratio;
- the engine's time per token against its counted MACs at several activity
  levels (thresholds scaled; x1000 silences every recurrent layer), and
  least-squares fits ``t = t0 + c * MACs`` per sparsity level.

Absolute times on a shared machine are noise; the ratios and the fit, measured
in the same run, are the result. Usage::

    python benchmarks/bench_engine.py [--tokens 300] [--hidden 1350] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from eventsim.checkpoint import load_checkpoint, save_checkpoint
from eventsim.engine import Engine
from eventsim.synthetic import random_language_model


def time_engine(engine: Engine, ids: np.ndarray, repeats: int) -> tuple[float, float, float]:
    """Best-of-``repeats`` seconds per token, counted MACs per token (all layers and readout), activity."""
    engine.simulate(ids[:8])  # compile / warm caches
    best = np.inf
    for _ in range(repeats):
        best = min(best, _engine_once(engine, ids))
    res = engine.simulate(ids, chunk_tokens=ids.size)
    activity = res.layer_events.sum() / (ids.size * engine.net.layers[:, 1].sum())
    return best, float(res.trace.macs.sum() / ids.size), float(activity)


def _engine_once(engine: Engine, ids: np.ndarray) -> float:
    t = time.perf_counter()
    engine.simulate(ids, chunk_tokens=ids.size)
    return (time.perf_counter() - t) / ids.size


def _torch_once(model, ids: np.ndarray) -> float:
    """Seconds per token for token-by-token torch inference (state carried, no grad)."""
    import torch

    state = None
    with torch.no_grad():
        t = time.perf_counter()
        for tok in ids:
            logits, state, _ = model(torch.tensor([[int(tok)]]), state)
            torch.log_softmax(logits, dim=-1)
    return (time.perf_counter() - t) / ids.size


def time_both(engine: Engine, path: str, ids: np.ndarray, torch_ids: np.ndarray, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds per token of the engine and of torch, measured alternately so
    that both see the same machine conditions."""
    import torch

    from training.lm import load_lm

    model, _ = load_lm(path, dtype=torch.float32)
    engine.simulate(ids[:8])
    _torch_once(model, torch_ids[:5])
    best_engine = best_torch = np.inf
    for _ in range(repeats):
        best_engine = min(best_engine, _engine_once(engine, ids))
        best_torch = min(best_torch, _torch_once(model, torch_ids))
    return best_engine, best_torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--torch-tokens", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=1350)
    ap.add_argument("--emb", type=int, default=750)
    ap.add_argument("--vocab", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--thr-mean", type=float, default=0.3,
                    help="mean EGRU threshold of the random model (0.3 gives ~5%% activity, 0.15 ~19%%)")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, args.vocab, args.tokens)
    hidden = (args.hidden, args.hidden, args.emb)
    print(f"model: EGRU emb {args.emb}, hidden {hidden}, vocab {args.vocab}, threshold mean {args.thr_mean}; "
          f"{args.tokens} tokens (torch: {args.torch_tokens})")
    print(f"{'sparsity':>8} {'activity':>8} {'MACs/tok':>10} {'engine tok/s':>13} {'torch tok/s':>12} {'speed-up':>9}")
    fit_points = []
    with tempfile.TemporaryDirectory() as tmp:
        for sparsity in (0.0, 0.8, 0.95):
            manifest, tensors = random_language_model(
                cell="egru", vocab_size=args.vocab, emb_size=args.emb, hidden_sizes=hidden,
                weight_sparsity=sparsity, thr_mean=args.thr_mean, seed=0)
            path = str(Path(tmp) / f"egru_{sparsity}.safetensors")
            save_checkpoint(path, manifest, tensors)
            ck = load_checkpoint(path)
            engine = Engine.from_checkpoint(ck)
            sec, macs, act = time_engine(engine, ids, args.repeats)
            torch_sec = np.nan
            if not args.no_torch:
                sec, torch_sec = time_both(engine, path, ids, ids[: args.torch_tokens], args.repeats)
            print(f"{sparsity:>8.0%} {act:>8.2%} {macs:>10,.0f} {1 / sec:>13,.1f} {1 / torch_sec:>12,.1f} "
                  f"{torch_sec / sec:>8.1f}x")
            # Activity sweep at this sparsity: scale thresholds to move the number of events.
            for scale in (0.25, 0.5, 1.0, 2.0, 1000.0):
                scaled = dict(tensors)
                for s in manifest.recurrent_layers:
                    scaled[f"{s.name}.thr"] = tensors[f"{s.name}.thr"] * scale
                p2 = str(Path(tmp) / f"egru_{sparsity}_{scale}.safetensors")
                save_checkpoint(p2, manifest, scaled)
                e2 = Engine.from_checkpoint(load_checkpoint(p2))
                fit_points.append((sparsity, scale, *time_engine(e2, ids, args.repeats)))
        # The floor: no events anywhere (thresholds x1000) and an empty layer-0 input kernel, so
        # no MACs at all: what is left is neuron updates, log-softmax and top-3, embedding lookup.
        floor = dict(tensors)
        for s in manifest.recurrent_layers:
            floor[f"{s.name}.thr"] = tensors[f"{s.name}.thr"] * 1000.0
        floor["layers.0.kernel"] = np.zeros_like(tensors["layers.0.kernel"])
        p3 = str(Path(tmp) / "egru_floor.safetensors")
        save_checkpoint(p3, manifest, floor)
        floor_sec, floor_macs, _ = time_engine(Engine.from_checkpoint(load_checkpoint(p3)), ids, args.repeats)
    print(f"\nfixed cost per token with no events and no MACs ({floor_macs:.0f} counted): {floor_sec * 1e3:.3f} ms")
    print("\nengine time per token against counted MACs (thresholds scaled to vary activity):")
    print(f"{'sparsity':>8} {'thr x':>7} {'activity':>8} {'MACs/tok':>10} {'us/tok':>8} {'ns/MAC':>7}")
    for sparsity, scale, sec, macs, act in fit_points:
        print(f"{sparsity:>8.0%} {scale:>7.2f} {act:>8.2%} {macs:>10,.0f} {sec * 1e6:>8.1f} {sec / macs * 1e9:>7.2f}")
    print("\nfit t = t0 + c * MACs per sparsity level (activity varied by the thresholds):")
    for sparsity in sorted({p[0] for p in fit_points}):
        pts = [p for p in fit_points if p[0] == sparsity]
        x = np.array([p[3] for p in pts])
        y = np.array([p[2] for p in pts])
        c, t0 = np.polyfit(x, y, 1)
        resid = y - (t0 + c * x)
        r2 = 1 - (resid**2).sum() / ((y - y.mean()) ** 2).sum()
        print(f"{sparsity:>8.0%}: t0 = {t0 * 1e3:.3f} ms, c = {c * 1e9:.2f} ns/MAC (R^2 = {r2:.3f})")
    x = np.array([p[3] for p in fit_points])
    y = np.array([p[2] for p in fit_points])
    c, t0 = np.polyfit(x, y, 1)
    print(f"all levels together: t0 = {t0 * 1e3:.3f} ms, c = {c * 1e9:.2f} ns/MAC "
          "(dense rows cost less per MAC than CSR rows, so one line fits the levels only roughly)")


if __name__ == "__main__":
    main()
