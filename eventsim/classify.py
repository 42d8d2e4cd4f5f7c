"""``eventsim classify``: run a spiking-encoder checkpoint on text, step by step, and report what it cost.

For each input: the predicted label and class probabilities (softmax of the
classifier's read-out of the ASR after the last step), the ASR of every LIF
population at the last step, ACs, MACs and nonlinear operations against their
dense counts (every neuron spiking, every weight kept), and with ``--chip`` the
energy and latency of the input on a chip. ``--out DIR`` writes
``summary.json`` and ``per_step.csv`` (input, step, population, ASR, counts).
"""

from __future__ import annotations

import csv
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from eventsim.atomic_io import OutputSet, dumps_json
from eventsim.command import EXIT_INTERRUPTED, DeferInterrupts
from eventsim.errors import EventsimError
from eventsim.validate import threads_count

DEFAULT_ENCODER = "spiking_encoder_rt.safetensors"
PER_STEP_FILE = "per_step.csv"
DEFAULT_STEPS = 16
NONLINEAR_KEYS = ("exp", "div", "layernorm", "gelu")
REPORTED_KEYS = ("acs", "macs", "adds", "muls", *NONLINEAR_KEYS, "neuron_updates", "spikes")


def default_encoder() -> str:
    return str(resources.files("eventsim") / "data" / DEFAULT_ENCODER)


def add_parser(sub) -> None:
    """The ``classify`` sub-command's options (chip options come from the caller's ``add_chip_arguments``)."""
    from eventsim.cli import add_chip_arguments

    p = sub.add_parser(
        "classify",
        help="run a spiking-encoder checkpoint on text for T time steps and count every spike and operation",
        description="Classify text with a spiking encoder: predicted label and probabilities, ASR per population "
        "at the last step, ACs, MACs and nonlinear operations against dense counts; energy and latency with "
        "--chip; summary.json and per_step.csv with --out.",
    )
    p.add_argument("checkpoint", nargs="?", default=None,
                   help=f"encoder checkpoint (.safetensors); default: the shipped {DEFAULT_ENCODER}")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="one input text")
    src.add_argument("--corpus", metavar="FILE.csv", help="CSV with a 'text' column (and optionally 'label')")
    p.add_argument("--steps", type=int, default=None, metavar="T",
                   help=f"time steps per input (default: the checkpoint's, else {DEFAULT_STEPS})")
    th = p.add_mutually_exclusive_group()
    th.add_argument("--vth", type=float, default=None, metavar="X",
                    help="threshold of the first LIF population; the others keep their ratio to it")
    th.add_argument("--vth-scale", type=float, default=1.0, metavar="S", help="multiply every threshold by S")
    p.add_argument("--truncate", action="store_true", help="cut inputs longer than the model's positions")
    p.add_argument("--out", metavar="DIR", help="write summary.json and per_step.csv here")
    p.add_argument("--json", action="store_true", help="print summary.json to stdout instead of the tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--jobs", type=threads_count, default=1, metavar="N",
                   help="inputs run N at a time on N threads (N cores); every result is the same as with 1")
    add_chip_arguments(p)


def read_inputs(args) -> list[tuple[str, str | None]]:
    """``(text, label or None)`` pairs from ``--text`` or ``--corpus``."""
    if args.text is not None:
        return [(args.text, None)]
    path = Path(args.corpus)
    if not path.is_file():
        raise EventsimError(f"{path}: no such CSV file")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "text" not in reader.fieldnames:
                raise EventsimError(f"{path}: the CSV needs a 'text' column (found {reader.fieldnames})")
            rows = [(r["text"] or "", r.get("label")) for r in reader]
    except UnicodeDecodeError as exc:
        raise EventsimError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if not rows:
        raise EventsimError(f"{path}: no rows")
    return rows


def load_encoder(path: str | None):
    from eventsim.checkpoint import load_checkpoint

    if path is None:
        path = default_encoder()
        if not Path(path).is_file():
            raise EventsimError(
                f"no checkpoint given and the default {DEFAULT_ENCODER} is not installed yet; "
                f"pass an encoder checkpoint (e.g. one written by eventsim.synthetic_encoder.write_random_encoder)"
            )
    checkpoint = load_checkpoint(path)
    if checkpoint.manifest.model_kind != "spiking_encoder":
        raise EventsimError(
            f"{path}: is a {checkpoint.manifest.model_kind.replace('_', ' ')}, not a spiking encoder; "
            f"use 'eventsim simulate' for it"
        )
    return checkpoint


def run(args) -> int:
    from tqdm import tqdm

    from eventsim.encoder_engine import EncoderEngine
    from eventsim.encoder_text import EncoderTokenizer

    checkpoint = load_encoder(args.checkpoint)
    manifest = checkpoint.manifest
    steps = args.steps if args.steps is not None else (manifest.steps or DEFAULT_STEPS)
    if steps <= 0:
        raise EventsimError(f"--steps must be a positive integer, got {steps}")
    inputs = read_inputs(args)
    tokenizer = EncoderTokenizer(manifest)
    encoded = [tokenizer.encode(text, args.truncate, where=f"input {i + 1}") for i, (text, _) in enumerate(inputs)]
    chip = mapping = None
    placement = None
    if args.chip:
        from hw.cli_support import prepare_chip

        chip, placement, mapping = prepare_chip(checkpoint, args)
    engine = EncoderEngine.from_checkpoint(checkpoint, placement, vth_scale=args.vth_scale, vth=args.vth)
    labels = manifest.labels or tuple(f"class_{i}" for i in range(manifest.layers[-1].num_classes))
    out_set = OutputSet(args.out) if args.out else None  # a bad --out fails before any work
    records, step_rows = [], []
    bar = tqdm(total=len(encoded), unit="input", disable=args.no_progress or args.json or len(encoded) < 2,
               desc="classify")
    interrupted = False
    results = engine.run_many((enc.ids for enc in encoded), steps, jobs=args.jobs, record_residual=True)
    try:
        for i, ((_text, gold), enc, res) in enumerate(zip(inputs, encoded, results)):
            rec = input_record(res, labels, steps, enc, gold)
            if chip is not None:
                from hw.cli_support import price_trace

                chip_summary, _, _ = price_trace(chip, mapping, res.trace, args)
                rec["chip"] = per_input_chip(chip_summary, steps)
            records.append(rec)
            step_rows += per_step_rows(i, res)
            bar.update(1)
    except KeyboardInterrupt:
        if not records:
            raise
        interrupted = True  # keep the finished inputs
    finally:
        results.close()  # inputs not yet started are dropped; those running finish first
        bar.close()
    with DeferInterrupts():
        summary = summarize(records, checkpoint, steps, engine)
        summary["interrupted"] = interrupted
        written = []
        if out_set is not None:
            with out_set:
                with open(out_set.path(PER_STEP_FILE), "w", newline="", encoding="utf-8") as fh:
                    writer = csv.DictWriter(fh, fieldnames=list(step_rows[0]))
                    writer.writeheader()
                    writer.writerows(step_rows)
                written = out_set.commit(index=summary, interrupted=interrupted)
    if args.json:
        print(dumps_json(summary, indent=2))
    else:
        print(format_summary(summary))
        for p in written:
            print(f"wrote {p}")
    if interrupted:
        print(f"eventsim: classify interrupted after {len(records)} of {len(encoded)} inputs; "
              f"the finished ones are reported", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def input_record(res, labels, steps: int, enc, gold) -> dict:
    """One input's prediction, final ASR per population, and counts per input against dense."""
    probs = res.probabilities
    per_input = {k: int(res.counts[k].sum()) + int(res.counts_once.get(k, 0)) for k in REPORTED_KEYS}
    dense = {k: int(res.dense[k]) * steps + int(res.counts_once.get(k, 0)) for k in REPORTED_KEYS}
    rec = {
        "tokens": len(enc.tokens),
        "truncated_tokens": enc.truncated,
        "predicted": labels[res.predicted],
        "probabilities": {lab: float(p) for lab, p in zip(labels, probs)},
        "asr_last_step": {name: float(res.asr_mean[-1, i]) for i, name in enumerate(res.populations)},
        "counts": per_input,
        "dense_counts": dense,
        "nonlinear_ops": sum(per_input[k] for k in NONLINEAR_KEYS),
        "dense_nonlinear_ops": sum(dense[k] for k in NONLINEAR_KEYS),
    }
    if gold is not None and gold != "":
        rec["label"] = gold
    return rec


def per_input_chip(chip_summary: dict, steps: int) -> dict:
    """A trace's steps are one input's time steps: per-token figures times T are per input."""
    return {
        "chip": chip_summary["chip"],
        "pes_used": chip_summary["pes_used"],
        "energy_pj_per_input": chip_summary["energy_pj_per_token"] * steps,
        "latency_ns_per_input": chip_summary["latency_ns_mean"] * steps,
        "energy_pj_per_input_by_part": {k: v * steps for k, v in chip_summary["energy_pj_per_token_by_part"].items()},
    }


def per_step_rows(i: int, res) -> list[dict]:
    rows = []
    pop_index = {name: res.node_names.index(name) for name in res.populations}
    for t in range(res.steps):
        for p, name in enumerate(res.populations):
            j = pop_index[name]
            rows.append({
                "input": i + 1, "step": t + 1, "population": name,
                "asr": float(res.asr_mean[t, p]), "spike_fraction": float(res.spike_fraction[t, p]),
                "steady_residual": float(res.steady_residual[t, p]),
                "spikes": int(res.node_counts["spikes"][t, j]),
                "step_acs": int(res.counts["acs"][t]), "step_macs": int(res.counts["macs"][t]),
                "step_nonlinear_ops": int(sum(res.counts[k][t] for k in NONLINEAR_KEYS)),
            })
    return rows


def summarize(records: list[dict], checkpoint, steps: int, engine) -> dict:
    mean = lambda key: {k: float(np.mean([r[key][k] for r in records])) for k in records[0][key]}  # noqa: E731
    summary = {
        "checkpoint": checkpoint.path,
        "inputs": len(records),
        "steps": steps,
        "vth_factor": engine.net.vth_factor,
        "counts_per_input_mean": mean("counts"),
        "dense_counts_per_input_mean": mean("dense_counts"),
        "records": records,
    }
    gold = [r for r in records if "label" in r]
    if gold:
        summary["accuracy"] = float(np.mean([r["label"] == r["predicted"] for r in gold]))
    if "chip" in records[0]:
        summary["chip"] = {
            "chip": records[0]["chip"]["chip"],
            "pes_used": records[0]["chip"]["pes_used"],
            "energy_pj_per_input_mean": float(np.mean([r["chip"]["energy_pj_per_input"] for r in records])),
            "latency_ns_per_input_mean": float(np.mean([r["chip"]["latency_ns_per_input"] for r in records])),
        }
    return summary


def format_summary(s: dict) -> str:
    lines = []
    for i, r in enumerate(s["records"]):
        probs = ", ".join(f"{k} {v:.3f}" for k, v in r["probabilities"].items())
        gold = f" (label {r['label']})" if "label" in r else ""
        lines.append(f"input {i + 1}: {r['tokens']} tokens, T = {s['steps']}: predicted {r['predicted']}{gold}; {probs}")
        if len(s["records"]) == 1:
            lines.append("  ASR at the last step:")
            for name, a in r["asr_last_step"].items():
                lines.append(f"    {name:<28} {a:7.2%}")
            c, d = r["counts"], r["dense_counts"]
            for key, label in (("acs", "ACs"), ("macs", "MACs")):
                lines.append(f"  {label:<14} {c[key]:>14,} of {d[key]:>14,} dense ({_ratio(c[key], d[key])})")
            lines.append(f"  {'nonlinear ops':<14} {r['nonlinear_ops']:>14,} of {r['dense_nonlinear_ops']:>14,} dense "
                         f"(exp {c['exp']:,}, div {c['div']:,}, layernorm {c['layernorm']:,}, gelu {c['gelu']:,})")
            if "chip" in r:
                ch = r["chip"]
                lines.append(f"  chip {ch['chip']}: {ch['pes_used']} PEs, energy {ch['energy_pj_per_input'] / 1e6:,.3f} uJ, "
                             f"latency {ch['latency_ns_per_input'] / 1e3:,.1f} us per input")
    if len(s["records"]) > 1:
        c, d = s["counts_per_input_mean"], s["dense_counts_per_input_mean"]
        lines.append(f"mean per input: ACs {c['acs']:,.0f} of {d['acs']:,.0f} dense, MACs {c['macs']:,.0f} of "
                     f"{d['macs']:,.0f} dense")
        if "accuracy" in s:
            lines.append(f"accuracy {s['accuracy']:.2%}")
        if "chip" in s:
            ch = s["chip"]
            lines.append(f"chip {ch['chip']}: energy {ch['energy_pj_per_input_mean'] / 1e6:,.3f} uJ, latency "
                         f"{ch['latency_ns_per_input_mean'] / 1e3:,.1f} us per input (mean)")
    return "\n".join(lines)


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.1%}" if b else "n/a"
