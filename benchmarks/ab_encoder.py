"""The encoder engine of the work tree against the engine of an earlier commit, alternately, in one process.

On a shared machine whose speed drifts by up to 1.5x from minute to minute, two
benchmark runs minutes apart cannot resolve a 5 % change. This script extracts
``eventsim/`` at ``--baseline`` (``git archive``) into a temporary folder as the
package ``eventsim_base`` (its imports renamed), builds the same random encoder
(the network of ``bench_encoder.py``) with both engines, checks that they give
the same logits, spikes and counts, then runs the input through the two engines
alternately ``--repeats`` times. It prints each engine's median time per input
and the median (with quartiles) of the per-pair ratio baseline / work tree:
each pair ran seconds apart, so the drift cancels in the ratio.

Where a process placed an engine's arrays moved its speed by up to ±8 % (the
same code, A/B in separate processes: 0.92x-1.06x), mostly how far past a cache
line numpy had put them; the engine now starts its arrays on a line
(:mod:`eventsim.aligned`), but a baseline older than f853eaf still varies so.
``--instances K`` loads the checkpoint K times per engine (K sets of arrays,
each placed anew) and takes them in turn, so each side's times mix K
placements. ``--cores K`` times K inputs per call on K threads, as
``bench_encoder.py --cores K``.

Usage::

    taskset -c 1 python benchmarks/ab_encoder.py --baseline HEAD~1 --style spikingbert --sparsity 0 --vth-scale 1.5
    python benchmarks/ab_encoder.py --baseline HEAD --cores 2                # both cores, two inputs per call
    python benchmarks/ab_encoder.py --baseline HEAD --quick --repeats 2     # small network (a smoke run)
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from encoder_sizes import FULL, QUICK

ROOT = Path(__file__).resolve().parents[1]
BASE = "eventsim_base"


def fail(message: str) -> None:
    print(f"ab_encoder: {message}", file=sys.stderr)
    sys.exit(2)


def extract_baseline(rev: str, dest: Path) -> Path:
    """``eventsim/`` at ``rev`` as the package ``dest/eventsim_base`` (imports of eventsim renamed)."""
    proc = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "eventsim"],
                          capture_output=True, timeout=120)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        fail(f"--baseline {rev!r}: git archive failed ({lines[-1] if lines else f'exit {proc.returncode}'})")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    pkg = dest / BASE
    (dest / "eventsim").rename(pkg)
    pattern = re.compile(r"\beventsim(?=[.\s])")  # eventsim.x, "from eventsim import", "import eventsim"
    for py in pkg.rglob("*.py"):
        py.write_text(pattern.sub(BASE, py.read_text()))
    return pkg


def build(package: str, style: str, sparsity: float, vth_scale: float, cfg: dict, work: Path):
    synthetic = importlib.import_module(f"{package}.synthetic_encoder")
    checkpoint = importlib.import_module(f"{package}.checkpoint")
    engine = importlib.import_module(f"{package}.encoder_engine")
    manifest, tensors = synthetic.random_encoder(
        style, vocab_size=cfg["vocab"], max_positions=cfg["positions"], hidden=cfg["hidden"],
        intermediate=cfg["intermediate"], heads=cfg["heads"], blocks=cfg["blocks"], weight_sparsity=sparsity,
        steps=cfg["steps"], seed=0)
    path = work / f"{package}.safetensors"
    checkpoint.save_checkpoint(path, manifest, tensors)
    return engine.EncoderEngine.from_checkpoint(checkpoint.load_checkpoint(path), vth_scale=vth_scale)


def same_results(a, b) -> list[str]:
    """Names of the result fields that differ between the two engines' runs (empty: identical)."""
    differ = []
    for name in ("logits", "asr_mean", "spike_fraction"):
        if hasattr(a, name) and not np.array_equal(getattr(a, name), getattr(b, name)):
            differ.append(name)
    for field in ("asr_final", "counts", "node_counts"):
        da, db = getattr(a, field), getattr(b, field)
        for key in da:
            if key not in db or not np.array_equal(da[key], db[key]):
                differ.append(f"{field}[{key}]")
    return differ


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--baseline", default="HEAD", help="the commit whose engine is compared (git revision)")
    ap.add_argument("--style", choices=("spikingbert", "spikformer"), default="spikingbert")
    ap.add_argument("--sparsity", type=float, default=0.0, help="weight sparsity of the random encoder")
    ap.add_argument("--vth-scale", type=float, default=1.5, help="threshold multiplier (higher: fewer spikes)")
    ap.add_argument("--repeats", type=int, default=20, help="alternating pairs of runs")
    ap.add_argument("--instances", type=int, default=1,
                    help="engines per side, each with its own arrays, taken in turn (mixes memory placements)")
    ap.add_argument("--cores", type=int, default=1,
                    help="inputs per timed call, one per thread (EncoderEngine.run_many with jobs=CORES), as "
                         "bench_encoder.py --cores; times per input")
    ap.add_argument("--quick", action="store_true", help="small network (a smoke run)")
    args = ap.parse_args(argv)
    if not (args.repeats > 0 and args.instances > 0 and args.cores > 0 and args.vth_scale > 0
            and 0.0 <= args.sparsity < 1.0):
        fail("--repeats, --instances, --cores and --vth-scale must be > 0 and --sparsity in [0, 1)")
    if shutil.which("git") is None:
        fail("git not found: the baseline engine is taken from the repository's history")
    cfg = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="eventsim-ab-"))
    try:
        extract_baseline(args.baseline, work)
        sys.path.insert(0, str(work))
        engines = {"baseline": [build(BASE, args.style, args.sparsity, args.vth_scale, cfg, work)
                                for _ in range(args.instances)],
                   "work tree": [build("eventsim", args.style, args.sparsity, args.vth_scale, cfg, work)
                                 for _ in range(args.instances)]}
        ids = np.random.default_rng(0).integers(5, cfg["vocab"], cfg["positions"])
        results = {k: [e.run(ids, cfg["steps"]) for e in es] for k, es in engines.items()}  # compiles both
        differ = same_results(results["baseline"][0], results["work tree"][0])
        times = {k: [] for k in engines}
        for r in range(args.repeats):
            for key, es in engines.items():
                engine = es[r % args.instances]
                t0 = time.perf_counter()
                if args.cores == 1:
                    engine.run(ids, cfg["steps"])
                else:
                    for _ in engine.run_many([ids] * args.cores, cfg["steps"], jobs=args.cores):
                        pass
                times[key].append((time.perf_counter() - t0) / args.cores)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base, new = np.array(times["baseline"]), np.array(times["work tree"])
    ratio = base / new
    q1, med, q3 = np.percentile(ratio, [25, 50, 75])
    print(f"{args.style}, {args.sparsity:.0%} pruned, V_th x {args.vth_scale}; baseline {args.baseline}; "
          f"{args.repeats} alternating pairs, {args.instances} instance(s) per side, {args.cores} input(s) per call "
          f"on as many threads")
    print(f"results identical: {'yes' if not differ else 'no (' + ', '.join(differ) + ')'}")
    print(f"baseline  median {1e3 * np.median(base):8.2f} ms per input")
    print(f"work tree median {1e3 * np.median(new):8.2f} ms per input")
    print(f"baseline / work tree per pair: median {med:.3f}x (quartiles {q1:.3f}-{q3:.3f})")


if __name__ == "__main__":
    main()
