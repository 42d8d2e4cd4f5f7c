"""Training spiking encoders: the BPTT gradient against finite differences, distillation losses, and the
train_encoder command end to end on a tiny teacher cache (a random 2-layer BERT, no hub, no 20-minute run)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from eventsim.checkpoint import load_checkpoint  # noqa: E402
from eventsim.synthetic_encoder import random_encoder  # noqa: E402
from training.distill import Distiller, DistillWeights, block_outputs, layer_map, soft_cross_entropy  # noqa: E402
from training.encoder import SpikingEncoder, smooth_spike  # noqa: E402
from training.train_encoder import main  # noqa: E402

WORDS = ("good great fine film movie plot actor bad awful dull boring story fun not very a the is was and it this "
         "loved hated best worst").split()


# ----------------------------------------------------------------------------- a tiny teacher cache


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A CSV of 120 short reviews, a random 2-layer BERT classifier folder, and its teacher cache."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    from training.teacher import main as teacher_main

    root = tmp_path_factory.mktemp("tiny_teacher")
    rng = np.random.default_rng(0)
    pos, neg = ("good", "great", "fun", "loved", "best", "fine"), ("bad", "awful", "dull", "boring", "hated", "worst")
    rows = []
    for i in range(120):
        label = i % 2
        words = list(rng.choice(WORDS, size=int(rng.integers(3, 9)))) + [str(rng.choice(pos if label else neg))]
        if i % 7 == 0:
            words.append("unseenword")  # spelled out by single characters in the reduced vocabulary
        rng.shuffle(words)
        rows.append((" ".join(words) + f" {i}", "positive" if label else "negative"))
    csv = root / "tiny.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab = list(dict.fromkeys(specials + chars + [f"##{c}" for c in chars] + list(WORDS) + ["##ing", "##ed"]))
    teacher = root / "teacher"  # a random 2-layer BERT classifier: the cache needs a head, not a trained one
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(teacher))
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=32, num_labels=2,
                     id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(str(teacher))
    cache = root / "cache"
    rc = teacher_main(["cache", "--data", str(csv), "--teacher", str(teacher), "--out", str(cache),
                       "--layers", "0,1,2", "--max-length", "16", "--quiet", "--threads", "1"])
    assert rc == 0
    return {"csv": csv, "teacher": teacher, "cache": cache, "root": root}


def run_train(setup, out, *extra):
    args = ["--data", str(setup["csv"]), "--teacher-cache", str(setup["cache"]), "--blocks", "1", "--hidden", "16",
            "--intermediate", "32", "--heads", "2", "--steps", "4", "--epochs", "2", "--stage1-epochs", "1",
            "--batch-size", "32", "--threads", "1", "--quiet", "--out", str(out), *extra]
    return main(args)


@pytest.mark.parametrize("method,style,extra", [
    ("bptt", "spikingbert", ()),
    ("bptt", "spikformer", ("--intermediate", "64")),
    ("equilibrium", "spikingbert", ("--feedback", "--max-iter", "200", "--solver-beta", "0.5")),
])
def test_train_export_and_match_the_engine(tiny_setup, tmp_path, method, style, extra, capsys):
    out = tmp_path / "enc.safetensors"
    assert run_train(tiny_setup, out, "--method", method, "--style", style, *extra) == 0
    text = capsys.readouterr().out
    assert "valid accuracy" in text and "epoch 2/2 (stage 2)" in text
    ckpt = load_checkpoint(out)
    m = ckpt.manifest
    assert m.model_kind == "spiking_encoder" and m.steps == 4 and m.labels == ("negative", "positive")
    assert m.provenance["method"] == method and 0.0 <= m.provenance["test_accuracy"] <= 1.0
    assert m.tokenizer["kind"] == "wordpiece" and m.tokenizer["max_positions"] == 16
    assert "unseenword" not in m.vocabulary and "##d" in m.vocabulary and "[PAD]" in m.vocabulary
    assert not (tmp_path / "enc.safetensors.tmp").exists()
    log = [json.loads(line) for line in (tmp_path / "enc.log.jsonl").read_text().splitlines()]
    assert [r.get("stage") for r in log[:2]] == [1, 2]
    # the torch model of the file predicts what the engine predicts (once the engine exists)
    enc = SpikingEncoder.from_checkpoint(out, dtype=torch.float64)
    from training.train_encoder import encode_texts

    texts = ["a good film", "the worst plot and a dull actor", "unseenword was fun"]
    ids, mask = encode_texts(m, texts)
    with torch.no_grad():
        torch_logits = enc(ids, mask).logits.numpy()
    engine = pytest.importorskip("eventsim.encoder_engine")
    eng = engine.EncoderEngine.from_checkpoint(ckpt)
    for i, text in enumerate(texts):
        res = eng.run(ids[i, : int(mask[i].sum())].numpy(), m.steps)
        np.testing.assert_allclose(res.logits[-1], torch_logits[i], rtol=0, atol=1e-9, err_msg=text)
        assert res.predicted == int(np.argmax(torch_logits[i])), text


def test_reduced_vocabulary_tokenises_training_texts_like_the_teacher(tiny_setup, tmp_path):
    pytest.importorskip("eventsim.encoder_text")
    from training.sentiment_data import load_sentiment
    from training.teacher_cache import TeacherCache
    from training.train_encoder import build_parser, prepare

    args = build_parser().parse_args(["--data", str(tiny_setup["csv"]), "--teacher-cache", str(tiny_setup["cache"]),
                                      "--hidden", "16", "--intermediate", "32", "--heads", "2",
                                      "--out", str(tmp_path / "x.safetensors")])
    data, cache, manifest, splits = prepare(args)
    from training.train_encoder import encode_texts

    texts = load_sentiment(str(tiny_setup["csv"])).texts("train")
    ids, mask = encode_texts(manifest, texts)  # eventsim's tokenizer on the reduced vocabulary
    torch.testing.assert_close(ids * mask, splits["train"][0] * splits["train"][1], rtol=0, atol=0)
    torch.testing.assert_close(mask, splits["train"][1], rtol=0, atol=0)
    assert isinstance(cache, TeacherCache) and len(manifest.vocabulary) < len(cache.tokenizer().get_vocab())


@pytest.mark.parametrize("flags,message", [
    (("--vth", "0"), "--vth must be a finite number > 0"),
    (("--vth", "-1"), "--vth must be a finite number > 0"),
    (("--steps", "0"), "--steps (T) must be a positive integer"),
    (("--heads", "3"), "does not divide"),
])
def test_bad_arguments_one_line_exit_2(tiny_setup, tmp_path, capsys, flags, message):
    assert run_train(tiny_setup, tmp_path / "x.safetensors", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train_encoder: error:") and message in err and "\n" not in err


def test_bad_data_and_foreign_cache_one_line_exit_2(tiny_setup, tmp_path, capsys):
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("text,stars\na,1\nb,2\n", encoding="utf-8")
    bad_labels = tmp_path / "badlabels.csv"
    bad_labels.write_text("text,label\n" + "".join(f"row {i},0.{i}5\n" for i in range(20)), encoding="utf-8")
    other = tmp_path / "other.csv"
    other.write_text("text,label\n" + "".join(f"other text {i},{'positive' if i % 2 else 'negative'}\n"
                                               for i in range(40)), encoding="utf-8")
    for csv in (no_label, bad_labels, other):
        args = ["--data", str(csv), "--teacher-cache", str(tiny_setup["cache"]), "--hidden", "16", "--heads", "2",
                "--out", str(tmp_path / "x.safetensors")]
        assert main(args) == 2, csv
        err = capsys.readouterr().err.strip()
        assert err.startswith("train_encoder: error:") and "\n" not in err, err
    assert "other data" in err


def test_resume_equals_uninterrupted(tiny_setup, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert run_train(tiny_setup, a, "--seed", "3") == 0
    assert run_train(tiny_setup, b, "--seed", "3", "--stop-after", "1") == 0
    assert not b.exists()
    assert run_train(tiny_setup, b, "--seed", "3") == 0
    ta, tb = load_checkpoint(a).tensors, load_checkpoint(b).tensors
    assert all(np.array_equal(ta[k], tb[k]) for k in ta)


# ----------------------------------------------------------------------------- the BPTT gradient


class FrozenPatternEncoder(SpikingEncoder):
    """The surrogate model at theta_0: s = H(x*) + sigma(x) - sigma(x*) with x* the pre-activations recorded at theta_0.

    Its forward VALUES at theta_0 equal the Heaviside model's; its exact derivative there is the
    arctan surrogate (sigma' = alpha/2 / (1 + (pi/2 alpha x)^2)). So the BPTT gradient (Heaviside forward,
    surrogate backward) must equal the finite-difference gradient of this smooth function of theta.
    """

    recorded: list | None = None
    replay: list | None = None

    def _spike(self, x):
        if self.recorded is not None:
            self.recorded.append(x.detach().clone())
            return super()._spike(x)
        if self.replay is not None:
            x0 = self.replay.pop(0)
            return (x0 >= 0).to(x.dtype) + smooth_spike(x, self.alpha) - smooth_spike(x0, self.alpha)
        return super()._spike(x)


def tiny_loss(enc, ids, mask, labels):
    out = enc(ids, mask)
    hidden = block_outputs(enc, out.rates)[-1]
    return torch.nn.functional.cross_entropy(out.logits, labels) + (hidden ** 2).mean()


@pytest.mark.parametrize("style", ["spikingbert", "spikformer"])
def test_bptt_gradient_equals_finite_differences_of_the_surrogate_model(style):
    manifest, tensors = random_encoder(style, vocab_size=20, max_positions=6, hidden=4, heads=2, blocks=1, steps=5,
                                       seed=11, intermediate=8, mlp_ratio=2)
    enc = FrozenPatternEncoder(manifest, tensors).double()
    ids = torch.tensor([[1, 5, 7, 2, 0], [3, 4, 9, 9, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.tensor([0, 1])
    enc.recorded = []
    loss = tiny_loss(enc, ids, mask, labels)  # Heaviside forward, arctan surrogate backward
    recorded, enc.recorded = enc.recorded, None
    names = [k for k in enc.params if not k.startswith("embedding/word")] + ["embedding/word"]
    grads = torch.autograd.grad(loss, [enc.params[k] for k in names])
    rng = np.random.default_rng(0)
    checked = 0
    for key, g in zip(names, grads, strict=True):
        p = enc.params[key]
        flat = p.detach().view(-1)
        idx = [int(i) for i in rng.choice(flat.numel(), size=min(3, flat.numel()), replace=False)]
        if key == "embedding/word":
            idx = [5 * p.shape[1], 9 * p.shape[1] + 1]  # rows of tokens in the input
        for i in idx:
            eps = 1e-6
            vals = []
            for sign in (1, -1):
                with torch.no_grad():
                    old = float(flat[i])
                    flat[i] = old + sign * eps
                enc.replay = list(recorded)
                with torch.no_grad():
                    vals.append(float(tiny_loss(enc, ids, mask, labels)))
                enc.replay = None
                with torch.no_grad():
                    flat[i] = old
            fd = (vals[0] - vals[1]) / (2 * eps)
            assert float(g.view(-1)[i]) == pytest.approx(fd, rel=1e-5, abs=1e-8), (key, i)
            checked += 1
    assert checked > 20
    # at theta_0 the frozen-pattern model's loss equals the Heaviside model's exactly
    enc.replay = list(recorded)
    with torch.no_grad():
        assert float(tiny_loss(enc, ids, mask, labels)) == float(loss)
    enc.replay = None


def test_smooth_surrogate_model_autograd_equals_central_differences():
    manifest, tensors = random_encoder("spikingbert", vocab_size=20, max_positions=6, hidden=4, heads=2, blocks=1,
                                       steps=4, seed=12, intermediate=8)
    enc = SpikingEncoder(manifest, tensors, surrogate="smooth").double()
    ids, mask, labels = torch.tensor([[1, 5, 7, 2]]), torch.ones(1, 4, dtype=torch.long), torch.tensor([1])
    params = [enc.params[k] for k in enc.params]
    ok = torch.autograd.gradcheck(lambda *ps: _loss_with(enc, ps, ids, mask, labels), params, eps=1e-6, atol=1e-7,
                                  rtol=1e-5, fast_mode=True)
    assert ok


def _loss_with(enc, ps, ids, mask, labels):
    saved = {}
    for (k, p), new in zip(list(enc.params.items()), ps, strict=True):
        saved[k] = p
        enc.params._parameters[k] = new  # functional substitution for gradcheck
    try:
        return tiny_loss(enc, ids, mask, labels)
    finally:
        for k, p in saved.items():
            enc.params._parameters[k] = p


# ----------------------------------------------------------------------------- distillation losses


def test_layer_map_and_soft_cross_entropy():
    assert layer_map(2, (0, 2, 4, 6)) == [4, 6]  # TinyBERT: block b -> layer ceil((b + 1) * 6 / 2) of 6
    assert layer_map(3, (0, 2, 4, 6)) == [2, 4, 6]
    assert layer_map(1, (0, 3)) == [3]
    assert layer_map(2, (0,)) == []
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    p = torch.softmax(t / 2, -1)
    want = -(p * torch.log_softmax(s / 2, -1)).sum() * 4
    assert float(soft_cross_entropy(s, t, 2.0)) == pytest.approx(float(want))
    # minimised when the student's logits equal the teacher's (up to a constant)
    assert float(soft_cross_entropy(t + 3, t, 1.0)) < float(soft_cross_entropy(s, t, 1.0))


def test_distiller_terms_by_stage_and_masking():
    manifest, tensors = random_encoder("spikingbert", vocab_size=20, max_positions=6, hidden=8, heads=2, blocks=2,
                                       steps=4, seed=13)
    enc = SpikingEncoder(manifest, tensors)
    d = Distiller(enc, (0, 1, 2), (1, 2), teacher_hidden=12, weights=DistillWeights(attention=2.0, ce=0.5))
    ids, mask = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    batch = {"attention_mask": mask, "hidden": torch.randn(2, 3, 4, 12), "attention": torch.rand(2, 2, 1, 4, 4),
             "logits": torch.randn(2, 2), "labels": torch.tensor([0, 1])}
    out = enc(ids, mask)
    s1 = d.losses(enc, out, batch, 1)
    assert set(s1) == {"hidden", "embedding", "attention"}
    s2 = d.losses(enc, out, batch, 2)
    assert set(s2) == {"soft", "ce"}
    ce = torch.nn.functional.cross_entropy(out.logits.detach(), batch["labels"])
    assert float(s2["ce"].detach()) == pytest.approx(0.5 * float(ce))
    # padding never counts: changing the teacher at pad positions changes nothing
    batch2 = {**batch, "hidden": batch["hidden"].clone(), "attention": batch["attention"].clone()}
    batch2["hidden"][1, :, 2:] += 100.0
    batch2["attention"][1, :, :, 2:, :] += 100.0
    batch2["attention"][1, :, :, :, 2:] += 100.0
    s1b = d.losses(enc, out, batch2, 1)
    for k in s1:
        assert float(s1b[k].detach()) == pytest.approx(float(s1[k].detach()), rel=1e-6)
    # the attention term is the hand formula on one block
    pair = (mask[:, :, None] * mask[:, None, :]).float()
    st = out.attention["blocks.0.attn"].mean(1)
    want0 = (((st - batch["attention"][:, 0, 0]) ** 2) * pair).sum() / pair.sum()
    st1 = out.attention["blocks.1.attn"].mean(1)
    want1 = (((st1 - batch["attention"][:, 1, 0]) ** 2) * pair).sum() / pair.sum()
    assert float(s1["attention"].detach()) == pytest.approx(2.0 * float((want0 + want1).detach()) / 2, rel=1e-5)
    assert math.isfinite(float(sum(s1.values()).detach()))


def test_labels_only_without_a_teacher_cache(tiny_setup, tmp_path):
    out = tmp_path / "labels.safetensors"
    args = ["--data", str(tiny_setup["csv"]), "--teacher", str(tiny_setup["teacher"]), "--max-length", "16",
            "--blocks", "1", "--hidden", "16", "--intermediate", "32", "--heads", "2", "--steps", "4", "--epochs", "1",
            "--stage1-epochs", "0", "--max-train-rows", "64", "--threads", "1", "--quiet", "--out", str(out)]
    assert main(args) == 0
    m = load_checkpoint(out).manifest
    assert m.provenance["teacher_cache_key"] is None and m.provenance["train_rows_used"] == 64
    assert main([*args[:-2], "--stage1-epochs", "1", "--epochs", "2", "--out", str(out)]) == 2
