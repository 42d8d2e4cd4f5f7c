"""The teacher cache: one pass of a fine-tuned teacher, stored as what distillation reads.

``python -m training.teacher cache`` (:func:`build_cache`) runs the teacher over
the chosen splits and writes, per shard of texts, the hidden states of the mapped
layers, the attention maps (head-averaged or per head), the logits, labels and
token ids (float16 safetensors; temp name + rename). The cache is keyed by
sha256(data hash, teacher weights hash, tokenizer hash, max length, layers,
per-head): a rerun skips finished shards, and a folder made for other data or
another teacher is refused, never reused. :class:`TeacherCache` reads one split
back lazily for the trainers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eventsim.errors import EventsimError
from training.run_state import UsageError
from training.sentiment_data import encode
from training.teacher import (
    PROG,
    _batch,
    _require_head,
    _setup,
    _splits,
    _write_folder,
    _write_json,
    load_classifier,
    load_tokenizer,
    parse_layers,
    teacher_hashes,
)

CACHE_FORMAT = "eventsim-teacher-cache"
CACHE_VERSION = 1


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION, **parts},
                                     sort_keys=True).encode()).hexdigest()


def _parts_diff(mine: dict, theirs: dict) -> str:
    names = {"data_hash": "other data", "teacher_hash": "another teacher", "tokenizer_hash": "another tokenizer",
             "max_length": "another max length", "layers": "other layers", "per_head": "another --per-head"}
    out = []
    for k, what in names.items():
        if mine.get(k) != theirs.get(k):
            a, b = theirs.get(k), mine.get(k)
            a, b = (a[:12], b[:12]) if isinstance(a, str) and isinstance(b, str) else (a, b)
            out.append(f"{what} ({k} {a} in the cache, {b} here)")
    return "; ".join(out) or "another cache format"


def _shard_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.safetensors"


def _shard_done(path: Path, key: str, start: int, stop: int) -> bool:
    from safetensors import safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception:  # a truncated or foreign file: recompute it
        return False
    return meta.get("key") == key and meta.get("start") == str(start) and meta.get("stop") == str(stop)


def _teacher_rows(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, layers: tuple[int, ...],
                  per_head: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Per row: hidden [len, n_layers, H] and attention [len * len, A, heads or 1] (real positions only); logits."""
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    hidden = torch.stack([out.hidden_states[k] for k in layers], dim=2)  # [b, L, nl, H]
    att_layers = [k for k in layers if k > 0]
    b, L = ids.shape
    if att_layers:
        att = torch.stack([out.attentions[k - 1] for k in att_layers], dim=1)  # [b, A, heads, L, L]
        if not per_head:
            att = att.mean(dim=2, keepdim=True)
    else:
        att = torch.zeros(b, 0, 1, L, L)
    lengths = mask.sum(dim=1).tolist()
    hs, ats = [], []
    for i, n in enumerate(lengths):
        hs.append(hidden[i, :n])
        ats.append(att[i, :, :, :n, :n].permute(2, 3, 0, 1).reshape(n * n, att.shape[1], att.shape[2]))
    return hs, ats, out.logits.float()


def build_cache(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from safetensors.torch import save_file
    from tqdm import tqdm

    if args.shard_size <= 0:
        raise UsageError(f"--shard-size must be positive, got {args.shard_size}")
    data, folder, cfg = _setup(args)
    wanted = _splits(args.splits)
    _require_head(folder, cfg, data)
    model = load_classifier(folder, attention="eager")
    model.eval()
    mc = model.config
    layers = parse_layers(args.layers, mc.num_hidden_layers)
    parts = {"data_hash": data.content_hash, **teacher_hashes(folder), "max_length": args.max_length,
             "layers": list(layers), "per_head": bool(args.per_head)}
    key = cache_key(parts)
    out = Path(args.out)
    manifest_file = out / "manifest.json"
    if manifest_file.is_file():
        try:
            old = json.loads(manifest_file.read_text(encoding="utf-8"))
        except ValueError:
            raise EventsimError(f"{manifest_file} is not valid JSON; delete the folder to rebuild the cache") from None
        if old.get("key") != key:
            raise EventsimError(f"cache {out} was made for {_parts_diff(parts, old.get('parts', {}))}; "
                                "give another --out or delete it")
        manifest = old
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EventsimError(f"--out {out} exists and is not a teacher cache; give another --out")
    else:
        manifest = {
            "format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "parts": parts,
            "teacher": str(folder), "data": data.name, "labels": list(data.labels), "layers": list(layers),
            "attention_layers": [k for k in layers if k > 0], "per_head": bool(args.per_head),
            "hidden_size": mc.hidden_size, "num_heads": mc.num_attention_heads, "num_layers": mc.num_hidden_layers,
            "max_length": args.max_length, "pad_token_id": int(mc.pad_token_id or 0), "shard_size": args.shard_size,
            "dtype": "float16", "splits": {},
        }
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(folder)
    if not (out / "tokenizer").is_dir():
        _write_folder(out / "tokenizer", lambda tmp: tok.save_pretrained(str(tmp)))
    shard_size = manifest["shard_size"]
    for split in wanted:
        enc = encode(tok, data.texts(split), args.max_length)
        y = data.label_array(split)
        n = len(enc)
        starts = list(range(0, n, shard_size))
        entry = {"rows": n, "truncated": enc.truncated, "shards": [_shard_name(split, k) for k in range(len(starts))],
                 "complete": False, "seconds": manifest["splits"].get(split, {}).get("seconds", 0.0)}
        manifest["splits"][split] = entry
        _write_json(manifest_file, manifest)
        t0 = time.time()
        todo = [k for k, a in enumerate(starts) if not _shard_done(out / entry["shards"][k], key, a, min(n, a + shard_size))]
        if len(todo) < len(starts):
            print(f"{PROG}: {split}: {len(starts) - len(todo)} of {len(starts)} shards already done", file=sys.stderr)
        bar = tqdm(total=sum(min(n, starts[k] + shard_size) - starts[k] for k in todo), desc=f"cache {split}",
                   unit="text", disable=args.quiet, mininterval=5.0, leave=False)
        for k in todo:
            a, b = starts[k], min(n, starts[k] + shard_size)
            hs, ats, logits = [], [], []
            with torch.no_grad():
                for i in range(a, b, args.batch_size):
                    idx = np.arange(i, min(b, i + args.batch_size))
                    ids, mask = _batch(enc, idx)
                    h, at, lg = _teacher_rows(model, ids, mask, layers, args.per_head)
                    hs += h
                    ats += at
                    logits.append(lg)
                    bar.update(len(idx))
            lengths = enc.lengths[a:b]
            tensors = {
                "hidden": torch.cat(hs).to(torch.float16).contiguous(),
                "attention": torch.cat(ats).to(torch.float16).contiguous(),
                "logits": torch.cat(logits).contiguous(),
                "labels": torch.from_numpy(y[a:b].copy()),
                "lengths": torch.from_numpy(lengths.copy()),
                "input_ids": torch.from_numpy(np.concatenate([enc.input_ids[r, : lengths[r - a]] for r in range(a, b)])
                                              .astype(np.int32)),
            }
            path = out / entry["shards"][k]
            tmp = path.with_name(path.name + ".tmp")
            save_file(tensors, str(tmp), metadata={"key": key, "split": split, "start": str(a), "stop": str(b)})
            tmp.replace(path)
        bar.close()
        entry["seconds"] = round(entry["seconds"] + time.time() - t0, 1)
        entry["complete"] = True
        entry["bytes"] = sum((out / s).stat().st_size for s in entry["shards"])
        _write_json(manifest_file, manifest)
        print(f"{PROG}: {split}: {n} texts cached in {entry['seconds']:.0f}s, {entry['bytes'] / 2**20:.1f} MiB",
              flush=True)
    manifest["command"] = " ".join(shlex.quote(a) for a in ["python", "-m", "training.teacher", *argv])
    _write_json(manifest_file, manifest)
    return manifest


class TeacherCache:
    """What the teacher computed for one split, read lazily from the cache's shards.

    ``cache[indices]`` (an int, slice, list or array of row numbers of the split)
    returns a dict of torch tensors, rows in the order asked, positions padded to
    ``max_length`` (or ``cache.get(indices, pad_to=n)``):

    - ``input_ids`` int64 ``[b, L]``, ``attention_mask`` int64 ``[b, L]``: exactly what
      :func:`training.sentiment_data.encode` gives with the cache's tokenizer and max length;
    - ``labels`` int64 ``[b]``; ``logits`` float32 ``[b, classes]``;
    - ``hidden`` ``[b, len(layers), L, hidden_size]``: hidden states after the layers in
      ``.layers`` (0 = embedding output), zero at padding;
    - ``attention`` ``[b, len(attention_layers), attention_heads, L, L]``: attention
      probabilities of the layers in ``.attention_layers`` (mapped layers other than 0),
      averaged over heads (``attention_heads == 1``) unless cached with ``--per-head``;
      zero outside the real query x key block.

    ``hidden`` and ``attention`` are stored as float16 and returned as ``dtype``
    (float32 by default). On disk a shard holds rows ``start:stop`` with only real
    positions: ``hidden [sum len, layers, H]``, ``attention [sum len^2, A, heads]``,
    ``input_ids [sum len]``, ``lengths``, ``labels``, ``logits``.

    ``data_hash`` / ``teacher_hash``, when given, must equal the cache's, or it is refused.
    """

    def __init__(self, folder: str | os.PathLike, split: str = "train", *, data_hash: str | None = None,
                 teacher_hash: str | None = None, dtype: torch.dtype = torch.float32):
        from safetensors import safe_open

        self.folder = Path(folder)
        manifest_file = self.folder / "manifest.json"
        if not manifest_file.is_file():
            raise EventsimError(f"{self.folder} is not a teacher cache (no manifest.json)")
        try:
            m = json.loads(manifest_file.read_text(encoding="utf-8"))
        except ValueError:
            raise EventsimError(f"{manifest_file} is not valid JSON") from None
        if m.get("format") != CACHE_FORMAT or m.get("version") != CACHE_VERSION:
            raise EventsimError(f"{manifest_file}: not a teacher cache of version {CACHE_VERSION}")
        parts = m["parts"]
        for name, want in (("data_hash", data_hash), ("teacher_hash", teacher_hash)):
            if want is not None and parts[name] != want:
                what = "other data" if name == "data_hash" else "another teacher"
                raise EventsimError(f"teacher cache {self.folder} was made for {what} ({name} {parts[name][:12]} in "
                                    f"the cache, {want[:12]} here); rebuild it with python -m training.teacher cache")
        entry = m["splits"].get(split)
        if entry is None or not entry.get("complete"):
            state = "is incomplete" if entry else "was not made"
            raise EventsimError(f"teacher cache {self.folder}: split {split!r} {state}; "
                                "run python -m training.teacher cache (it resumes)")
        self.manifest, self.split, self.dtype = m, split, dtype
        self.key = m["key"]
        self.data_hash, self.teacher_hash = parts["data_hash"], parts["teacher_hash"]
        self.layers = tuple(m["layers"])
        self.attention_layers = tuple(m["attention_layers"])
        self.hidden_size, self.num_heads = int(m["hidden_size"]), int(m["num_heads"])
        self.attention_heads = self.num_heads if m["per_head"] else 1
        self.max_length, self.label_names = int(m["max_length"]), tuple(m["labels"])
        self.pad_token_id = int(m["pad_token_id"])
        self._handles, lengths, labels, logits, ids = [], [], [], [], []
        for name in entry["shards"]:
            path = self.folder / name
            if not path.is_file():
                raise EventsimError(f"teacher cache {self.folder}: shard {name} is missing; rerun the cache command")
            fh = safe_open(str(path), framework="pt")
            if (fh.metadata() or {}).get("key") != self.key:
                raise EventsimError(f"teacher cache {self.folder}: shard {name} belongs to another cache")
            self._handles.append(fh)
            lengths.append(fh.get_tensor("lengths"))
            labels.append(fh.get_tensor("labels"))
            logits.append(fh.get_tensor("logits"))
            ids.append(fh.get_tensor("input_ids"))
        self.lengths = torch.cat(lengths).long()
        self.labels = torch.cat(labels).long()
        self.logits = torch.cat(logits).float()
        if len(self.lengths) != entry["rows"]:
            raise EventsimError(f"teacher cache {self.folder}: {len(self.lengths)} rows in the shards, "
                                f"{entry['rows']} in the manifest")
        n = len(self.lengths)
        self._shard_of = np.repeat(np.arange(len(lengths)), [len(x) for x in lengths])
        starts = np.cumsum([0] + [len(x) for x in lengths])
        self._local = np.arange(n) - starts[self._shard_of]
        tok_off, sq_off = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        for s, x in enumerate(lengths):  # offsets restart in every shard
            x = x.numpy().astype(np.int64)
            tok_off[starts[s] : starts[s + 1]] = np.cumsum(x) - x
            sq_off[starts[s] : starts[s + 1]] = np.cumsum(x * x) - x * x
        self._tok_off, self._sq_off = tok_off, sq_off
        L = self.max_length
        self.input_ids = torch.full((n, L), self.pad_token_id, dtype=torch.int64)
        flat = torch.cat(ids).long()
        all_off = np.cumsum(self.lengths.numpy()) - self.lengths.numpy()
        for r in range(n):
            k = int(self.lengths[r])
            self.input_ids[r, :k] = flat[all_off[r] : all_off[r] + k]
        self.attention_mask = (torch.arange(L)[None, :] < self.lengths[:, None]).long()

    def __len__(self) -> int:
        return len(self.lengths)

    def tokenizer(self):
        """The teacher's tokenizer, as stored in the cache folder."""
        return load_tokenizer(self.folder / "tokenizer")

    def check_alignment(self, input_ids: np.ndarray | torch.Tensor) -> None:
        """Refuse (one line) ids ``[n, max_length]`` that differ from the cache's tokenisation of this split."""
        ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.int64)
        if ids.shape != self.input_ids.shape or not torch.equal(ids, self.input_ids):
            raise EventsimError(f"teacher cache {self.folder}: the student's token ids differ from the cache's "
                                f"({tuple(ids.shape)} vs {tuple(self.input_ids.shape)}); tokenise with cache.tokenizer() "
                                f"and max length {self.max_length}")

    def get(self, indices, pad_to: int | None = None) -> dict[str, torch.Tensor]:
        if isinstance(indices, torch.Tensor):
            indices = indices.numpy()
        rows = np.atleast_1d(np.arange(len(self))[indices]).astype(np.int64)
        L = self.max_length if pad_to is None else int(pad_to)
        longest = int(self.lengths[torch.from_numpy(rows)].max()) if len(rows) else 0
        if L < longest:
            raise EventsimError(f"pad_to {L} is shorter than the longest of these rows ({longest})")
        b, nl, A, h = len(rows), len(self.layers), len(self.attention_layers), self.attention_heads
        hidden = torch.zeros(b, nl, L, self.hidden_size, dtype=self.dtype)
        attention = torch.zeros(b, A, h, L, L, dtype=self.dtype)
        for i, r in enumerate(rows):
            fh, n = self._handles[self._shard_of[r]], int(self.lengths[r])
            t0, s0 = int(self._tok_off[r]), int(self._sq_off[r])
            hidden[i, :, :n] = fh.get_slice("hidden")[t0 : t0 + n].to(self.dtype).permute(1, 0, 2)
            if A:
                block = fh.get_slice("attention")[s0 : s0 + n * n].to(self.dtype)  # [n*n, A, h]
                attention[i, :, :, :n, :n] = block.reshape(n, n, A, h).permute(2, 3, 0, 1)
        t = torch.from_numpy(rows)
        return {"input_ids": self.input_ids[t, :L], "attention_mask": self.attention_mask[t, :L],
                "labels": self.labels[t], "logits": self.logits[t], "hidden": hidden, "attention": attention}

    def __getitem__(self, indices) -> dict[str, torch.Tensor]:
        return self.get(indices)
