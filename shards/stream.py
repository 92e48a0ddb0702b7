"""Stream shards into balanced four-task micro-batches, resumable at an exact position.

Each rank runs `W` DataLoader workers (`W = 1` without workers). Logical worker `g = rank * W + l`
of `G = world * W` reads its own slice of each kind's shards (`shards[g::G]`; every shard when there
are fewer than `G`) as an endless, seeded sequence of epochs: shards are resampled in a fresh
permutation each epoch, so uneven shard sizes never end one rank's stream before another's (no
end-of-epoch hang), and `shuffle_shards` consecutive shards are read together and shuffled as one
buffer. Every draw is a pure function of (seed, g, position) and the index knows every shard's
count, so the data position is one integer per rank (micro-batches consumed) and resuming at it
reads only the shards that hold it.

Each micro-batch takes `micro_batch / 2` caption samples (half face->caption, half caption->face)
and `micro_batch / 2` attribute samples (half face->attributes, half attributes->face): every
micro-batch, hence every global batch, holds exactly a quarter of each task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from facecorpus.trainer.sequences import SequenceBuilder, collate

from facecorpus import vocab

INDEX_FORMAT = "facecorpus-shards/1"
KINDS = ("caption", "attributes")
_TASKS_OF_KIND = {"caption": (0, 1), "attributes": (2, 3)}   # (face->text, text->face) in sequences.TASKS


def load_index(shards: str | Path, split: str = "train") -> dict:
    """Read and check `index.json`; returns it with `by_kind` = {kind: [(path, count), ...]} for `split`."""
    root = Path(shards)
    path = root / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shard index (run `facecorpus shard` first)")
    index = json.loads(path.read_text())
    if index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r}, expected {INDEX_FORMAT!r}")
    got = (index.get("text_vocab") or {}).get("sha256")
    if got != vocab.VOCAB_SHA256:
        raise ValueError(f"{path}: shards were tokenized with text vocabulary sha256 {got}, but this facecorpus "
                         f"uses {vocab.VOCAB_SHA256} (bert-base-uncased); re-shard with this version")
    by_kind = {k: [] for k in KINDS}
    for i, s in enumerate(index["shards"]):
        if s["split"] != split:
            continue
        if s["kind"] not in by_kind:
            raise ValueError(f"{path}: shards[{i}] has kind {s['kind']!r}, expected one of {KINDS}")
        if not (root / s["path"]).is_file():
            raise FileNotFoundError(f"{path}: shards[{i}] {s['path']} is missing under {root}")
        by_kind[s["kind"]].append((str(root / s["path"]), int(s["count"])))
    for kind, shards_ in by_kind.items():
        if sum(c for _, c in shards_) == 0:
            raise ValueError(f"{path}: split {split!r} has no {kind} samples; all four tasks need both kinds")
        shards_.sort()
    index["by_kind"] = by_kind
    return index


class ShardSequence:
    """The endless shard order of one logical worker for one kind, read in shuffled chunks."""

    def __init__(self, shards: list[tuple[str, int]], g: int, G: int, seed: int, kind_id: int, chunk: int):
        shards = [s for s in shards if s[1] > 0]   # an empty shard in a slice would leave a worker nothing to read
        self.shards = shards[g::G] if len(shards) >= G else shards
        self.seed = (seed, kind_id, g)
        self.chunk = max(1, min(chunk, len(self.shards)))

    def _shard(self, n: int) -> tuple[str, int]:
        S = len(self.shards)
        epoch = np.random.default_rng([*self.seed, 0, n // S]).permutation(S)
        return self.shards[epoch[n % S]]

    def _chunk(self, c: int) -> list[tuple[str, int]]:
        return [self._shard(n) for n in range(c * self.chunk, (c + 1) * self.chunk)]

    def samples(self, start: int):
        """Samples from position `start` on, forever; chunks before it are skipped by their index counts."""
        c = 0
        while True:
            size = sum(n for _, n in self._chunk(c))
            if start < size:
                break
            start, c = start - size, c + 1
        while True:
            group = self._chunk(c)
            samples = [s for path, n in group for s in read_shard(path, n)]
            order = np.random.default_rng([*self.seed, 1, c]).permutation(len(samples))
            for i in order[start:]:
                yield samples[i]
            start, c = 0, c + 1


def read_shard(path: str, expected: int) -> list[dict]:
    """All samples of one shard as {key, codes, text, kind}, checked against the index count."""
    # We split shards ourselves (one exact reader per shard), so webdataset's splitters are off.
    ds = wds.WebDataset(path, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False).decode()
    out = []
    for s in ds:
        where = f"{path}: sample {s.get('__key__')!r}"
        codes, meta = s.get("npy"), s.get("json")
        if codes is None or "txt" not in s or meta is None:
            raise ValueError(f"{where}: needs npy, txt and json members, has {sorted(k for k in s if not k.startswith('__'))}")
        if codes.shape != (16, 16) or codes.dtype != np.uint16 or int(codes.max()) >= vocab.IMAGE_CODES:
            raise ValueError(f"{where}: npy must be uint16 (16, 16) codes < {vocab.IMAGE_CODES}, got {codes.dtype} {codes.shape}")
        out.append({"key": s["__key__"], "codes": codes, "text": s["txt"], "kind": meta["kind"]})
    if len(out) != expected:
        raise ValueError(f"{path}: {len(out)} samples, index.json says {expected}")
    return out


@dataclass
class StreamSpec:
    shards: str
    split: str
    seq_len: int
    width: int
    micro_batch: int
    num_workers: int
    shuffle_shards: int
    loss_on: str
    seed: int
    rank: int = 0
    world: int = 1
    start_batch: int = 0   # micro-batches this rank consumed before (the checkpointed data position)


def worker_start(start_batch: int, physical: int, W: int) -> tuple[int, int]:
    """(logical worker, its first batch number) for a physical worker after `start_batch` batches.

    The DataLoader hands out batches round-robin from worker 0; relabelling worker w as
    (w + start) mod W makes the resumed order continue exactly where the interrupted one stopped.
    """
    logical = (physical + start_batch) % W
    return logical, max(0, -(-(start_batch - logical) // W))


class BalancedStream(torch.utils.data.IterableDataset):
    """Endless micro-batches {ids, seg, targets, task, stats} for one rank."""

    def __init__(self, spec: StreamSpec):
        super().__init__()
        self.spec = spec
        self.index = load_index(spec.shards, spec.split)

    def __iter__(self):
        sp = self.spec
        info = torch.utils.data.get_worker_info()
        W = max(1, sp.num_workers)
        logical, j = worker_start(sp.start_batch, info.id if info else 0, W)
        g, G = sp.rank * W + logical, sp.world * W
        half = sp.micro_batch // 2
        streams = {k: ShardSequence(self.index["by_kind"][k], g, G, sp.seed, i, sp.shuffle_shards).samples(j * half)
                   for i, k in enumerate(KINDS)}
        builder = SequenceBuilder(sp.seq_len)
        while True:
            rng = np.random.default_rng([sp.seed, 2, g, j])
            instances = []
            for kind in KINDS:
                for n in range(half):
                    s = next(streams[kind])
                    if s["kind"] != kind:
                        raise ValueError(f"sample {s['key']!r} has kind {s['kind']!r} inside a {kind} shard")
                    task = _TASKS_OF_KIND[kind][n * 2 // half]
                    text = builder.caption(s["text"]) if kind == "caption" else builder.attributes(s["text"], rng, s["key"])
                    instances.append(builder.build(task, s["codes"], text))
            batch = collate(instances, sp.width, sp.loss_on)
            batch["stats"] = torch.tensor([builder.stats[k] for k in STAT_KEYS])
            builder.stats.clear()
            yield batch
            j += 1


STAT_KEYS = ("captions truncated", "caption ids dropped", "attribute texts subset", "attribute pairs dropped")


def make_loader(spec: StreamSpec) -> torch.utils.data.DataLoader:
    ds = BalancedStream(spec)
    # Its own generator: creating the iterator must not draw from the global RNG that dropout uses,
    # or a resumed run (which creates it after restoring RNG state) would drift from a straight one.
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=spec.num_workers,
                                       generator=torch.Generator().manual_seed(spec.seed),
                                       pin_memory=torch.cuda.is_available(), prefetch_factor=4 if spec.num_workers else None,
                                       persistent_workers=False)
