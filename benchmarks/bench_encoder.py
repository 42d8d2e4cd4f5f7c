"""Spiking encoders: the engine (exact counting) against torch and SpikingJelly on the same network.

For a random SpikingBERT-style encoder (default: 4 blocks, hidden 256,
intermediate 1024, 4 heads, 32 positions, T = 32; weights 0 % and 90 % pruned)
and, with ``--style both``, a Spikformer-style one, at several threshold
scales (so the mean spike rate spans about 5-25 %), prints in one run:

- ms per input of (a) ``EncoderEngine.run`` with every counter and the
  per-step ASR on (the steady-state residual, a convergence diagnostic, only
  with ``--residual``), (b) the
  project's torch oracle ``training.encoder.SpikingEncoder`` (time-stepped,
  float32, ``torch.no_grad``), (c) the same network built from SpikingJelly 2.0
  multi-step (``step_mode='m'``) ``IFNode``/``LIFNode`` layers plus torch
  ``Linear``/``LayerNorm``/``GELU`` and attention (same weights, float32, no
  counting): the three are run alternately, ``--repeats`` times each, and the
  median taken, so they share the machine's noise. Each timed run follows
  ``--warm-runs`` untimed runs of the same tool (default 1), so every tool is
  timed in its steady state, as on a stream of inputs, and none pays for the
  caches the tool before it left cold (the engine's 13 MB of weights came back
  from memory after SpikingJelly's run: +5-8 % on its time; SpikingJelly's and
  torch's times did not move); ``--warm-runs 0`` times the tools straight after
  one another, as before;
- the ratios torch/engine and SpikingJelly/engine (> 1: the engine is faster),
  ("best") SpikingJelly's fastest run over the engine's fastest, and ("pair")
  the median over the repeats of SpikingJelly's time over the engine's in the
  same round (the two ran seconds apart, so a drift of the machine's speed
  between rounds cancels in each pair's ratio);
- the engine's counted ACs + MACs per input, and a least-squares fit of its
  time per input against them (``t = t0 + c * ops``, R^2) per style and sparsity.

The spike rate ("rate") is all LIF spikes over all LIF neurons x positions x
steps, from the engine; SpikingJelly's own rate is printed beside it (float32
against float64: it matches to a fraction of a percent, a check that the
network is the same).

Absolute times on a shared machine are noise; ratios measured in the same run
are the result. With ``--cores 1`` (the default) every tool runs one input per
call on one thread; pin the process (``taskset -c 1 python ...``) so every tool
runs on the same core. With ``--cores C`` every tool gets a batch of ``C``
different inputs per call and ``C`` cores: the engine runs the inputs ``C`` at a
time on threads (``EncoderEngine.run_many``), torch and SpikingJelly take the
batch as one ``[C, N]`` tensor with ``C`` intra-op threads; the times are per
input (a call's time / ``C``), and the rates and operation counts are the
batch's means. Usage::

    python benchmarks/bench_encoder.py [--style spikingbert|spikformer|both] [--cores 1] [--repeats 5]
    python benchmarks/bench_encoder.py --quick      # small network, a few seconds (smoke run)
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import encoder_sizes
import numpy as np

from eventsim.checkpoint import load_checkpoint, save_checkpoint
from eventsim.encoder_engine import EncoderEngine
from eventsim.synthetic_encoder import random_encoder

FULL = dict(encoder_sizes.FULL, sparsities=(0.0, 0.9), vth_scales=(1.0, 1.5, 2.5, 4.0), repeats=5)
QUICK = dict(encoder_sizes.QUICK, sparsities=(0.0, 0.9), vth_scales=(1.0, 3.0), repeats=2)


def scaled_manifest(manifest, scale: float):
    """The manifest with every LIF threshold multiplied by ``scale`` (what ``vth_scale`` does in the engine)."""
    layers = tuple(replace(s, v_th=s.v_th * scale) if s.kind == "lif" else s for s in manifest.layers)
    return replace(manifest, layers=layers)


# ---------------------------------------------------------------------------------- SpikingJelly network
def spikingjelly_network(manifest, tensors):
    """The manifest's encoder as a multi-step SpikingJelly network (a torch module), float32.

    Every node runs once over all ``T`` steps (``[T, N, features]``): torch
    ``Linear`` (the checkpoint's ``[in, out]`` kernel transposed), ``LayerNorm``,
    ``GELU``, batched attention, and SpikingJelly neurons in ``step_mode='m'``:
    ``IFNode`` for gamma 1, else ``LIFNode(tau = 1 / (1 - gamma))``, with
    ``v_reset=None`` for reset by subtraction and ``0.0`` for reset to zero.
    One-step-late (feedback) inputs cannot run layer by layer and are refused.
    """
    import torch
    from spikingjelly.activation_based import neuron
    from torch import nn

    def param(name):
        return nn.Parameter(torch.as_tensor(np.asarray(tensors[name], np.float32)), requires_grad=False)

    class SJEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.specs = manifest.layers
            self.mods = nn.ModuleDict()
            emb = self.specs[0]
            self.word = nn.Embedding(emb.vocab_size, emb.size)
            self.word.weight = param(f"{emb.name}.word")
            self.position = param(f"{emb.name}.position")
            self.emb_ln = None
            if emb.layernorm:
                self.emb_ln = nn.LayerNorm(emb.size, eps=emb.eps)
                self.emb_ln.weight, self.emb_ln.bias = param(f"{emb.name}.ln_weight"), param(f"{emb.name}.ln_bias")
            for s in self.specs[1:]:
                if s.delayed:
                    raise ValueError(f"{s.name}: one-step-late inputs do not run layer by layer")
                key = s.name.replace(".", "/")
                if s.kind == "linear":
                    m = nn.Linear(s.in_size, s.size, bias=s.bias)
                    m.weight = nn.Parameter(torch.as_tensor(np.ascontiguousarray(tensors[f"{s.name}.weight"].T,
                                                                                 np.float32)), requires_grad=False)
                    if s.bias:
                        m.bias = param(f"{s.name}.bias")
                elif s.kind == "layernorm":
                    m = nn.LayerNorm(s.size, eps=s.eps)
                    m.weight, m.bias = param(f"{s.name}.weight"), param(f"{s.name}.bias")
                elif s.kind == "gelu":
                    m = nn.GELU()
                elif s.kind == "lif":
                    v_reset = 0.0 if s.reset == "zero" else None
                    if s.gamma == 1.0:
                        m = neuron.IFNode(v_threshold=s.v_th, v_reset=v_reset, step_mode="m")
                    else:
                        m = neuron.LIFNode(tau=1.0 / (1.0 - s.gamma), decay_input=s.decay_input, v_threshold=s.v_th,
                                           v_reset=v_reset, step_mode="m")
                elif s.kind == "classifier":
                    m = nn.Linear(*tensors[f"{s.name}.weight"].shape)
                    m.weight = nn.Parameter(torch.as_tensor(np.ascontiguousarray(tensors[f"{s.name}.weight"].T,
                                                                                 np.float32)), requires_grad=False)
                    m.bias = param(f"{s.name}.bias")
                else:
                    continue
                self.mods[key] = m

        def forward(self, ids, steps: int):
            """``ids [B, N]`` -> (logits ``[B, classes]``, total spikes): all ``steps`` from the zero state."""
            from spikingjelly.activation_based import functional

            functional.reset_net(self)
            emb = self.specs[0]
            x = self.word(ids) + self.position[: ids.shape[-1]]
            if self.emb_ln is not None:
                x = self.emb_ln(x)
            out = {emb.name: x.unsqueeze(0).expand(steps, *x.shape)}  # constant current, every step
            spikes = 0.0
            rates = {}
            for s in self.specs[1:-1]:
                mod = self.mods[s.name.replace(".", "/")] if s.kind != "spiking_attention" else None
                if s.kind == "spiking_attention":
                    out[s.name] = self._attention(s, out[s.q], out[s.k], out[s.v])
                    continue
                x = out[s.inputs[0]]
                for src in s.inputs[1:]:
                    x = x + out[src]
                y = mod(x)
                if s.kind == "lif":
                    spikes += float(y.sum())
                    w = s.gamma ** torch.arange(steps - 1, -1, -1, dtype=y.dtype)  # gamma-weighted ASR at the end
                    rates[s.name] = torch.tensordot(w / w.sum(), y, dims=1)
                out[s.name] = y
            cls = self.specs[-1]
            pooled = sum(rates[src].mean(-2) for src in cls.inputs)
            return self.mods[cls.name.replace(".", "/")](pooled), spikes

        @staticmethod
        def _attention(s, q, k, v):
            *lead, N, F = q.shape  # [T, B, N, F]
            h, d = s.heads, F // s.heads
            qh, kh, vh = (a.reshape(*lead, N, h, d).transpose(-2, -3) for a in (q, k, v))
            scores = (qh @ kh.transpose(-1, -2)) * s.scale
            if s.softmax:
                scores = torch.softmax(scores, dim=-1)
            return (scores @ vh).transpose(-2, -3).reshape(*lead, N, F)

    return SJEncoder().eval()


# ---------------------------------------------------------------------------------- timing
def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(engine, oracle, sj, batch, steps: int, repeats: int, residual: bool = False, warm_runs: int = 1) -> dict:
    """Median seconds per input of each tool (a call on the ``[B, N]`` batch / B), run alternately after a warm-up.

    The engine runs the B inputs B at a time on threads; torch and SpikingJelly
    take the batch as one tensor (their threads are ``torch.set_num_threads``).
    Each timed call follows ``warm_runs`` untimed calls of the same tool.
    """
    import torch

    B = batch.shape[0]
    tids = torch.as_tensor(batch, dtype=torch.long)
    inputs = list(batch)
    runs = {"engine": lambda: list(engine.run_many(inputs, steps, jobs=B, record_residual=residual))}
    if oracle is not None:
        runs["torch"] = lambda: oracle(tids, steps=steps)
    if sj is not None:
        runs["sj"] = lambda: sj(tids, steps)
    times = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():  # compile / warm up
            fn()
        for _ in range(repeats):
            for key, fn in runs.items():
                for _ in range(warm_runs):
                    fn()
                times[key].append(_timed(fn))
        sj_spikes = sj(tids, steps)[1] / B if sj is not None else math.nan
    pair = (statistics.median(s / e for s, e in zip(times["sj"], times["engine"])) if "sj" in times else math.nan)
    return ({k: statistics.median(v) / B for k, v in times.items()}
            | {f"{k}_best": min(v) / B for k, v in times.items()} | {"sj_spikes": sj_spikes, "pair": pair})


def fit(points) -> tuple[float, float, float]:
    """Least squares ``t = t0 + c * ops``: (t0 seconds, c seconds per op, R^2)."""
    x = np.array([p["ops"] for p in points], float)
    y = np.array([p["engine"] for p in points], float)
    c, t0 = np.polyfit(x, y, 1)
    resid = y - (t0 + c * x)
    ss = ((y - y.mean()) ** 2).sum()
    return float(t0), float(c), float(1 - (resid ** 2).sum() / ss) if ss > 0 else math.nan


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small network, 2 repeats (a smoke run of a few seconds)")
    ap.add_argument("--style", choices=("spikingbert", "spikformer", "both"), default="spikingbert")
    ap.add_argument("--blocks", type=int)
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--intermediate", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--positions", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--sparsities", type=float, nargs="+")
    ap.add_argument("--vth-scales", type=float, nargs="+", help="threshold multipliers (higher: fewer spikes)")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--cores", type=int, default=1,
                    help="inputs per call and cores for every tool: engine threads (one input each), torch "
                         "intra-op threads")
    ap.add_argument("--no-torch", action="store_true", help="engine only (no torch oracle, no SpikingJelly)")
    ap.add_argument("--no-spikingjelly", action="store_true")
    ap.add_argument("--dense-threshold", type=float, default=None,
                    help="store weight blocks dense from this density on (> 1: CSR everywhere); default: the "
                         "engine's default (0.3)")
    ap.add_argument("--residual", action="store_true",
                    help="engine also keeps the steady-state residual (record_residual; one more pass per LIF)")
    ap.add_argument("--warm-runs", type=int, default=1,
                    help="untimed runs of a tool right before each of its timed runs (0: timed straight after the "
                         "other tools, caches as they left them)")
    args = ap.parse_args(argv)
    if args.cores < 1:
        ap.error(f"--cores must be at least 1, got {args.cores}")
    if args.warm_runs < 0:
        ap.error(f"--warm-runs must be at least 0, got {args.warm_runs}")
    cfg = dict(QUICK if args.quick else FULL)
    for key in cfg:
        if getattr(args, key, None) is not None:
            cfg[key] = tuple(getattr(args, key)) if isinstance(cfg[key], tuple) else getattr(args, key)
    oracle_cls = None
    sj_ok = False
    if not args.no_torch:
        import torch

        from training.encoder import SpikingEncoder as oracle_cls

        torch.set_num_threads(args.cores)
        if not args.no_spikingjelly:
            logging.getLogger("torch._library.triton").setLevel(logging.ERROR)  # "Triton not available" on CPU
            try:
                from spikingjelly.activation_based import neuron  # noqa: F401

                sj_ok = True
            except ImportError as exc:
                print(f"SpikingJelly not importable ({exc}); its column is left out")
    styles = ("spikingbert", "spikformer") if args.style == "both" else (args.style,)
    print(f"network: {cfg['blocks']} blocks, hidden {cfg['hidden']}, intermediate {cfg['intermediate']}, "
          f"{cfg['heads']} heads, {cfg['positions']} positions, T = {cfg['steps']}; median of {cfg['repeats']} "
          f"alternating runs, each after {args.warm_runs} untimed run(s) of the same tool; {args.cores} input(s) per call on {args.cores} core(s), times per input; torch float32, "
          f"no grad; engine float64, every counter and "
          f"the per-step ASR on, steady-state residual {'on' if args.residual else 'off'}")
    head = (f"{'style':>11} {'sparsity':>8} {'vth x':>6} {'rate':>6} {'SJ rate':>7} {'ACs+MACs':>13} "
            f"{'engine ms':>9} {'torch ms':>9} {'SJ ms':>8} {'torch/eng':>9} {'SJ/eng':>7} {'best':>6} {'pair':>6}")
    print(head)
    rng = np.random.default_rng(0)
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for style in styles:
            for sparsity in cfg["sparsities"]:
                manifest, tensors = random_encoder(
                    style, vocab_size=cfg["vocab"], max_positions=cfg["positions"], hidden=cfg["hidden"],
                    intermediate=cfg["intermediate"], heads=cfg["heads"], blocks=cfg["blocks"],
                    weight_sparsity=sparsity, steps=cfg["steps"], seed=0)
                path = Path(tmp) / f"{style}_{sparsity}.safetensors"
                save_checkpoint(path, manifest, tensors)
                ck = load_checkpoint(path)
                batch = rng.integers(5, cfg["vocab"], (args.cores, cfg["positions"]))
                for scale in cfg["vth_scales"]:
                    engine = EncoderEngine.from_checkpoint(ck, vth_scale=scale, dense_threshold=args.dense_threshold)
                    oracle = sj = None
                    if oracle_cls is not None:
                        m = scaled_manifest(manifest, scale)
                        oracle = oracle_cls(m, tensors).float().eval()
                        sj = spikingjelly_network(m, tensors) if sj_ok else None
                    t = measure(engine, oracle, sj, batch, cfg["steps"], cfg["repeats"], args.residual, args.warm_runs)
                    results = [engine.run(ids, cfg["steps"]) for ids in batch]
                    cells = cfg["steps"] * batch.shape[1] * sum(n.size for n in engine.net.lif_nodes)
                    spikes = sum(int(r.counts["spikes"].sum()) for r in results) / len(results)
                    ops = round(sum(int(r.counts["acs"].sum() + r.counts["macs"].sum()) for r in results)
                                / len(results))
                    p = dict(style=style, sparsity=sparsity, scale=scale, rate=spikes / cells,
                             sj_rate=t["sj_spikes"] / cells, ops=ops,
                             **{k: t.get(k, math.nan) for k in ("engine", "torch", "sj", "engine_best", "sj_best", "pair")})
                    points.append(p)
                    print(f"{style:>11} {sparsity:>8.0%} {scale:>6.2f} {p['rate']:>6.1%} {p['sj_rate']:>7.1%} "
                          f"{ops:>13,} {p['engine'] * 1e3:>9.1f} {p['torch'] * 1e3:>9.1f} {p['sj'] * 1e3:>8.1f} "
                          f"{p['torch'] / p['engine']:>8.2f}x {p['sj'] / p['engine']:>6.2f}x "
                          f"{p['sj_best'] / p['engine_best']:>5.2f}x {p['pair']:>5.2f}x", flush=True)
    print("\nengine time per input against counted ACs + MACs (t = t0 + c * ops; thresholds vary the spikes):")
    groups = {(p["style"], p["sparsity"]) for p in points}
    for style, sparsity in sorted(groups):
        pts = [p for p in points if p["style"] == style and p["sparsity"] == sparsity]
        if len(pts) < 2:
            continue
        t0, c, r2 = fit(pts)
        print(f"{style:>11} {sparsity:>8.0%}: t0 = {t0 * 1e3:.2f} ms, c = {c * 1e9:.3f} ns/op, R^2 = {r2:.3f}")
    low = [p for p in points if p["rate"] <= 0.20 and not math.isnan(p["sj"])]
    if low:
        worst = min(p["sj"] / p["engine"] for p in low)
        twice = sum(p["sj"] / p["engine"] >= 2.0 for p in low)
        print(f"\nat spike rate <= 20 %: SpikingJelly / engine from {worst:.2f}x to "
              f"{max(p['sj'] / p['engine'] for p in low):.2f}x over {len(low)} points; >= 2x at {twice} of them")
        best = [p["sj_best"] / p["engine_best"] for p in low]
        print(f"  (best of {cfg['repeats']} runs each instead of the median: {min(best):.2f}x to {max(best):.2f}x; "
              f">= 2x at {sum(b >= 2.0 for b in best)} of them)")
        pair = [p["pair"] for p in low]
        print(f"  (median of the per-round ratios: {min(pair):.2f}x to {max(pair):.2f}x; "
              f">= 2x at {sum(b >= 2.0 for b in pair)} of them)")


if __name__ == "__main__":
    main()
