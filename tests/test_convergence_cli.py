"""``eventsim converge`` and ``eventsim plot converge`` on a miniature synthetic encoder.

One run (5 thresholds x 4 labelled inputs x 80 steps, a few seconds) feeds every
test here: the data behind each figure is recomputed independently from the
engine where it can be, the direction of ASR and steps-to-converge against V_th
is asserted on the recorded data, and bad input is refused with one line.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analysis.converge import KIND, RESULTS_FILE, SUMMARY_FILE
from analysis.convergence import accuracy_by_steps, converged_step
from analysis.energy_formulas import OpEnergy, counted_energy_pj, once_energy_pj
from analysis.plots_converge import FIGURES, FORMATS, TABLE_STEM, figure_data, table_rows
from analysis.results import ResultsWriter, read_results
from eventsim.cli import main
from hw.chip import load_chip

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
STEPS = 80
WORDS = "good bad fine great awful dull fun sad nice poor".split()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from eventsim.synthetic_encoder import write_random_encoder

    root = tmp_path_factory.mktemp("converge")
    ckpt = write_random_encoder(root / "enc.safetensors", style="spikingbert", vocab_size=120, max_positions=12,
                                hidden=16, heads=2, blocks=1, seed=0)
    rng = np.random.default_rng(0)
    rows = ["text,label"] + [f"{' '.join(rng.choice(WORDS, 3))} {i},{('negative', 'positive')[i % 2]}"
                             for i in range(20)]
    data = root / "tiny.csv"
    data.write_text("\n".join(rows) + "\n")
    out = root / "out"
    argv = ["converge", ckpt, "--vth-scale", ",".join(map(str, SCALES)), "--steps", str(STEPS), "--tol", "1e-3",
            "--csv", str(data), "--split", "train", "--limit", "4", "--truncate", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    figs = root / "figs"
    assert main(["plot", "converge", str(out / RESULTS_FILE), "--out", str(figs)]) == 0
    points = read_results(out / RESULTS_FILE, KIND).points
    return {"ckpt": ckpt, "csv": data, "out": out, "figs": figs, "points": points, "argv": argv}


def engine_runs(study, scale: float):
    """The 4 inputs of the study run again directly through the engine, with their labels."""
    from eventsim.checkpoint import load_checkpoint
    from eventsim.encoder_engine import EncoderEngine
    from eventsim.encoder_text import EncoderTokenizer
    from training.sentiment_data import load_sentiment

    ck = load_checkpoint(study["ckpt"])
    data = load_sentiment(str(study["csv"]))
    texts, labels = data.texts("train")[:4], data.label_array("train")[:4]
    tok = EncoderTokenizer(ck.manifest)
    engine = EncoderEngine.from_checkpoint(ck, vth_scale=scale)
    return [engine.run(tok.encode(t, truncate=True).ids, STEPS) for t in texts], list(labels)


def by_scale(points, scale):
    return next(p for p in points if p["vth"] == scale)


def test_one_point_per_threshold_stored_and_strict_json(study):
    points = study["points"]
    assert sorted(p["vth"] for p in points) == list(SCALES)
    assert all(p["key"]["sweep"] == KIND and p["inputs"] == 4 and p["steps"] == STEPS for p in points)
    text = (study["out"] / RESULTS_FILE).read_text()
    assert "NaN" not in text and "Infinity" not in text
    summary = json.loads((study["out"] / SUMMARY_FILE).read_text())
    assert len(summary["points"]) == 5
    assert (study["out"] / "converge_per_step.csv").read_text().count("\n") == 1 + 5 * STEPS * 7  # 7 populations


def test_rerun_skips_finished_points(study, capsys):
    assert main(study["argv"]) == 0
    assert "5 already stored, 0 to run" in capsys.readouterr().err
    assert len(read_results(study["out"] / RESULTS_FILE, KIND).points) == 5


def test_every_figure_and_the_table_are_written(study):
    for stem in FIGURES:
        for ext in FORMATS:
            assert (study["figs"] / f"{stem}.{ext}").stat().st_size > 1000
    for ext in ("csv", "md"):
        assert (study["figs"] / f"{TABLE_STEM}.{ext}").is_file()


def test_asr_and_convergence_figures_hold_what_the_engine_records(study):
    points = study["points"]
    data = figure_data(points)
    ref = by_scale(points, 1.0)
    results, labels = engine_runs(study, 1.0)
    pops = list(results[0].populations)
    asr = np.mean([r.asr_mean for r in results], axis=0)  # [T, P], mean over the 4 inputs
    # Fig. 2a: one panel per threshold, one line per sub-layer, the engine's mean ASR.
    assert list(data["asr_vs_step"]) == ["V_th x0.25", "V_th x0.5", "V_th x1", "V_th x2", "V_th x4"]
    panel = data["asr_vs_step"]["V_th x1"]
    assert list(panel) == pops
    for i, pop in enumerate(pops):
        np.testing.assert_allclose(panel[pop]["y"], asr[:, i], rtol=0, atol=1e-12)
    # Steps to converge: the rule applied to each input's own series, median over inputs.
    for i, pop in enumerate(pops):
        steps = [converged_step(r.asr_mean[:, i], 1e-3) for r in results]
        assert ref["steps_to_converge"][pop]["per_input"] == steps
        done = [s for s in steps if s is not None]
        expected = float(np.median(done)) if done else None
        assert data["steps_to_converge_vs_vth"][pop]["y"][2] == expected
    # Fig. 4b: final mean ASR per sub-layer against V_th.
    assert data["asr_vs_vth"][pops[0]]["x"] == list(SCALES)
    assert data["asr_vs_vth"][pops[0]]["y"][2] == pytest.approx(asr[-1, 0])


def test_accuracy_efficiency_and_energy_figures_recomputed_from_the_engine(study):
    points = study["points"]
    data = figure_data(points)
    ref = by_scale(points, 1.0)

    results, labels = engine_runs(study, 1.0)
    acc = accuracy_by_steps([r.logits for r in results], labels)
    # Fig. 4a / 5b: accuracy after T' steps = fraction of inputs whose argmax after T' equals the label.
    np.testing.assert_allclose(data["accuracy_efficiency_vs_tconv"]["accuracy"]["y"], acc)
    np.testing.assert_allclose(data["accuracy_vs_steps"]["V_th x1"]["y"], acc)
    assert set(np.round(acc * 4, 9)) <= {0, 1, 2, 3, 4}
    # e(T') = 5.1 / Norm#OPS(T'), Norm#OPS = sum_l r_l T' OPS_l / sum_l OPS_l over the spike-fed projections;
    # every projection of this SpikingBERT block reads one LIF: q, k, v read embedding_lif (16 x 16 each),
    # il1.dense reads attn_lif (16 x 16), il2.dense reads il1_lif (16 x 64), out.dense reads il2_lif (64 x 16).
    pops = list(results[0].populations)
    reads = {"embedding_lif": 3 * 256, "blocks.0.attn_lif": 256, "blocks.0.il1_lif": 1024, "blocks.0.il2_lif": 1024}
    T = 16
    norm = np.mean([sum(w * r.spike_fraction[:T, pops.index(p)].mean() * T for p, w in reads.items())
                    / sum(reads.values()) for r in results])
    assert data["accuracy_efficiency_vs_tconv"]["efficiency e"]["y"][T - 1] == pytest.approx(5.1 / norm)
    # Energy per input: once-per-input ops plus the per-step counted ops, at the cmos45 prices.
    ops = OpEnergy.from_chip(load_chip("cmos45"))
    per_input = [once_energy_pj(r.counts_once, ops) + sum(v.sum() for v in counted_energy_pj(r.counts, ops).values())
                 for r in results]
    series = data["energy_power_vs_vth"][f"energy per input at {STEPS} steps (uJ)"]
    assert series["y"][2] == pytest.approx(np.mean(per_input) / 1e6)
    power = data["energy_power_vs_vth"]["mean power (nJ per step)"]["y"][2]
    steps_energy = np.mean([sum(v.sum() for v in counted_energy_pj(r.counts, ops).values()) for r in results])
    assert power == pytest.approx(steps_energy / STEPS / 1e3)
    # The decomposition adds up to the counted energy.
    d = ref["energy_decomposition"]["at_steps"]
    assert d["counted_energy_pj"] == pytest.approx(ref["energy_pj_per_input"])
    assert d["projection_rate_and_sparsity_pj"] == pytest.approx(0.0, abs=1e-6)  # dense weights, IF neurons


def test_attention_difference_norm_figure(study):
    data = figure_data(study["points"])
    series = data["attention_asr_difference_norm"]
    asr, diff = series["blocks.0.attn ASR"], series["blocks.0.attn difference norm"]
    assert asr["axis"] == "left" and diff["axis"] == "right" and len(diff["y"]) == STEPS
    ref = by_scale(study["points"], 1.0)
    assert asr["y"] == ref["asr_mean"]["blocks.0.attn_lif"]
    # The simulated ASR approaches the steady state at the simulated inputs: the norm shrinks over the run.
    assert np.mean(diff["y"][-10:]) < 0.5 * max(diff["y"][:10])


def test_table_rows_per_threshold_and_t_conv(study):
    points = study["points"]
    rows = table_rows(points)
    ref = by_scale(points, 1.0)
    mine = [r for r in rows if r["vth"] == 1.0]
    grid = sorted({1, 2, 4, 8, 16, 32, 64, STEPS, ref["t_conv"]})
    assert [r["t_conv"] for r in mine] == grid
    r16 = next(r for r in mine if r["t_conv"] == 16)
    assert r16["energy_pj_per_input"] == ref["energy_pj_cumulative"][15]
    assert r16["acs_per_input"] == pytest.approx(sum(ref["counts_per_step"]["acs"][:16]))
    assert r16["accuracy"] == ref["accuracy_by_steps"][15]


def test_mean_asr_falls_and_convergence_first_lengthens_then_shortens_as_v_th_rises(study):
    # Recorded data of 5 thresholds (scale 0.25 ... 4 of the checkpoint's V_th = 1), 4 inputs, 80 steps.
    points = sorted(study["points"], key=lambda p: p["vth"])
    pops = points[0]["populations"]
    # Mean ASR falls with V_th, in every sub-layer: a neuron needs more integrated input per spike.
    rate = [p["spike_rate_mean"] for p in points]
    assert all(a > b for a, b in zip(rate, rate[1:]))
    for pop in pops:
        final = [p["asr_mean"][pop][-1] for p in points]
        assert all(a >= b for a, b in zip(final, final[1:])), pop
    # Steps to converge under the absolute rule (|a[t] - a[t-1]| < 1e-3), mean over sub-layers and inputs:
    # longer from x0.25 to x1 (the published direction, SpikingBERT Fig. 4b: fewer, later spikes, and the
    # first spike of a layer waits for V_th / I steps of integration), then shorter again at x4, where
    # most layers are nearly silent: an ASR of 0.005 cannot move by 1e-3 per step for long, so the absolute
    # rule calls it converged early. Measured: see docs/convergence.md.
    steps = [np.mean([p["steps_to_converge"][pop]["mean_steps_censored"] for pop in pops]) for p in points]
    assert steps[0] < steps[1] < steps[2]
    assert steps[4] < max(steps)
    # The settling step (within 10 % of the last ASR) is scale-free and lengthens with V_th throughout for the
    # layers that stay active (>= 1 % ASR at x4): the published direction without the near-silence artefact.
    for pop in pops:
        if points[-1]["asr_mean"][pop][-1] >= 0.01:
            settle = [p["settling_steps"][pop]["mean_steps"] for p in points]
            assert settle[0] < settle[-1], pop
    assert np.mean([points[-1]["settling_steps"][pop]["mean_steps"] for pop in pops]) > \
        np.mean([points[0]["settling_steps"][pop]["mean_steps"] for pop in pops])


def test_interrupted_run_keeps_finished_points_and_resumes(study, tmp_path, monkeypatch, capsys):
    import analysis.converge as converge

    real = converge.run_point
    calls = []

    def flaky(task):
        calls.append(task.value)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(converge, "run_point", flaky)
    results = tmp_path / "r.jsonl"
    argv = ["converge", study["ckpt"], "--vth", "0.5,2", "--steps", "10", "--text", "good fun",
            "--results", str(results), "--no-progress"]
    assert main(argv) == 1
    assert [p["vth"] for p in read_results(results, KIND).points] == [0.5]
    assert "interrupted" in capsys.readouterr().err
    assert main(argv) == 0
    assert [p["vth"] for p in read_results(results, KIND).points] == [0.5, 2.0]
    assert calls == [0.5, 2.0, 2.0]


@pytest.mark.parametrize("extra, message", [
    (["--vth", ""], "--vth needs at least one value"),
    (["--vth", "0,1"], "--vth values must be finite numbers > 0"),
    (["--vth-scale", "1,-2"], "--vth-scale values must be finite numbers > 0"),
    (["--vth", "nan"], "--vth values must be finite numbers > 0"),
    (["--steps", "0"], "--steps must be a positive integer"),
    (["--steps", "-3"], "--steps must be a positive integer"),
    (["--tol", "0"], "--tol must be a finite number > 0"),
    (["--tol=-1e-3"], "--tol must be a finite number > 0"),
])
def test_bad_options_one_line_exit_2(study, capsys, extra, message):
    assert main(["converge", study["ckpt"], "--text", "good", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_language_model_checkpoint_one_line_exit_2(small_egru, capsys):
    assert main(["converge", small_egru, "--text", "good"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eventsim converge runs spiking encoders" in err


def test_results_file_of_another_kind_one_line_exit_2(study, tmp_path, capsys):
    other = tmp_path / "sweep.jsonl"
    with ResultsWriter(other):  # a pruning sweep's results file (header only)
        pass
    assert main(["converge", study["ckpt"], "--text", "good", "--results", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'sweep' sweep, not 'converge'" in err
    assert main(["plot", "converge", str(other), "--out", str(tmp_path / "f")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # ... and the other way round: a pruning sweep refuses a converge file.
    assert main(["plot", "sweep", str(study["out"] / RESULTS_FILE), "--out", str(tmp_path / "g")]) == 2
    assert "'converge' sweep, not 'sweep'" in capsys.readouterr().err


def test_engine_if_population_matches_the_hand_derived_rule(tmp_path):
    # The hand case of tests/test_convergence.py run through the engine: an embedding (no LayerNorm) whose
    # word vector is 0.25 everywhere and positions 0, through an identity projection (weight I, bias 0),
    # drives one IF population (v_th 1) with a constant current 0.25: a[t] = floor(t/4)/t, converged at t* = 69 for tol 0.011 (derivation there), and the
    # steady-state residual is |a[t] - 0.25| = (t mod 4) / (4 t) for every neuron, so its RMS is the same.
    from eventsim.checkpoint import load_checkpoint, save_checkpoint
    from eventsim.encoder_engine import EncoderEngine
    from eventsim.encoder_manifest import ClassifierSpec, LIFSpec, LinearSpec, TokenEmbeddingSpec
    from eventsim.manifest import Manifest

    layers = (TokenEmbeddingSpec("embedding", 3, 2, 3, layernorm=False), LinearSpec("proj", 3, 3, ("embedding",)),
              LIFSpec("pop", 3, ("proj",), 1.0), ClassifierSpec("classifier", 3, 2, ("pop",)))
    manifest = Manifest(model_kind="spiking_encoder", layers=layers, labels=("a", "b"), steps=150)
    tensors = {"embedding.word": np.full((3, 3), 0.25), "embedding.position": np.zeros((2, 3)),
               "proj.weight": np.eye(3), "proj.bias": np.zeros(3),
               "classifier.weight": np.ones((3, 2)), "classifier.bias": np.zeros(2)}
    save_checkpoint(tmp_path / "if.safetensors", manifest, tensors)
    r = EncoderEngine.from_checkpoint(load_checkpoint(tmp_path / "if.safetensors")).run([0, 1], 150, record_residual=True)
    t = np.arange(1, 151)
    np.testing.assert_allclose(r.asr_mean[:, 0], np.floor(t / 4) / t, atol=1e-12)
    np.testing.assert_allclose(r.steady_residual[:, 0], (t % 4) / (4 * t), atol=1e-12)
    assert converged_step(r.asr_mean[:, 0], tol=0.011) == 69
    assert math.isclose(r.spike_fraction[3, 0], 1.0) and r.spike_fraction[4, 0] == 0.0
