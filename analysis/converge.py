"""``eventsim converge``: how a spiking encoder settles, against its threshold V_th.

For every threshold setting it runs the inputs for ``--steps`` time steps and
records, per sub-layer (LIF population) and step, the mean ASR, the spike
fraction, the residual of the steady-state equation at the simulated inputs,
and the counted operations; then the convergence step of every sub-layer and
of the decision (:mod:`analysis.convergence`), accuracy against the number of
steps on labelled data, energy per input against T_conv (counted operations at
the cmos45 prices and the papers' formulas, :mod:`analysis.energy_formulas`),
the mean instantaneous power (energy per step) and, with ``--chip``, the chip
model's energy and latency.

Thresholds (one point per value):

- ``--vth-scale 0.5,1,2`` multiplies every LIF population's threshold in the
  checkpoint by the factor (populations keep their ratios, e.g. Spikformer's
  attention LIF at half the others);
- ``--vth 0.5,1,2`` sets every LIF population's threshold to the value.

Default: ``--vth-scale 1`` (the checkpoint as trained).

Each point is one (checkpoint, threshold) pair over all inputs; points go
through the sweep results store (:mod:`analysis.results`, kind ``converge``):
appended as soon as finished, skipped when already there, so an interrupted
run resumes; they run in local processes (``--workers``) or on Dask
(``--scheduler``). ``--out DIR`` also writes ``converge_summary.json`` and
``converge_per_step.csv`` (and, without ``--results``, keeps the store in
``DIR/converge_results.jsonl``).

Spiking attention: its steady-state surrogate is
``softmax(scale * Q(a_in) a_K^T) a_V`` per head, with ``Q(a_in)`` the Q
projection applied to the ASR of its input population (or the ASR of Q's LIF
when Q spikes), computed from the recorded ASRs and the checkpoint's weights at
every step. Its difference norm is the RMS over positions and features of the
attention output population's ASR minus ``clip(k * surrogate / v_th, 0, 1)``
at every step; at the last step the surrogate is also compared with that
population's averaged input current.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eventsim.errors import EventsimError

KIND = "converge"
SHIPPED_ENCODER = "spiking_encoder_rt.safetensors"
DEFAULT_STEPS = 150
DEFAULT_TOL = 1e-3
SUMMARY_FILE = "converge_summary.json"
PER_STEP_FILE = "converge_per_step.csv"
RESULTS_FILE = "converge_results.jsonl"
SETTLE_REL = 0.1  # settling step: within 10 % of the last step's ASR (analysis.convergence.settling_step)
COUNT_KINDS = ("acs", "macs", "adds", "muls", "exp", "div", "layernorm", "gelu", "neuron_updates", "spikes")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "converge",
        help="ASR convergence, accuracy and energy of a spiking encoder against its threshold V_th",
        description="Run a spiking encoder for up to --steps time steps at each threshold setting; record ASR, "
        "steady-state residual and counts per sub-layer and step; report steps to converge per sub-layer and for "
        "the decision, accuracy against T_conv on labelled data, operations and energy per input (counted, and by "
        "the SpikingBERT and SpikeBERT formulas) and mean power. One result point per (checkpoint, threshold).",
    )
    p.add_argument("checkpoint", nargs="?", default=None, metavar="CKPT",
                   help=f"spiking encoder checkpoint (default: the shipped {SHIPPED_ENCODER})")
    th = p.add_mutually_exclusive_group()
    th.add_argument("--vth", metavar="V,V,...", help="set every LIF threshold to each of these values")
    th.add_argument("--vth-scale", metavar="S,S,...",
                    help="scale every LIF threshold of the checkpoint by each of these factors (default 1)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="time steps per input")
    p.add_argument("--tol", type=float, default=DEFAULT_TOL,
                   help="convergence tolerance on the step-to-step ASR change")
    p.add_argument("--window", type=int, default=1,
                   help="steps the rule must hold for before a series counts as converged")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", metavar="TEXT", help="an input sentence (repeat for several)")
    src.add_argument("--data", metavar="NAME", help="labelled data set: rotten_tomatoes, sst2, or a CSV path")
    src.add_argument("--csv", metavar="FILE", help="labelled CSV file (columns text and label)")
    p.add_argument("--split", default="validation", choices=("train", "validation", "test"),
                   help="split of --data / --csv ")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use the first N inputs of the split")
    p.add_argument("--truncate", action="store_true", help="truncate inputs longer than the model's positions")
    p.add_argument("--chip", metavar="NAME|FILE", help="also price every input on this chip (preset or TOML)")
    p.add_argument("--timing", choices=("analytic", "simpy"), default="analytic", help="chip timing model")
    p.add_argument("--pes", default="auto", metavar="auto|N", help="PEs to map the model onto (with --chip)")
    p.add_argument("--out", metavar="DIR", help="write converge_summary.json and converge_per_step.csv here")
    p.add_argument("--results", metavar="FILE", help="results file (JSON lines; default DIR/converge_results.jsonl)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="local worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run the points on this Dask scheduler")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# ---------------------------------------------------------------- arguments


def parse_positive_list(text: str | None, flag: str) -> list[float]:
    """``"0.5,1,2"`` -> ``[0.5, 1.0, 2.0]``; empty, non-numeric, non-finite or non-positive values are errors."""
    if text is None or not text.strip():
        raise EventsimError(f"{flag} needs at least one value (e.g. {flag} 0.5,1,2)")
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            v = float(part)
        except ValueError:
            raise EventsimError(f"{flag}: {part!r} is not a number") from None
        if not (math.isfinite(v) and v > 0):
            raise EventsimError(f"{flag} values must be finite numbers > 0, got {part or repr(part)}")
        values.append(v)
    return list(dict.fromkeys(values))


def threshold_settings(args: argparse.Namespace) -> tuple[str, list[float]]:
    """``("set", values)`` for --vth, ``("scale", factors)`` for --vth-scale (default scale 1)."""
    if args.vth is not None:
        return "set", parse_positive_list(args.vth, "--vth")
    if args.vth_scale is not None:
        return "scale", parse_positive_list(args.vth_scale, "--vth-scale")
    return "scale", [1.0]


def check_run_options(args: argparse.Namespace) -> None:
    if args.steps <= 0:
        raise EventsimError(f"--steps must be a positive integer, got {args.steps}")
    if not (math.isfinite(args.tol) and args.tol > 0):
        raise EventsimError(f"--tol must be a finite number > 0, got {args.tol}")
    if args.window < 1:
        raise EventsimError(f"--window must be at least 1, got {args.window}")
    if args.limit is not None and args.limit <= 0:
        raise EventsimError(f"--limit must be a positive integer, got {args.limit}")
    if args.workers < 1:
        raise EventsimError(f"--workers must be at least 1, got {args.workers}")


def default_checkpoint() -> str:
    from importlib import resources

    path = Path(str(resources.files("eventsim") / "data" / SHIPPED_ENCODER))
    if not path.is_file():
        raise EventsimError(f"no checkpoint given and the shipped encoder {SHIPPED_ENCODER} is not installed; "
                            f"give a spiking encoder checkpoint")
    return str(path)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Inputs:
    """Token ids per input, labels (or None) and what identifies them in a point's key."""

    ids: tuple[np.ndarray, ...]
    labels: tuple[int, ...] | None
    key: dict[str, Any]
    truncated: int = 0


def load_inputs(args: argparse.Namespace, manifest) -> Inputs:
    """Tokenise --text, or the --data / --csv split, with the checkpoint's tokenizer."""
    from eventsim.encoder_text import EncoderTokenizer

    tok = EncoderTokenizer(manifest)
    if args.text is not None:
        texts = list(args.text)
        if not all(t.strip() for t in texts):
            raise EventsimError("--text: an input is empty")
        labels = None
        key: dict[str, Any] = {"texts_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
                               "inputs": len(texts)}
    else:
        source = args.data if args.data is not None else args.csv
        if args.csv is not None and not Path(args.csv).is_file():
            raise EventsimError(f"--csv {args.csv}: no such file")
        from training.sentiment_data import load_sentiment

        data = load_sentiment(source)
        texts = list(data.texts(args.split))
        labels_arr = data.label_array(args.split)
        if args.limit is not None:
            texts, labels_arr = texts[: args.limit], labels_arr[: args.limit]
        if not texts:
            raise EventsimError(f"{source}: the {args.split} split has no rows")
        if manifest.labels and tuple(data.labels) != tuple(manifest.labels):
            raise EventsimError(f"{source}: classes {list(data.labels)} differ from the checkpoint's "
                                f"{list(manifest.labels)}")
        labels = tuple(int(x) for x in labels_arr)
        name = str(Path(source).resolve()) if args.csv is not None or Path(source).is_file() else source
        key = {"data": name, "data_sha256": data.content_hash, "split": args.split, "limit": args.limit,
               "inputs": len(texts)}
    ids, truncated = [], 0
    for i, text in enumerate(texts):
        enc = tok.encode(text, truncate=args.truncate, where=f"input {i + 1}")
        ids.append(enc.ids)
        truncated += enc.truncated > 0
    key["truncate"] = bool(args.truncate)
    return Inputs(tuple(ids), labels, key, truncated)


# ---------------------------------------------------------------- planning


@dataclass(frozen=True)
class PointTask:
    key: dict[str, Any]
    key_id: str
    checkpoint: str
    checkpoint_abs: str
    mode: str  # "set" or "scale"
    value: float
    steps: int
    tol: float
    window: int
    inputs: Inputs
    chip: str | None
    timing: str
    pes: str

    @property
    def label(self) -> str:
        what = "V_th" if self.mode == "set" else "V_th x"
        return f"{Path(self.checkpoint).stem} {what} {self.value:g}"


def plan_points(args: argparse.Namespace) -> list[PointTask]:
    """One task per threshold setting; the checkpoint and inputs are validated here."""
    from analysis.results import key_id
    from eventsim.checkpoint import read_manifest

    check_run_options(args)
    mode, values = threshold_settings(args)
    ckpt = args.checkpoint or default_checkpoint()
    path = Path(ckpt)
    if not path.is_file():
        raise EventsimError(f"{ckpt}: no such checkpoint file")
    manifest = read_manifest(path)
    if manifest.model_kind != "spiking_encoder":
        raise EventsimError(f"{ckpt}: holds a {manifest.model_kind!r}; eventsim converge runs spiking encoders")
    inputs = load_inputs(args, manifest)
    sha = file_sha256(path)
    tasks = []
    for v in values:
        key = {"sweep": KIND, "checkpoint": str(path.resolve()), "checkpoint_sha256": sha, "vth_mode": mode,
               "vth": v, "steps": args.steps, "tol": args.tol, "window": args.window, **inputs.key,
               "chip": args.chip}
        if args.chip is not None:
            key.update(timing=args.timing, pes=str(args.pes))
        tasks.append(PointTask(key, key_id(key), str(ckpt), str(path.resolve()), mode, v, args.steps, args.tol,
                               args.window, inputs, args.chip, args.timing, str(args.pes)))
    return tasks


# ---------------------------------------------------------------- one point


def _finite(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _floats(a) -> list[float | None]:
    return [_finite(x) for x in np.asarray(a, dtype=np.float64).ravel()]


def effective_thresholds(layers, mode: str, value: float) -> dict[str, float]:
    return {s.name: (value if mode == "set" else s.v_th * value) for s in layers if s.kind == "lif"}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_surrogates(layers, tensors, asr: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """Per spiking attention node: (output population, surrogate ``[T, N, size]``) from recorded ASRs.

    Nodes whose Q is neither a LIF nor a projection of LIFs, or that feed no single-input LIF, are skipped.
    """
    by_name = {s.name: s for s in layers}
    out = {}
    for spec in layers:
        if spec.kind != "spiking_attention":
            continue
        q = by_name[spec.q]
        if q.kind == "lif":
            qa = asr[q.name]
        elif q.kind == "linear" and all(by_name[i].kind == "lif" for i in q.inputs):
            a_in = sum(asr[i] for i in q.inputs)
            qa = a_in @ tensors[f"{q.name}.weight"].astype(np.float64)
            if q.bias:
                qa = qa + tensors[f"{q.name}.bias"].astype(np.float64)
        else:
            continue
        target = next((s for s in layers if s.kind == "lif" and s.inputs == (spec.name,)), None)
        if target is None:
            continue
        ka, va = asr[spec.k], asr[spec.v]
        T, N, size = qa.shape
        d = spec.head_dim
        y = np.empty((T, N, size))
        for h in range(spec.heads):
            sl = slice(h * d, (h + 1) * d)
            scores = spec.scale * np.einsum("tnc,tmc->tnm", qa[..., sl], ka[..., sl])
            p = _softmax(scores) if spec.softmax else scores
            y[..., sl] = np.einsum("tnm,tmc->tnc", p, va[..., sl])
        out[spec.name] = (target.name, y)
    return out


def projection_acs_per_step(layers, tensors, spikes: dict[str, np.ndarray]) -> np.ndarray:
    """``[T]`` ACs of the spike-fed projections (the formulas' scope), counted from the spikes and weight rows."""
    by_name = {s.name: s for s in layers}
    total = None
    for spec in layers:
        if spec.kind != "linear":
            continue
        nnz = np.count_nonzero(tensors[f"{spec.name}.weight"], axis=1).astype(np.int64)  # fan-out per input feature
        for src in spec.inputs:
            if by_name[src].kind != "lif":
                continue
            per_step = np.asarray(spikes[src], dtype=np.int64).sum(axis=1) @ nnz  # [T, size] @ [size] -> [T]
            total = per_step if total is None else total + per_step
    return total


def reduce_input(result, ck, thresholds: dict[str, float], tol: float, window: int) -> dict[str, Any]:
    """What one input's run contributes to a point (arrays per step, convergence steps, counts)."""
    from analysis.convergence import converged_steps, decision_step, settling_step

    layers = ck.manifest.layers
    by_name = {s.name: s for s in layers}
    pops = list(result.populations)
    T = int(result.steps)
    out: dict[str, Any] = {
        "asr_mean": np.asarray(result.asr_mean, dtype=np.float64),
        "spike_fraction": np.asarray(result.spike_fraction, dtype=np.float64),
        "steady_residual": np.asarray(result.steady_residual, dtype=np.float64),
        "logits": np.asarray(result.logits, dtype=np.float64),
        "t_star": converged_steps(np.asarray(result.asr_mean), tol, window),
        "t_settle": [settling_step(np.asarray(result.asr_mean)[:, p], SETTLE_REL) for p in range(len(pops))],
        "decision_step": decision_step(result.logits),
        "counts": {k: np.asarray(result.counts.get(k, np.zeros(T)), dtype=np.float64) for k in COUNT_KINDS},
        "counts_once": {k: float(v) for k, v in result.counts_once.items()},
        "positions": int(len(result.token_ids)),
    }
    node_counts = getattr(result, "node_counts", None)
    if node_counts is not None:  # ACs per node: the spike-fed projections are the linear nodes' ACs
        idx = [i for i, name in enumerate(result.node_names) if by_name[name].kind == "linear"]
        out["projection_acs"] = np.asarray(node_counts["acs"], dtype=np.float64)[:, idx].sum(axis=1)
    elif result.spikes is not None:
        out["projection_acs"] = projection_acs_per_step(layers, ck.tensors, result.spikes).astype(np.float64)
    attn = {}
    if result.asr is not None:
        for name, (target, y) in attention_surrogates(layers, ck.tensors, result.asr).items():
            spec = by_name[target]
            k = (1.0 - spec.gamma) if spec.decay_input else 1.0
            pred = np.clip(k * y / thresholds[target], 0.0, 1.0)
            diff = np.sqrt(np.mean((np.asarray(result.asr[target]) - pred) ** 2, axis=(1, 2)))
            final_current = result.current_mean_final.get(target)
            current_rms = (float(np.sqrt(np.mean((np.asarray(final_current) - y[-1]) ** 2)))
                           if final_current is not None else None)
            attn[name] = {"population": target, "asr": out["asr_mean"][:, pops.index(target)],
                          "difference_norm": diff, "current_rms_final": current_rms}
    out["attention"] = attn
    return out


def run_point(task: PointTask) -> dict[str, Any]:
    """Run every input at one threshold setting; returns the result point (JSON-able, no NaN)."""
    from analysis.energy_formulas import OpEnergy
    from eventsim import __version__
    from eventsim.checkpoint import load_checkpoint
    from eventsim.encoder_engine import EncoderEngine

    t0 = time.time()
    if file_sha256(task.checkpoint_abs) != task.key["checkpoint_sha256"]:
        raise EventsimError(f"{task.checkpoint}: the file changed after the run was planned; rerun")
    ck = load_checkpoint(task.checkpoint_abs)
    layers = ck.manifest.layers
    chip = mapping = placement = None
    options = argparse.Namespace(chip=task.chip, timing=task.timing, pes=task.pes, neurons_per_pe=None,
                                 gpu_watts=None, gpu_seconds_per_token=None)
    if task.chip is not None:
        from hw.cli_support import prepare_chip

        chip, placement, mapping = prepare_chip(ck, options)
        ops = OpEnergy.from_chip(chip)
    else:
        from hw.chip import load_chip

        ops = OpEnergy.from_chip(load_chip("cmos45"))  # the op-only convention of both papers
    if task.mode == "set":
        engine = EncoderEngine.from_checkpoint(ck, placement, vth=task.value)
    else:
        engine = EncoderEngine.from_checkpoint(ck, placement, vth_scale=task.value)
    thresholds = effective_thresholds(layers, task.mode, task.value)
    has_attention = any(s.kind == "spiking_attention" for s in layers)
    reduced, chip_summaries, chip_step_energy, chip_step_latency = [], [], [], []
    for ids in task.inputs.ids:
        result = engine.run(ids, task.steps, record_asr=has_attention, record_residual=True)
        reduced.append(reduce_input(result, ck, thresholds, task.tol, task.window))
        if chip is not None:
            from hw.cli_support import price_trace

            summary, rows, _ = price_trace(chip, mapping, result.trace, options)
            chip_summaries.append(summary)
            chip_step_energy.append([r["chip_energy_pj"] for r in rows])
            chip_step_latency.append([r["chip_latency_ns"] for r in rows])
        del result
    point = aggregate(task, ck, reduced, thresholds, ops)
    if chip is not None:
        e = np.mean(chip_step_energy, axis=0)
        lat = np.mean(chip_step_latency, axis=0)
        point["chip_result"] = {
            "chip": task.chip,
            "energy_pj_per_step": _floats(e),
            "latency_ns_per_step": _floats(lat),
            "energy_pj_per_input": float(e.sum()),
            "latency_ns_per_input": float(lat.sum()),
            "power_w": _finite(e.sum() / lat.sum() * 1e-3) if lat.sum() > 0 else None,  # pJ/ns = mW
            "energy_pj_per_input_by_part": {
                p: float(np.mean([s["energy_pj_per_token_by_part"][p] for s in chip_summaries]) * task.steps)
                for p in chip_summaries[0]["energy_pj_per_token_by_part"]},
            "pes_used": chip_summaries[0].get("pes_used"),
        }
        parts = point["chip_result"]["energy_pj_per_input_by_part"]
        if point["energy_decomposition"]["at_steps"] is not None:  # memory traffic of the whole run, per input
            point["energy_decomposition"]["at_steps"]["memory_traffic_pj"] = float(
                sum(parts.get(k, 0.0) for k in ("sram", "dram", "noc")))
    point.update(seconds=round(time.time() - t0, 3), finished_unix_s=round(time.time(), 3),
                 eventsim_version=__version__)
    return point


def aggregate(task: PointTask, ck, reduced: list[dict[str, Any]], thresholds: dict[str, float], ops) -> dict[str, Any]:
    """Mean over inputs of the per-step arrays; convergence summaries; accuracy; energy and formulas against T."""
    from analysis.convergence import accuracy_by_steps, summarize_steps
    from analysis.energy_formulas import (
        MAC_OVER_AC,
        counted_energy_pj,
        decompose,
        formula_terms,
        mean_rates,
        once_energy_pj,
        spikebert_formula,
        spikingbert_formula,
    )

    layers = ck.manifest.layers
    pops = [s.name for s in layers if s.kind == "lif"]
    T = task.steps
    n = len(reduced)
    mean = lambda key: np.mean([r[key] for r in reduced], axis=0)  # noqa: E731
    asr, sf, resid = mean("asr_mean"), mean("spike_fraction"), mean("steady_residual")
    counts = {k: np.mean([r["counts"][k] for r in reduced], axis=0) for k in COUNT_KINDS}
    once_keys = sorted({k for r in reduced for k in r["counts_once"]})
    counts_once = {k: float(np.mean([r["counts_once"].get(k, 0.0) for r in reduced])) for k in once_keys}
    energy_kind = counted_energy_pj(counts, ops)
    energy_step = sum(energy_kind.values())
    energy_once = once_energy_pj(counts_once, ops)
    energy_cum = energy_once + np.cumsum(energy_step)

    t_star = {p: [r["t_star"][i] for r in reduced] for i, p in enumerate(pops)}
    conv = {p: {**summarize_steps(v, T), "per_input": v} for p, v in t_star.items()}
    settle = {p: summarize_steps([r["t_settle"][i] for r in reduced], T) for i, p in enumerate(pops)}
    decisions = [r["decision_step"] for r in reduced]
    decision = {**summarize_steps(decisions, T), "per_input": decisions}

    def horizon_median(v):
        return T if any(s is None for s in v) and sum(s is None for s in v) * 2 >= len(v) else \
            int(math.ceil(np.median([T if s is None else s for s in v])))

    t_conv = max((horizon_median(v) for v in t_star.values()), default=T)
    accuracy = None
    if task.inputs.labels is not None:
        accuracy = accuracy_by_steps([r["logits"] for r in reduced], list(task.inputs.labels))

    positions = float(np.mean([r["positions"] for r in reduced]))
    # Formulas at every T' = 1..T from each input's rates over its first T' steps (terms depend on its length),
    # averaged over inputs; e = 5.1 / (mean Norm#OPS).
    per_input_terms = [formula_terms(layers, r["positions"]) for r in reduced]
    sb_norm, sb_energy, spb_energy = np.zeros(T), np.zeros(T), np.zeros(T)
    for t in range(1, T + 1):
        for r, terms in zip(reduced, per_input_terms):
            rates = mean_rates({p: r["spike_fraction"][:, i] for i, p in enumerate(pops)}, t)
            sb = spikingbert_formula(terms, rates, t)
            sb_norm[t - 1] += sb["norm_ops"] / n
            sb_energy[t - 1] += sb["snn_energy_pj"] / n
            spb_energy[t - 1] += spikebert_formula(terms, rates, t)["energy_pj"] / n
    sb_eff = [MAC_OVER_AC / x if x > 0 else None for x in sb_norm]
    ann_energy = float(np.mean([spikingbert_formula(terms, {p: 0.0 for p in pops}, 1)["ann_energy_pj"]
                                for terms in per_input_terms]))

    def decomposition_at(t: int) -> dict[str, Any] | None:
        if any("projection_acs" not in r for r in reduced):
            return None
        totals = {k: float(counts[k][:t].sum()) for k in COUNT_KINDS}
        proj = float(np.mean([r["projection_acs"][:t].sum() for r in reduced]))
        d = decompose(totals, energy_once, proj, float(sb_energy[t - 1]), ops)
        d["steps"] = t
        return d

    attn_names = sorted({a for r in reduced for a in r["attention"]})
    attention = {}
    for a in attn_names:
        rs = [r["attention"][a] for r in reduced if a in r["attention"]]
        cur = [x["current_rms_final"] for x in rs if x["current_rms_final"] is not None]
        attention[a] = {"population": rs[0]["population"],
                        "asr": _floats(np.mean([x["asr"] for x in rs], axis=0)),
                        "difference_norm": _floats(np.mean([x["difference_norm"] for x in rs], axis=0)),
                        "current_rms_final": _finite(np.mean(cur)) if cur else None}

    sizes = {s.name: s.size for s in layers if s.kind == "lif"}
    point: dict[str, Any] = {
        "key": task.key,
        "checkpoint": task.checkpoint,
        "name": Path(task.checkpoint).stem,
        "style": ck.manifest.provenance.get("style"),
        "vth_mode": task.mode,
        "vth": task.value,
        "thresholds": thresholds,
        "steps": T,
        "tol": task.tol,
        "window": task.window,
        "inputs": n,
        "labelled": task.inputs.labels is not None,
        "truncated_inputs": task.inputs.truncated,
        "positions_mean": positions,
        "populations": pops,
        "population_sizes": [sizes[p] for p in pops],
        "asr_mean": {p: _floats(asr[:, i]) for i, p in enumerate(pops)},
        "spike_fraction": {p: _floats(sf[:, i]) for i, p in enumerate(pops)},
        "steady_residual": {p: _floats(resid[:, i]) for i, p in enumerate(pops)},
        "asr_final_mean": float(np.mean(asr[-1])),
        "spike_rate_mean": float(np.average(sf.mean(axis=0), weights=[sizes[p] for p in pops])),
        "attention": attention,
        "steps_to_converge": conv,
        "settling_steps": settle,
        "settling_rel": SETTLE_REL,
        "decision": decision,
        "t_conv": t_conv,
        "t_conv_rule": "max over sub-layers of the median steps-to-converge over inputs (the horizon when half "
                       "or more of the inputs did not converge)",
        "accuracy_by_steps": None if accuracy is None else _floats(accuracy),
        "counts_per_step": {k: _floats(v) for k, v in counts.items()},
        "counts_once": counts_once,
        "op_energy_pj": ops.to_dict(),
        "energy_pj_per_step": _floats(energy_step),
        "energy_pj_per_step_by_kind": {k: _floats(v) for k, v in energy_kind.items()},
        "energy_pj_once": energy_once,
        "energy_pj_cumulative": _floats(energy_cum),
        "energy_pj_per_input": float(energy_cum[-1]),
        "energy_pj_at_t_conv": float(energy_cum[t_conv - 1]),
        "power_pj_per_step_mean": float(energy_step.mean()),
        "formulas": {
            "spikingbert_norm_ops": _floats(sb_norm),
            "spikingbert_efficiency": [None if x is None else _finite(x) for x in sb_eff],
            "spikingbert_energy_pj": _floats(sb_energy),
            "spikingbert_ann_energy_pj": ann_energy,
            "spikebert_energy_pj": _floats(spb_energy),
        },
        "energy_decomposition": {"at_t_conv": decomposition_at(t_conv), "at_steps": decomposition_at(T)},
        "chip_result": None,
    }
    return point


# ---------------------------------------------------------------- execution


def point_line(p: dict[str, Any]) -> str:
    what = f"V_th {p['vth']:g}" if p["vth_mode"] == "set" else f"V_th x{p['vth']:g}"
    conv = p["steps_to_converge"]
    slowest = max(conv, key=lambda k: conv[k]["mean_steps_censored"] or 0) if conv else None
    acc = p["accuracy_by_steps"]
    parts = [f"{p['name']} {what}: mean ASR {p['asr_final_mean']:.3f}", f"T_conv {p['t_conv']}"]
    if slowest:
        parts.append(f"slowest {slowest} ({conv[slowest]['converged']}/{conv[slowest]['inputs']} converged)")
    parts.append(f"decision settles at {p['decision']['mean_steps']:.1f} steps")
    if acc is not None:
        parts.append(f"accuracy {acc[p['t_conv'] - 1]:.3f} at T_conv, {acc[-1]:.3f} at {p['steps']}")
    parts.append(f"{p['energy_pj_at_t_conv'] / 1e6:,.3f} uJ/input at T_conv, "
                 f"{p['power_pj_per_step_mean'] / 1e3:,.1f} nJ/step")
    if p.get("chip_result"):
        c = p["chip_result"]
        parts.append(f"chip {c['chip']} {c['energy_pj_per_input'] / 1e6:,.3f} uJ/input")
    return ", ".join(parts)


def write_outputs(out: Path, points: list[dict[str, Any]], interrupted: bool = False) -> list[Path]:
    """``converge_per_step.csv`` (one row per point, population, step) and ``converge_summary.json`` (the
    points), committed together as one output set (a kill never leaves them disagreeing)."""
    import csv

    from eventsim.atomic_io import OutputSet

    with OutputSet(out, index_name=SUMMARY_FILE) as out_set:
        with open(out_set.path(PER_STEP_FILE), "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["checkpoint", "vth_mode", "vth", "population", "step", "asr_mean", "spike_fraction",
                        "steady_residual", "energy_pj_step", "accuracy"])
            for p in points:
                acc = p["accuracy_by_steps"]
                for pop in p["populations"]:
                    for t in range(p["steps"]):
                        w.writerow([p["name"], p["vth_mode"], p["vth"], pop, t + 1, p["asr_mean"][pop][t],
                                    p["spike_fraction"][pop][t], p["steady_residual"][pop][t],
                                    p["energy_pj_per_step"][t], "" if acc is None else acc[t]])
        return out_set.commit(index={"points": points}, interrupted=interrupted)


def run(args: argparse.Namespace) -> int:
    """The ``eventsim converge`` command."""
    from analysis.results import ResultsWriter, read_results
    from analysis.sweep import connect_dask

    if args.out:
        from eventsim.atomic_io import ensure_out_dir

        ensure_out_dir(args.out)  # a bad --out fails before any work
    results = args.results or (str(Path(args.out) / RESULTS_FILE) if args.out else None)
    if results is not None:
        read_results(results, KIND)  # a foreign or corrupt file stops the run before any work
    tasks = plan_points(args)
    if args.chip:
        from hw.chip import load_chip

        load_chip(args.chip)
    client = connect_dask(args.scheduler) if args.scheduler else None
    try:
        if results is None:
            return _run(args, tasks, client, None)
        with ResultsWriter(results, KIND) as writer:
            if writer.torn_saved_to is not None:
                print(f"eventsim: the last line of {results} was cut off by a crash; its bytes are kept in "
                      f"{writer.torn_saved_to} and that point runs again", file=sys.stderr)
            return _run(args, tasks, client, writer)
    finally:
        if client is not None:
            client.close()


def _run(args, tasks: list[PointTask], client, writer) -> int:
    from tqdm import tqdm

    from analysis.sweep import execute
    from eventsim.command import DeferInterrupts

    done = {p["key_id"]: p for p in writer.content.points} if writer is not None else {}
    todo = [t for t in tasks if t.key_id not in done]
    where = f"Dask scheduler {args.scheduler}" if args.scheduler else f"{min(args.workers, max(1, len(todo)))} process(es)"
    print(f"converge: {len(tasks)} points ({len(tasks[0].inputs.ids)} inputs x {args.steps} steps each), "
          f"{len(tasks) - len(todo)} already stored, {len(todo)} to run on {where}", file=sys.stderr)
    finished: dict[str, dict[str, Any]] = {t.key_id: done[t.key_id] for t in tasks if t.key_id in done}
    failures: list[str] = []
    bar = tqdm(total=len(todo), unit="point", desc="converge", disable=args.no_progress or not todo)
    interrupted = False
    try:
        for outcome in execute(todo, args.workers, client, point_fn=run_point, key_prefix="eventsim-converge"):
            if outcome.point is not None:
                if writer is not None:
                    with DeferInterrupts():  # never tear a results line
                        writer.append(outcome.point)
                finished[outcome.task.key_id] = outcome.point
                tqdm.write(point_line(outcome.point), file=sys.stderr)
            else:
                failures.append(f"{outcome.task.label}: {outcome.error}")
                tqdm.write(f"eventsim: point {outcome.task.label} failed: {outcome.error}", file=sys.stderr)
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    bar.close()
    points = [finished[t.key_id] for t in tasks if t.key_id in finished]
    if args.out and points:
        from analysis.results import key_id

        for p in points:
            p.setdefault("key_id", key_id(p["key"]))
        for path in write_outputs(Path(args.out), points, interrupted):
            print(f"wrote {path}")
    if interrupted:
        where = f"in {writer.path}" if writer is not None else "lost (no --results or --out)"
        print(f"eventsim: converge interrupted; finished points are {where}; rerun the same command to resume",
              file=sys.stderr)
        return 1
    if failures:
        print(f"eventsim: error: {len(failures)} of {len(todo)} points failed (first: {failures[0]})", file=sys.stderr)
        return 2
    return 0
