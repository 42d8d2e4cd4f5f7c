"""Where the encoder engine's time goes, kernel by kernel: a ``perf`` profile with the Numba functions named.

Numba's machine code has no symbols, so ``perf record`` alone attributes the
engine's time to anonymous addresses. This script builds one random encoder
(the network of ``bench_encoder.py``: 4 blocks, hidden 256, intermediate 1024,
32 positions, T = 32), compiles the engine into a private cache (so every
compiled function still has its LLVM module and its address can be looked up),
writes those addresses to ``/tmp/perf-<pid>.map`` (the file ``perf`` reads for
JIT code), then samples itself with ``perf record -p <pid>`` while it runs the
input again and again for ``--seconds``. It prints, per Numba function (by
module and name; functions LLVM inlined count in their caller), its share of
the engine's samples and the milliseconds per input that share stands for, and
with ``--out`` writes them as JSON.

Needs ``perf`` (``linux-tools``) and permission to sample one's own process
(``/proc/sys/kernel/perf_event_paranoid`` <= 2); without them it says so in one
line and exits 2. Usage::

    taskset -c 1 python benchmarks/profile_encoder.py --style spikingbert --sparsity 0.9 --vth-scale 1.5
    python benchmarks/profile_encoder.py --quick --seconds 2     # small network (a smoke run)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from encoder_sizes import FULL, QUICK

KERNEL_MODULES = ("eventsim.encoder_kernels", "eventsim.row_tiles", "eventsim.lif_lanes", "eventsim.csr_lanes",
                  "eventsim.vmath", "eventsim.kernels")


def fail(message: str) -> None:
    print(f"profile_encoder: {message}", file=sys.stderr)
    sys.exit(2)


def demangle(symbol: str) -> str:
    """``_ZN8eventsim15encoder_kernels9lif_stepB...E...`` -> ``eventsim.encoder_kernels.lif_step``.

    Numba mangles a function as an Itanium nested name: length-prefixed parts of
    its qualified name, then ABI tags (``B``) and the argument types.
    """
    if not symbol.startswith("_ZN"):
        return symbol
    rest, parts = symbol[3:], []
    while rest and rest[0].isdigit():
        m = re.match(r"\d+", rest)
        n = int(m.group())
        parts.append(rest[m.end():m.end() + n])
        rest = rest[m.end() + n:]
    return ".".join(parts) if parts else symbol


def write_perf_map(modules) -> int:
    """Every compiled function of the given modules' dispatchers into ``/tmp/perf-<pid>.map``; returns how many."""
    from numba.core.registry import CPUDispatcher

    addresses: dict[int, str] = {}
    for module in modules:
        for obj in vars(module).values():
            if not isinstance(obj, CPUDispatcher):
                continue
            for cres in obj.overloads.values():
                library = cres.library
                module_ir = getattr(library, "_final_module", None)
                names = ([f.name for f in module_ir.functions if not f.is_declaration] if module_ir is not None
                         else [cres.fndesc.llvm_func_name])
                for name in names:
                    try:
                        address = library.get_pointer_to_function(name)
                    except Exception:  # noqa: BLE001 - a helper LLVM dropped after inlining
                        continue
                    if address:
                        addresses[address] = name
    ordered = sorted(addresses)
    lines = []
    for i, address in enumerate(ordered):  # a function's extent: up to the next one (perf needs a size)
        size = min(ordered[i + 1] - address if i + 1 < len(ordered) else 1 << 16, 1 << 20)
        lines.append(f"{address:x} {size:x} {addresses[address]}\n")
    Path(f"/tmp/perf-{os.getpid()}.map").write_text("".join(lines))
    return len(ordered)


def parse_report(text: str) -> dict[str, float]:
    """``perf report --stdio --sort sym`` lines -> {function: percent of all samples}."""
    shares: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[\.\]\s+(\S+)", line)
        if m:
            name = demangle(m.group(2))
            shares[name] = shares.get(name, 0.0) + float(m.group(1))
    return shares


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--style", choices=("spikingbert", "spikformer"), default="spikingbert")
    ap.add_argument("--sparsity", type=float, default=0.0, help="weight sparsity of the random encoder")
    ap.add_argument("--vth-scale", type=float, default=1.5, help="threshold multiplier (higher: fewer spikes)")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to sample")
    ap.add_argument("--quick", action="store_true", help="small network (a smoke run)")
    for key in ("blocks", "hidden", "intermediate", "heads", "positions", "steps"):
        ap.add_argument(f"--{key}", type=int, default=argparse.SUPPRESS,
                        help=f"the network's {key} (default {FULL[key]}; --quick: {QUICK[key]})")
    ap.add_argument("--top", type=int, default=20, help="functions to list")
    ap.add_argument("--perf", default="perf", help="the perf executable")
    ap.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    if not (args.seconds > 0 and args.vth_scale > 0 and 0.0 <= args.sparsity < 1.0):
        fail("--seconds and --vth-scale must be > 0 and --sparsity in [0, 1)")
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("blocks", "hidden", "intermediate", "heads", "positions", "steps"):
        value = getattr(args, key, None)
        if value is not None:
            if value <= 0:
                fail(f"--{key} must be > 0, got {value}")
            cfg[key] = value
    perf = shutil.which(args.perf)
    if perf is None:
        fail(f"{args.perf!r} not found: install perf (linux-tools) to profile")
    cache = tempfile.mkdtemp(prefix="eventsim-profile-numba-")
    os.environ["NUMBA_CACHE_DIR"] = cache  # a private cache: functions compile here and keep their LLVM modules
    import importlib

    from eventsim.checkpoint import load_checkpoint, save_checkpoint
    from eventsim.encoder_engine import EncoderEngine
    from eventsim.errors import EventsimError
    from eventsim.synthetic_encoder import random_encoder

    try:
        manifest, tensors = random_encoder(
            args.style, vocab_size=cfg["vocab"], max_positions=cfg["positions"], hidden=cfg["hidden"],
            intermediate=cfg["intermediate"], heads=cfg["heads"], blocks=cfg["blocks"],
            weight_sparsity=args.sparsity, steps=cfg["steps"], seed=0)
    except (EventsimError, ValueError) as exc:
        fail(f"the network cannot be built: {exc}")
    work = Path(tempfile.mkdtemp(prefix="eventsim-profile-"))
    try:
        path = work / "encoder.safetensors"
        save_checkpoint(path, manifest, tensors)
        engine = EncoderEngine.from_checkpoint(load_checkpoint(path), vth_scale=args.vth_scale)
        ids = np.random.default_rng(0).integers(5, cfg["vocab"], cfg["positions"])
        res = engine.run(ids, cfg["steps"])  # compiles
        ops = int(res.counts["acs"].sum() + res.counts["macs"].sum())
        cells = cfg["steps"] * ids.size * sum(n.size for n in engine.net.lif_nodes)
        rate = float(res.counts["spikes"].sum()) / cells
        mapped = write_perf_map([importlib.import_module(m) for m in KERNEL_MODULES])
        data = work / "perf.data"
        rec = subprocess.Popen([perf, "record", "-F", "1999", "-p", str(os.getpid()), "-o", str(data)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        if rec.poll() is not None:
            fail(f"perf record failed: {rec.stderr.read().strip().splitlines()[-1:]}")
        runs, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            engine.run(ids, cfg["steps"])
            runs += 1
        elapsed = time.perf_counter() - t0
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=60)
        report = subprocess.run([perf, "report", "-i", str(data), "--stdio", "--no-children", "--sort", "sym"],
                                capture_output=True, text=True, timeout=300)
        if report.returncode != 0:
            fail(f"perf report failed: {report.stderr.strip().splitlines()[-1:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        Path(f"/tmp/perf-{os.getpid()}.map").unlink(missing_ok=True)
    shares = parse_report(report.stdout)
    engine_share = {k: v for k, v in shares.items() if k.startswith("eventsim.")}
    total = sum(engine_share.values())
    if total <= 0:
        fail("no samples in the engine's functions (is perf allowed to read this process?)")
    ms_per_input = 1e3 * elapsed / runs
    print(f"{args.style}, {args.sparsity:.0%} pruned, V_th x {args.vth_scale}: spike rate {rate:.1%}, "
          f"{ops:,} ACs+MACs per input; {runs} inputs in {elapsed:.1f} s ({ms_per_input:.1f} ms each); "
          f"{mapped} compiled functions mapped; {total:.0f} % of the samples in them")
    print(f"{'function':<44} {'share':>6} {'ms/input':>9}")
    rows = []
    for name, pct in sorted(engine_share.items(), key=lambda kv: -kv[1])[:args.top]:
        rows.append({"function": name, "share": pct / total, "ms_per_input": ms_per_input * pct / total})
        print(f"{name:<44} {pct / total:>6.1%} {ms_per_input * pct / total:>9.2f}")
    if args.out is not None:
        from eventsim.atomic_io import write_json_atomic

        write_json_atomic(args.out, {"style": args.style, "sparsity": args.sparsity, "vth_scale": args.vth_scale,
                                     "spike_rate": rate, "ops": ops, "ms_per_input": ms_per_input,
                                     "functions": rows})


if __name__ == "__main__":
    main()
