"""Train a word-level EGRU or LSTM language model and export an eventsim checkpoint.

    python -m training.train_lm --model egru --corpus news --emb 64 --hidden 160,160,64 \\
        --epochs 2 --out model.safetensors

AdamW, gradient-norm clipping, truncated BPTT over ``--batch-size`` parallel
token streams, cosine learning rate with linear warm-up. After each epoch the
validation perplexity is printed and appended to ``<out>.log.jsonl``; the model
with the best validation perplexity is kept, tested, and written to ``--out``.

Resuming: after each epoch the run state (model, best model, AdamW moments,
epoch, step, history) is written next to ``--out`` as ``<out>.state.safetensors``
plus ``<out>.state.json``; rerunning the same command continues from it
(``--fresh`` starts over). The random generator is reseeded from
``(seed, epoch, rank)`` at the start of every epoch, so a resumed run equals an
uninterrupted one bit for bit.

Under ``torchrun --nproc_per_node N`` the run is data-parallel (DDP, gloo):
each rank trains on its slice of the batch streams; only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eventsim.errors import EventsimError
from training.corpus import load_corpus, unigram_perplexity
from training.lm import LanguageModel, detach_state, save_lm

PROG = "train_lm"
# Arguments that do not change what is computed; all others must match to resume.
NOT_CONFIG = {"out", "threads", "stop_after", "fresh", "quiet", "data_dir"}


class UsageError(Exception):
    """Bad arguments or input; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Train an EGRU/LSTM language model and export an eventsim checkpoint.")
    p.add_argument("--model", choices=("egru", "lstm"), default="egru")
    p.add_argument("--corpus", default="news", help="news | ptb | wikitext2 | path to a text file")
    p.add_argument("--data-dir", help="folder with the ptb / wikitext2 files (instead of the hub)")
    p.add_argument("--vocab-size", type=int, default=10_000)
    p.add_argument("--max-train-tokens", type=int, help="use only the first N training tokens")
    p.add_argument("--max-eval-tokens", type=int, help="use only the first N valid and test tokens")
    p.add_argument("--emb", type=int, default=64, help="embedding size (= last hidden size, tied decoder)")
    p.add_argument("--hidden", default="160", help="H (with --layers) or H1,H2,...,E")
    p.add_argument("--layers", type=int, default=3, help="number of recurrent layers when --hidden is one size")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--bptt", type=int, default=70)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=10)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=0.5, help="max gradient norm (0: no clipping)")
    p.add_argument("--dropout-emb", type=float, default=0.05, help="drop whole words' embeddings")
    p.add_argument("--dropout-in", type=float, default=0.2, help="locked dropout on embeddings")
    p.add_argument("--dropout-hidden", type=float, default=0.2, help="locked dropout between layers")
    p.add_argument("--dropout-out", type=float, default=0.2, help="locked dropout before the decoder")
    p.add_argument("--dropconnect", type=float, default=0.2, help="DropConnect on recurrent_kernel")
    p.add_argument("--thr-mean", type=float, default=0.3, help="EGRU: mean of the initial thresholds")
    p.add_argument("--dampening", type=float, default=0.7, help="EGRU: surrogate gradient height")
    p.add_argument("--support", type=float, default=1.0, help="EGRU: surrogate gradient 1/half-width")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing run state and start over")
    p.add_argument("--stop-after", type=int, help="stop after this many epochs in this invocation (rerun to go on)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def hidden_sizes(args: argparse.Namespace) -> list[int]:
    try:
        sizes = [int(s) for s in str(args.hidden).split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--hidden must be sizes separated by commas, got {args.hidden!r}") from None
    if len(sizes) == 1 and "," not in str(args.hidden):
        if args.layers < 1:
            raise UsageError(f"--layers must be at least 1, got {args.layers}")
        sizes = [sizes[0]] * (args.layers - 1) + [args.emb]
    if not sizes or any(s <= 0 for s in sizes):
        raise UsageError(f"--hidden sizes must be positive, got {args.hidden!r}")
    if sizes[-1] != args.emb:
        raise UsageError(f"the last hidden size ({sizes[-1]}) must equal --emb ({args.emb}): the decoder is tied")
    return sizes


def validate(args: argparse.Namespace, world: int) -> None:
    positive = ("vocab_size", "emb", "epochs", "bptt", "batch_size", "eval_batch_size")
    for name in positive:
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("max_train_tokens", "max_eval_tokens", "threads", "stop_after"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if not args.lr > 0 or args.weight_decay < 0 or args.clip < 0 or args.warmup_steps < 0:
        raise UsageError("--lr must be positive; --weight-decay, --clip and --warmup-steps non-negative")
    for name in ("dropout_emb", "dropout_in", "dropout_hidden", "dropout_out", "dropconnect"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(args, name)}")
    if not 0.0 < args.thr_mean < 1.0:
        raise UsageError(f"--thr-mean must be in (0, 1), got {args.thr_mean}")
    if args.batch_size % world:
        raise UsageError(f"--batch-size {args.batch_size} is not divisible by the {world} processes")
    if not str(args.out).endswith(".safetensors"):
        raise UsageError(f"--out must name a .safetensors file, got {args.out!r}")
    if not Path(args.out).resolve().parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {Path(args.out).parent} does not exist")


@dataclass(frozen=True)
class RunFiles:
    checkpoint: Path
    state: Path
    state_json: Path
    log: Path

    @classmethod
    def next_to(cls, out: str) -> RunFiles:
        p = Path(out)
        stem = p.with_name(p.name[: -len(".safetensors")])
        return cls(p, Path(f"{stem}.state.safetensors"), Path(f"{stem}.state.json"), Path(f"{stem}.log.jsonl"))


def batchify(ids: np.ndarray, streams: int) -> torch.Tensor:
    """``[N]`` ids to ``[N // streams, streams]``: column k is the k-th contiguous slice."""
    n = len(ids) // streams
    return torch.from_numpy(np.ascontiguousarray(ids[: n * streams].reshape(streams, n).T))


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)


def evaluate(model: LanguageModel, ids: np.ndarray, batch: int, bptt: int, rank: int, world: int) -> dict:
    """Perplexity and per-layer activity (fraction of non-zero outputs) over ``ids``."""
    model.eval()
    data = batchify(ids, batch)[:, rank::world]
    n_layers = len(model.layers)
    totals = torch.zeros(3 + 2 * n_layers, dtype=torch.float64)  # loss, tokens, _, (nonzero, count) per layer
    state = None
    with torch.no_grad():
        for i in range(0, max(0, data.shape[0] - 1), bptt):
            seq = min(bptt, data.shape[0] - 1 - i)
            x, y = data[i : i + seq], data[i + 1 : i + 1 + seq]
            logits, state, outputs = model(x, state)
            totals[0] += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            totals[1] += y.numel()
            for k, o in enumerate(outputs):
                totals[3 + 2 * k] += int(torch.count_nonzero(o))
                totals[4 + 2 * k] += o.numel()
    if world > 1:
        torch.distributed.all_reduce(totals)
    if totals[1] == 0:
        raise UsageError(f"evaluation split too short for {batch} streams")
    loss = float(totals[0] / totals[1])
    activity = [float(totals[3 + 2 * k] / max(1.0, float(totals[4 + 2 * k]))) for k in range(n_layers)]
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "activity": activity, "tokens": int(totals[1])}


def save_state(files: RunFiles, model: LanguageModel, best: dict, opt: torch.optim.Optimizer, info: dict) -> None:
    """Run state in safetensors (tensors) + JSON (scalars); both written atomically."""
    from safetensors.torch import save_file

    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.clone().contiguous() for k, v in best.items()})
    steps = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                tensors[f"optim.{names[id(p)]}.exp_avg"] = st["exp_avg"].contiguous()
                tensors[f"optim.{names[id(p)]}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
                steps[names[id(p)]] = float(st["step"])
    info = {**info, "optim_steps": steps}
    tmp = files.state.with_name(files.state.name + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(files.state)
    tmp = files.state_json.with_name(files.state_json.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(files.state_json)


def load_state(files: RunFiles, model: LanguageModel, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Restore model and optimizer; returns (info, best model tensors)."""
    from safetensors.torch import load_file

    info = json.loads(files.state_json.read_text())
    tensors = load_file(str(files.state))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
    opt_state = opt.state_dict()
    names = {id(p): n for n, p in model.named_parameters()}
    # state_dict numbers the parameters 0, 1, ... in param-group order.
    ordered = [names[id(p)] for group in opt.param_groups for p in group["params"]]
    index = {name: pid for name, pid in zip(ordered, (i for g in opt_state["param_groups"] for i in g["params"]), strict=True)}
    new_state = {}
    for name, step in info["optim_steps"].items():
        new_state[index[name]] = {
            "step": torch.tensor(step),
            "exp_avg": tensors[f"optim.{name}.exp_avg"],
            "exp_avg_sq": tensors[f"optim.{name}.exp_avg_sq"],
        }
    opt_state["state"] = new_state
    opt.load_state_dict(opt_state)
    return info, best


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def weight_sparsity(model: LanguageModel) -> dict[str, float]:
    return {k: float((v == 0).sum()) / max(1, v.numel()) for k, v in model.state_dict().items()}


def train_epoch(
    net: nn.Module,
    model: LanguageModel,
    data: torch.Tensor,
    opt: torch.optim.Optimizer,
    args: argparse.Namespace,
    step0: int,
    total_steps: int,
    desc: str,
    show: bool = True,
    after_step=None,
) -> tuple[float, int, float]:
    """One pass of truncated BPTT over ``data [N, streams]`` with the warm-up/cosine schedule.

    ``net`` is ``model`` or its DDP wrapper; ``after_step()`` runs after every optimizer
    step (pruning re-applies its masks there). Returns (mean loss, steps taken, last lr).
    """
    from tqdm import tqdm

    model.train()
    state, loss_sum, n, lr = None, 0.0, 0, args.lr
    bar = tqdm(range(0, data.shape[0] - 1, args.bptt), desc=desc, disable=args.quiet or not show,
               mininterval=5.0, leave=False)
    for i in bar:
        seq = min(args.bptt, data.shape[0] - 1 - i)
        x, y = data[i : i + seq], data[i + 1 : i + 1 + seq]
        lr = lr_at(step0 + n, total_steps, args.lr, args.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        logits, state, _ = net(x, detach_state(state))
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        if after_step is not None:
            after_step()
        model.clamp_thresholds()
        loss_sum, n = loss_sum + loss.item(), n + 1
        if n % 20 == 0:
            bar.set_postfix(ppl=f"{math.exp(min(loss_sum / n, 50)):.1f}", lr=f"{lr:.2g}")
    bar.close()
    return loss_sum / max(1, n), n, lr


def train(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    validate(args, world)
    sizes = hidden_sizes(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if world > 1:
        torch.distributed.init_process_group("gloo")
    files = RunFiles.next_to(args.out)
    config = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_CONFIG}
    lead = rank == 0

    corpus = load_corpus(args.corpus, data_dir=args.data_dir, vocab_size=args.vocab_size,
                         max_train_tokens=args.max_train_tokens, max_eval_tokens=args.max_eval_tokens)
    train_data = batchify(corpus.train, args.batch_size)
    per_rank = args.batch_size // world
    train_data = train_data[:, rank * per_rank : (rank + 1) * per_rank]
    if train_data.shape[0] < 2:
        raise UsageError(f"training split ({len(corpus.train)} tokens) is too short for {args.batch_size} streams")
    steps_per_epoch = math.ceil((train_data.shape[0] - 1) / args.bptt)
    total_steps = steps_per_epoch * args.epochs

    torch.manual_seed(args.seed)
    model = LanguageModel(
        len(corpus.vocabulary), args.emb, sizes, kind=args.model,
        dropout_emb=args.dropout_emb, dropout_in=args.dropout_in, dropout_hidden=args.dropout_hidden,
        dropout_out=args.dropout_out, dropconnect=args.dropconnect,
        egru_options={"thr_mean": args.thr_mean, "dampening": args.dampening, "support": args.support}
        if args.model == "egru" else None,
    )
    with torch.no_grad():  # start from the unigram model: logits = log word frequencies
        counts = np.bincount(corpus.train, minlength=len(corpus.vocabulary)).astype(np.float64) + 1.0
        model.decoder.bias.copy_(torch.from_numpy(np.log(counts / counts.sum())))
    decay = [p for n, p in model.named_parameters() if n.endswith(("kernel", "weight"))]
    no_decay = [p for n, p in model.named_parameters() if not n.endswith(("kernel", "weight"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    info = {"epoch": 0, "step": 0, "best_valid_ppl": None, "best_epoch": None, "history": [], "train_seconds": 0.0,
            "config": config}
    if files.state.exists() and files.state_json.exists() and not args.fresh:
        saved = json.loads(files.state_json.read_text())
        if saved.get("config") != config:
            diff = sorted(k for k in set(config) | set(saved.get("config", {})) if config.get(k) != saved["config"].get(k))
            raise UsageError(f"{files.state} was made with other settings ({', '.join(diff)}); rerun with them or pass --fresh")
        info, best = load_state(files, model, opt)
        if lead:
            print(f"{PROG}: resuming after epoch {info['epoch']} from {files.state}", file=sys.stderr)
    elif lead and args.fresh:
        files.log.unlink(missing_ok=True)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    done_here = 0
    while info["epoch"] < args.epochs and (args.stop_after is None or done_here < args.stop_after):
        epoch = info["epoch"]
        torch.manual_seed(epoch_seed(args.seed, epoch, rank))
        t0 = time.time()
        mean_loss, n_batches, lr = train_epoch(
            net, model, train_data, opt, args, info["step"], total_steps,
            desc=f"epoch {epoch + 1}/{args.epochs}", show=lead)
        info["step"] += n_batches
        train_seconds = time.time() - t0
        valid = evaluate(model, corpus.valid, args.eval_batch_size, args.bptt, rank, world)
        info["epoch"] = epoch + 1
        info["train_seconds"] += train_seconds
        record = {"epoch": epoch + 1, "train_ppl": math.exp(min(mean_loss, 50.0)),
                  "valid_ppl": valid["ppl"], "valid_activity": valid["activity"], "lr": lr,
                  "seconds": round(train_seconds, 2)}
        info["history"].append(record)
        if info["best_valid_ppl"] is None or valid["ppl"] < info["best_valid_ppl"]:
            info["best_valid_ppl"], info["best_epoch"] = valid["ppl"], epoch + 1
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if lead:
            activity = ", ".join(f"{a:.3f}" for a in valid["activity"])
            print(f"epoch {epoch + 1}/{args.epochs}  train ppl {record['train_ppl']:.2f}  valid ppl {valid['ppl']:.2f}  "
                  f"activity [{activity}]  {train_seconds:.0f}s", flush=True)
            with open(files.log, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            save_state(files, model, best, opt, info)
        done_here += 1

    result = {"finished": info["epoch"] >= args.epochs, "epoch": info["epoch"]}
    if result["finished"]:
        model.load_state_dict(best)
        best_record = info["history"][info["best_epoch"] - 1]
        valid = {"ppl": best_record["valid_ppl"], "activity": best_record["valid_activity"]}
        test = evaluate(model, corpus.test, args.eval_batch_size, args.bptt, rank, world)
        provenance = {
            "dataset": corpus.name,
            "vocab_size": len(corpus.vocabulary),
            "train_tokens": int(len(corpus.train)),
            "epochs": args.epochs,
            "best_epoch": info["best_epoch"],
            "seed": args.seed,
            "valid_perplexity": valid["ppl"],
            "test_perplexity": test["ppl"],
            "unigram_test_perplexity": unigram_perplexity(corpus, "test"),
            "valid_activity": valid["activity"],
            "test_activity": test["activity"],
            "weight_sparsity": weight_sparsity(model),
            "train_seconds": round(info["train_seconds"], 1),
            "processes": world,
            "git_commit": git_commit(),
            "command": " ".join(shlex.quote(a) for a in ["python", "-m", "training.train_lm", *argv]),
            "config": config,
            "torch": torch.__version__,
        }
        if lead:
            save_lm(files.checkpoint, model, corpus.vocabulary, provenance)
            with open(files.log, "a") as fh:
                fh.write(json.dumps({"event": "test", "valid_ppl": valid["ppl"], "test_ppl": test["ppl"],
                                     "test_activity": test["activity"], "best_epoch": info["best_epoch"]}) + "\n")
            print(f"best epoch {info['best_epoch']}: valid ppl {valid['ppl']:.2f}  test ppl {test['ppl']:.2f}  "
                  f"test activity [{', '.join(f'{a:.3f}' for a in test['activity'])}]  -> {files.checkpoint}", flush=True)
        result.update(valid_ppl=valid["ppl"], test_ppl=test["ppl"], activity=test["activity"])
    if world > 1:
        torch.distributed.destroy_process_group()
    return result


def run_command(prog: str, parser: argparse.ArgumentParser, job, argv: Sequence[str] | None,
                interrupted: str | None = None) -> int:
    """Parse ``argv``, run ``job(args, argv)``; bad input is one ``prog: error:`` line and exit 2.

    With ``interrupted`` set, Ctrl-C prints it and exits 1 (work already written is kept).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        job(parser.parse_args(argv), argv)
    except (UsageError, EventsimError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(PROG, build_parser(), train, argv)


if __name__ == "__main__":
    sys.exit(main())
