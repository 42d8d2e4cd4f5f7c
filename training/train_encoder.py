"""Train a spiking encoder for sentence classification by distillation and export an eventsim checkpoint.

    python -m training.train_encoder --method bptt --data rotten_tomatoes --teacher-cache runs/teacher_rt_cache \\
        --style spikingbert --blocks 2 --hidden 128 --intermediate 512 --heads 4 --steps 16 \\
        --epochs 4 --stage1-epochs 1 --out encoder.safetensors

Methods: ``bptt`` (SpikeBERT): backprop through the time-stepped spiking forward of
``--steps`` T steps, Heaviside spikes with the arctan surrogate gradient
(:mod:`training.encoder`); ``equilibrium`` (SpikingBERT): the fixed point of the
steady-state rate map with an implicit backward (:mod:`training.equilibrium`).
Either way the model's T is ``--steps``, and the validation accuracy printed after
every epoch is the SPIKING forward's at that T (what the eventsim engine computes).

Losses (:mod:`training.distill`): stage 1 (the first ``--stage1-epochs`` epochs)
distils representations (block hidden states through learned maps, attention,
embedding), stage 2 predictions (soft cross-entropy with ``--temperature``, plus
cross-entropy on labels); ``--w-*`` weigh each term (0 drops it). Each stage has its
own warm-up + cosine learning-rate schedule. The best stage-2 epoch by validation
accuracy is kept, tested, and written to ``--out``.

Data and teacher: ``--data`` is ``rotten_tomatoes``, ``sst2`` or a CSV
(:mod:`training.sentiment_data`); ``--teacher-cache`` a cache of
``python -m training.teacher cache`` made for that data (refused, by hash, if it was
made for other data, or for another teacher when ``--teacher`` names one). The
training split's token ids are the cache's. Without ``--teacher-cache`` the run
trains on labels only (the distillation ablation; ``--stage1-epochs 0``), the
training texts tokenised by ``--teacher``'s tokenizer (default all-MiniLM-L6-v2's)
at ``--max-length``. The student's vocabulary is the
teacher's WordPiece vocabulary reduced to the pieces of the training split, the
special tokens and every single-character piece (and its ``##`` form), ids
remapped; greedy longest-match WordPiece then splits every training text exactly
as the teacher did, and validation/test texts are tokenised by
:class:`eventsim.encoder_text.EncoderTokenizer` from the student's own manifest,
as eventsim will.

Resuming, determinism and torchrun/DDP (gloo) follow ``training.train_lm``: run state
after every epoch in ``<out>.state.safetensors`` + ``<out>.state.json``, batch order
from ``(seed, epoch)``, only rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eventsim.encoder_manifest import spikformer_layers, spikingbert_layers
from eventsim.errors import EventsimError
from eventsim.manifest import Manifest
from training.distill import Distiller, DistillWeights
from training.encoder import SpikingEncoder, init_tensors
from training.run_state import RunFiles, UsageError, _Parser, git_commit, load_state, run_command, save_state
from training.train_lm import epoch_seed, lr_at

PROG = "train_encoder"
NOT_CONFIG = {"out", "threads", "stop_after", "fresh", "quiet", "eval_batch_size"}
STYLES = ("spikingbert", "spikformer")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Train a spiking encoder by distillation and export an eventsim checkpoint.")
    p.add_argument("--method", choices=("bptt", "equilibrium"), default="bptt")
    p.add_argument("--data", default="rotten_tomatoes", help="rotten_tomatoes | sst2 | path to a CSV file")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--teacher-cache", help="folder written by python -m training.teacher cache "
                   "(without one: labels only, tokenised by --teacher's tokenizer)")
    p.add_argument("--teacher", help="teacher folder: if given, the cache must have been made by it (hash check)")
    p.add_argument("--max-length", type=int, default=64, help="tokens per text without a teacher cache (else the cache's)")
    p.add_argument("--max-train-rows", type=int, help="train on the first N rows of the training split only (smoke runs)")
    p.add_argument("--style", choices=STYLES, default="spikingbert")
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=512, help="IL-2 width (spikingbert) or MLP width (spikformer)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--steps", type=int, default=16, help="time steps T of the model (BPTT unroll, validation, export)")
    p.add_argument("--vth", type=float, default=1.0, help="firing threshold V_th of every population")
    p.add_argument("--gamma", type=float, default=1.0, help="spikingbert leak (1 = IF)")
    p.add_argument("--tau", type=float, default=2.0, help="spikformer membrane time constant (decay_input form)")
    p.add_argument("--feedback", action="store_true", help="spikingbert: last block -> embedding LIF, one step late")
    p.add_argument("--pooling", choices=("mean", "cls"), default="mean")
    p.add_argument("--epochs", type=int, default=4, help="all epochs, stage 1 included")
    p.add_argument("--stage1-epochs", type=int, default=1, help="representation-distillation epochs first")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    p.add_argument("--w-hidden", type=float, default=1.0)
    p.add_argument("--w-embedding", type=float, default=1.0)
    p.add_argument("--w-attention", type=float, default=1.0)
    p.add_argument("--w-soft", type=float, default=1.0)
    p.add_argument("--w-ce", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--solver", choices=("anderson", "picard"), default="anderson", help="equilibrium solver")
    p.add_argument("--tol", type=float, default=1e-4, help="equilibrium: relative residual of both solves")
    p.add_argument("--max-iter", type=int, default=50, help="equilibrium: map evaluations per solve")
    p.add_argument("--solver-beta", type=float, default=1.0, help="equilibrium: mixing (damping) of the solver")
    p.add_argument("--init", choices=("zeros", "spiking"), default="zeros", help="equilibrium: warm start")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing run state and start over")
    p.add_argument("--stop-after", type=int, help="stop after this many epochs in this invocation (rerun to go on)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def validate(args: argparse.Namespace, world: int) -> None:
    if not (math.isfinite(args.vth) and args.vth > 0):
        raise UsageError(f"--vth must be a finite number > 0, got {args.vth}")
    if args.steps <= 0:
        raise UsageError(f"--steps (T) must be a positive integer, got {args.steps}")
    for name in ("blocks", "hidden", "intermediate", "heads", "epochs", "batch_size", "eval_batch_size", "max_iter"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.teacher_cache is None and args.stage1_epochs:
        raise UsageError("--stage1-epochs needs a --teacher-cache (representation distillation); pass 0 to train on labels")
    for name in ("threads", "stop_after", "max_train_rows"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if args.hidden % args.heads:
        raise UsageError(f"--heads {args.heads} does not divide --hidden {args.hidden}")
    if not 0 <= args.stage1_epochs < args.epochs:
        raise UsageError(f"--stage1-epochs must lie in [0, --epochs) so that stage 2 trains the classifier, "
                         f"got {args.stage1_epochs} of {args.epochs}")
    if not (0 < args.gamma <= 1):
        raise UsageError(f"--gamma must lie in (0, 1], got {args.gamma}")
    if not args.tau > 1:
        raise UsageError(f"--tau must be > 1, got {args.tau}")
    if args.style == "spikformer":
        if args.intermediate % args.hidden:
            raise UsageError(f"spikformer: --intermediate {args.intermediate} must be a multiple of --hidden {args.hidden}")
        if args.feedback:
            raise UsageError("--feedback is a spikingbert option")
    if not args.lr > 0 or args.weight_decay < 0 or args.clip < 0 or args.warmup_steps < 0:
        raise UsageError("--lr must be positive; --weight-decay, --clip and --warmup-steps non-negative")
    if args.batch_size < world:
        raise UsageError(f"--batch-size {args.batch_size} is smaller than the {world} processes")
    if not str(args.out).endswith(".safetensors"):
        raise UsageError(f"--out must name a .safetensors file, got {args.out!r}")
    if not Path(args.out).resolve().parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {Path(args.out).parent} does not exist")


def run_files(out: str) -> RunFiles:
    """``X.safetensors`` -> X.safetensors, X.state.safetensors, X.state.json, X.log.jsonl."""
    p = Path(out)
    stem = p.with_name(p.name[: -len(".safetensors")])
    return RunFiles(p, Path(f"{stem}.state.safetensors"), Path(f"{stem}.state.json"), Path(f"{stem}.log.jsonl"))


# ----------------------------------------------------------------------------- vocabulary and tokenizer


def tokenizer_settings(tokenizer, max_positions: int) -> dict:
    """The manifest's ``tokenizer`` dict of a ``transformers`` BERT WordPiece tokenizer."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model, norm = spec.get("model") or {}, spec.get("normalizer") or {}
    if model.get("type") != "WordPiece" or norm.get("type") != "BertNormalizer":
        raise EventsimError(f"the teacher's tokenizer is {model.get('type')} with a {norm.get('type')} normaliser; "
                            "a spiking encoder needs a BERT WordPiece tokenizer")
    lowercase = bool(norm.get("lowercase", True))
    strip = norm.get("strip_accents")
    return {
        "kind": "wordpiece",
        "lowercase": lowercase,
        "strip_accents": lowercase if strip is None else bool(strip),
        "unk_token": model["unk_token"],
        "cls_token": tokenizer.cls_token,
        "sep_token": tokenizer.sep_token,
        "pad_token": tokenizer.pad_token,
        "mask_token": tokenizer.mask_token,
        "continuing_subword_prefix": model.get("continuing_subword_prefix", "##"),
        "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
        "max_positions": int(max_positions),
    }


def reduce_vocabulary(tokenizer, ids: torch.Tensor, mask: torch.Tensor, prefix: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(reduced vocabulary, old id -> new id): pieces used in ``ids``, specials, single characters and ``##`` forms.

    The kept pieces keep their relative order; ids outside the reduced vocabulary map to its unknown token.
    """
    vocab = tokenizer.get_vocab()
    full = [""] * (max(vocab.values()) + 1)
    for word, i in vocab.items():
        full[i] = word
    keep = set(torch.unique(ids[mask.bool()]).tolist())
    keep |= {vocab[t] for t in tokenizer.all_special_tokens if t in vocab}
    keep |= {i for w, i in vocab.items() if len(w) == 1 or (w.startswith(prefix) and len(w) == len(prefix) + 1)}
    order = sorted(keep)
    lut = np.full(len(full), order.index(vocab[tokenizer.unk_token]), dtype=np.int64)
    lut[order] = np.arange(len(order))
    return tuple(full[i] for i in order), lut


def build_manifest(args: argparse.Namespace, vocabulary: tuple[str, ...], labels: tuple[str, ...],
                   tokenizer: dict) -> Manifest:
    n, positions = len(vocabulary), tokenizer["max_positions"]
    if args.style == "spikingbert":
        layers = spikingbert_layers(n, positions, args.hidden, args.intermediate, args.heads, args.blocks, len(labels),
                                    v_th=args.vth, gamma=args.gamma, feedback=args.feedback, pooling=args.pooling)
    else:
        layers = spikformer_layers(n, positions, args.hidden, args.heads, args.blocks, len(labels),
                                   mlp_ratio=args.intermediate // args.hidden, v_th=args.vth, tau=args.tau,
                                   pooling=args.pooling)
    manifest = Manifest("spiking_encoder", layers, vocabulary=vocabulary, labels=labels, tokenizer=tokenizer,
                        steps=args.steps)
    manifest.validate("train_encoder")
    return manifest


def encode_texts(manifest: Manifest, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and masks ``[n, max_positions]`` by eventsim's own tokenizer (truncating long texts)."""
    from eventsim.encoder_text import EncoderTokenizer

    tok = EncoderTokenizer(manifest)
    L = tok.max_positions
    pad = manifest.vocabulary.index(manifest.tokenizer.get("pad_token", "[PAD]"))
    ids = torch.full((len(texts), L), pad, dtype=torch.int64)
    mask = torch.zeros(len(texts), L, dtype=torch.int64)
    for i, text in enumerate(texts):
        row = tok.encode(text, truncate=True).ids
        ids[i, : len(row)] = torch.from_numpy(row)
        mask[i, : len(row)] = 1
    return ids, mask


# ----------------------------------------------------------------------------- model, loss, evaluation


class Student(nn.Module):
    """The encoder and the distillation maps, so that one optimizer and one DDP wrapper hold both."""

    def __init__(self, encoder: SpikingEncoder, distiller: Distiller, args: argparse.Namespace) -> None:
        super().__init__()
        self.encoder, self.distiller = encoder, distiller
        self.method, self.steps = args.method, args.steps
        self.eq_config = None
        if args.method == "equilibrium":
            from training.equilibrium import EquilibriumConfig, SolverConfig

            solver = SolverConfig(args.solver, tol=args.tol, max_iter=args.max_iter, beta=args.solver_beta)
            self.eq_config = EquilibriumConfig(forward=solver, backward=solver, init=args.init,
                                               t_conv=args.steps if args.init == "spiking" else 0)

    def run(self, ids: torch.Tensor, mask: torch.Tensor):
        """The training-time forward of the method: spiking (BPTT) or at the equilibrium."""
        if self.method == "equilibrium":
            from training.equilibrium import equilibrium_forward

            return equilibrium_forward(self.encoder, ids, mask, self.eq_config)
        return self.encoder(ids, mask, steps=self.steps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, batch: dict, stage: int) -> dict[str, torch.Tensor]:
        return self.distiller.losses(self.encoder, self.run(ids, mask), {**batch, "attention_mask": mask}, stage)


def evaluate(encoder: SpikingEncoder, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, steps: int,
             batch: int, rank: int = 0, world: int = 1) -> dict:
    """Accuracy and mean ASR (over lif populations, real positions) of the SPIKING forward at ``steps``."""
    encoder.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # correct, rows, asr sum, asr count
    rows = torch.arange(len(labels))[rank::world]
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            r = rows[i : i + batch]
            n = max(1, int(mask[r].sum(1).max()))
            out = encoder(ids[r, :n], mask[r, :n], steps=steps)
            totals[0] += int((out.logits.argmax(-1) == labels[r]).sum())
            totals[1] += len(r)
            m = mask[r, :n].to(torch.float64)[..., None]
            for a in out.rates.values():
                totals[2] += float((a.double() * m).sum() / a.shape[-1])
                totals[3] += float(m.sum())
    if world > 1:
        torch.distributed.all_reduce(totals)
    encoder.train()
    return {"accuracy": float(totals[0] / totals[1]) if totals[1] else float("nan"),
            "asr": float(totals[2] / totals[3]) if totals[3] else float("nan"), "rows": int(totals[1])}


def stage_of(epoch: int, args: argparse.Namespace) -> int:
    return 1 if epoch < args.stage1_epochs else 2


# ----------------------------------------------------------------------------- the run


class LabelsOnly:
    """What training reads from a teacher cache, without a teacher: ids, masks and labels of the training split."""

    def __init__(self, data, tokenizer, max_length: int) -> None:
        from training.sentiment_data import encode

        enc = encode(tokenizer, data.texts("train"), max_length)
        self.input_ids = torch.from_numpy(enc.input_ids)
        self.attention_mask = torch.from_numpy(enc.attention_mask)
        self.labels = torch.from_numpy(data.label_array("train"))
        self.logits = None
        self.layers, self.attention_layers, self.hidden_size = (), (), 1
        self.max_length, self.key, self.teacher_hash = max_length, None, None
        self._tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.labels)

    def tokenizer(self):
        return self._tokenizer


def prepare(args: argparse.Namespace):
    """Data, teacher cache, reduced vocabulary, manifest and the id tensors of every split."""
    from training.sentiment_data import load_sentiment
    from training.teacher import load_tokenizer, resolve_teacher, teacher_config, teacher_hashes
    from training.teacher_cache import TeacherCache

    data = load_sentiment(args.data, args.text_column, args.label_column)
    teacher_hash, folder = None, None
    if args.teacher or args.teacher_cache is None:
        folder = resolve_teacher(args.teacher)
        teacher_config(folder)
    if args.teacher_cache is None:
        cache = LabelsOnly(data, load_tokenizer(folder), args.max_length)
    else:
        if folder is not None:
            teacher_hash = teacher_hashes(folder)["teacher_hash"]
        cache = TeacherCache(args.teacher_cache, "train", data_hash=data.content_hash, teacher_hash=teacher_hash)
        if tuple(cache.label_names) != tuple(data.labels):
            raise EventsimError(f"teacher cache {args.teacher_cache} has classes {list(cache.label_names)}, "
                                f"the data {list(data.labels)}")
        if not torch.equal(cache.labels, torch.from_numpy(data.label_array("train"))):
            raise EventsimError(f"teacher cache {args.teacher_cache}: its training labels differ from the data's")
    tok = cache.tokenizer()
    settings = tokenizer_settings(tok, cache.max_length)
    vocabulary, lut = reduce_vocabulary(tok, cache.input_ids, cache.attention_mask, settings["continuing_subword_prefix"])
    manifest = build_manifest(args, vocabulary, tuple(data.labels), settings)
    lut_t = torch.from_numpy(lut)
    splits = {"train": (lut_t[cache.input_ids], cache.attention_mask, cache.labels)}
    for split in ("validation", "test"):
        ids, mask = encode_texts(manifest, data.texts(split))
        splits[split] = (ids, mask, torch.from_numpy(data.label_array(split)))
    return data, cache, manifest, splits


def train(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    validate(args, world)
    if args.method == "equilibrium":
        try:
            import training.equilibrium  # noqa: F401
        except ImportError:
            raise UsageError("--method equilibrium needs training/equilibrium.py, which is not available") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if world > 1:
        torch.distributed.init_process_group("gloo")
    files = run_files(args.out)
    config = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_CONFIG}
    lead = rank == 0

    data, cache, manifest, splits = prepare(args)
    train_ids, train_mask, _ = splits["train"]
    torch.manual_seed(args.seed)
    encoder = SpikingEncoder(manifest, init_tensors(manifest, args.seed))
    soft = args.w_soft if cache.logits is not None else 0.0  # no teacher: labels only
    weights = DistillWeights(args.w_hidden, args.w_embedding, args.w_attention, soft, args.w_ce, args.temperature)
    distiller = Distiller(encoder, cache.layers, cache.attention_layers, cache.hidden_size, weights)
    student = Student(encoder, distiller, args)
    decay = [p for n, p in student.named_parameters() if n.endswith("weight") and "ln" not in n and "word" not in n]
    ids_decay = {id(p) for p in decay}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": [p for p in student.parameters() if id(p) not in ids_decay], "weight_decay": 0.0}],
                            lr=args.lr)
    n_train = len(cache) if args.max_train_rows is None else min(len(cache), args.max_train_rows)
    batches_per_epoch = len([i for i in range(0, n_train, args.batch_size) if min(args.batch_size, n_train - i) >= world])
    best = {k: v.detach().clone() for k, v in student.state_dict().items()}
    info = {"epoch": 0, "step": 0, "best_valid_accuracy": None, "best_epoch": None, "history": [],
            "train_seconds": 0.0, "config": config}
    if files.state.exists() and files.state_json.exists() and not args.fresh:
        saved = json.loads(files.state_json.read_text())
        if saved.get("config") != config:
            diff = sorted(k for k in set(config) | set(saved.get("config", {})) if config.get(k) != saved["config"].get(k))
            raise UsageError(f"{files.state} was made with other settings ({', '.join(diff)}); rerun with them or pass --fresh")
        info, best = load_state(files, student, opt)
        if lead:
            print(f"{PROG}: resuming after epoch {info['epoch']} from {files.state}", file=sys.stderr)
    elif lead and args.fresh:
        files.log.unlink(missing_ok=True)
    net = nn.parallel.DistributedDataParallel(student, find_unused_parameters=True) if world > 1 else student
    valid_ids, valid_mask, valid_labels = splits["validation"]

    done_here = 0
    while info["epoch"] < args.epochs and (args.stop_after is None or done_here < args.stop_after):
        epoch = info["epoch"]
        stage = stage_of(epoch, args)
        stage_first = 0 if stage == 1 else args.stage1_epochs
        stage_epochs = args.stage1_epochs if stage == 1 else args.epochs - args.stage1_epochs
        torch.manual_seed(epoch_seed(args.seed, epoch, rank))
        order = np.random.default_rng(epoch_seed(args.seed, epoch, 0)).permutation(n_train)
        t0 = time.time()
        mean = train_epoch(net, student, cache, train_ids, train_mask, order, opt, args, stage,
                           step0=(epoch - stage_first) * batches_per_epoch, total=stage_epochs * batches_per_epoch,
                           rank=rank, world=world, desc=f"epoch {epoch + 1}/{args.epochs} stage {stage}", show=lead)
        info["step"] += batches_per_epoch
        seconds = time.time() - t0
        valid = evaluate(encoder, valid_ids, valid_mask, valid_labels, args.steps, args.eval_batch_size, rank, world)
        info["epoch"] = epoch + 1
        info["train_seconds"] += seconds
        record = {"epoch": epoch + 1, "stage": stage, "train_loss": mean, "valid_accuracy": valid["accuracy"],
                  "valid_asr": valid["asr"], "seconds": round(seconds, 2)}
        info["history"].append(record)
        better = info["best_valid_accuracy"] is None or valid["accuracy"] > info["best_valid_accuracy"]
        if stage == 2 and better:
            info["best_valid_accuracy"], info["best_epoch"] = valid["accuracy"], epoch + 1
            best = {k: v.detach().clone() for k, v in student.state_dict().items()}
        if lead:
            losses = "  ".join(f"{k} {v:.4f}" for k, v in mean.items())
            print(f"epoch {epoch + 1}/{args.epochs} (stage {stage})  {losses}  valid accuracy {valid['accuracy']:.4f}  "
                  f"valid ASR {valid['asr']:.3f}  {seconds:.0f}s", flush=True)
            with open(files.log, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            save_state(files, student, best, opt, info)
        done_here += 1

    result = {"finished": info["epoch"] >= args.epochs, "epoch": info["epoch"]}
    if result["finished"]:
        student.load_state_dict(best)
        test_ids, test_mask, test_labels = splits["test"]
        test = evaluate(encoder, test_ids, test_mask, test_labels, args.steps, args.eval_batch_size, rank, world)
        majority = float((test_labels == torch.bincount(splits["train"][2]).argmax()).double().mean()) \
            if len(test_labels) else float("nan")
        provenance = {
            "source": "training.train_encoder", "method": args.method, "style": args.style,
            "dataset": data.name, "data_hash": data.content_hash, "teacher_cache_key": cache.key,
            "train_rows_used": n_train,
            "teacher_hash": cache.teacher_hash, "teacher_layers": list(cache.layers),
            "rows": {s: int(len(v[2])) for s, v in splits.items()},
            "epochs": args.epochs, "stage1_epochs": args.stage1_epochs, "best_epoch": info["best_epoch"],
            "steps": args.steps, "v_th": args.vth, "seed": args.seed,
            "valid_accuracy": info["best_valid_accuracy"], "test_accuracy": test["accuracy"], "test_asr": test["asr"],
            "test_majority_accuracy": majority, "history": info["history"],
            "train_seconds": round(info["train_seconds"], 1), "processes": world, "threads": torch.get_num_threads(),
            "git_commit": git_commit(), "torch": torch.__version__, "config": config,
            "command": " ".join(shlex.quote(a) for a in ["python", "-m", "training.train_encoder", *argv]),
        }
        if lead:
            encoder.export(files.checkpoint, provenance=provenance)
            with open(files.log, "a") as fh:
                fh.write(json.dumps({"event": "test", "valid_accuracy": info["best_valid_accuracy"],
                                     "test_accuracy": test["accuracy"], "test_asr": test["asr"],
                                     "best_epoch": info["best_epoch"]}) + "\n")
            print(f"best epoch {info['best_epoch']}: valid accuracy {info['best_valid_accuracy']:.4f}  test accuracy "
                  f"{test['accuracy']:.4f} (majority {majority:.4f})  test ASR {test['asr']:.3f}  -> {files.checkpoint}",
                  flush=True)
        result.update(valid_accuracy=info["best_valid_accuracy"], test_accuracy=test["accuracy"], test_asr=test["asr"])
    if world > 1:
        torch.distributed.destroy_process_group()
    return result


def train_epoch(net, student: Student, cache, ids: torch.Tensor, mask: torch.Tensor, order: np.ndarray,
                opt: torch.optim.Optimizer, args: argparse.Namespace, stage: int, step0: int, total: int,
                rank: int, world: int, desc: str, show: bool) -> dict[str, float]:
    """One pass over the training rows in ``order``; returns the mean of every loss term (this rank's)."""
    from tqdm import tqdm

    student.train()
    sums: dict[str, float] = {}
    n = 0
    starts = [i for i in range(0, len(order), args.batch_size) if min(args.batch_size, len(order) - i) >= world]
    bar = tqdm(starts, desc=desc, disable=args.quiet or not show, mininterval=5.0, leave=False)
    for i in bar:
        rows = np.sort(order[i : i + args.batch_size][rank::world])
        length = max(1, int(mask[rows].sum(1).max()))
        if stage == 1:
            teacher = cache.get(rows, pad_to=length)
        else:
            teacher = {"labels": cache.labels[rows]}
            if cache.logits is not None:
                teacher["logits"] = cache.logits[rows]
        lr = lr_at(step0 + n, total, args.lr, args.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        terms = net(ids[rows, :length], mask[rows, :length], teacher, stage)
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            nn.utils.clip_grad_norm_(student.parameters(), args.clip)
        opt.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n += 1
        if n % 10 == 0:
            bar.set_postfix(loss=f"{sum(sums.values()) / n:.4f}", lr=f"{lr:.2g}")
    bar.close()
    return {k: v / max(1, n) for k, v in sums.items()}


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(PROG, build_parser(), train, argv,
                       interrupted="interrupted; rerun the same command to resume from the last finished epoch")


if __name__ == "__main__":
    sys.exit(main())
