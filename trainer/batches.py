"""Exactly balanced four-task micro-batches from the shards, resumable at an exact position.

Each rank runs `W` DataLoader workers (`W = 1` without workers). Logical worker `g = rank * W + l`
of `G = world * W` reads one endless sample stream per kind (shards/stream.py: its own slice of the
kind's shards, seeded, positioned by one integer), so the data position is one integer per rank
(micro-batches consumed).

Each micro-batch holds `micro_batch / len(data.tasks)` sequences of each task of `data.tasks` (by
default the four, each once: a quarter each; a task named twice gets twice the share), each from the
next sample of its kind's stream (caption samples for face<->caption, attribute samples for
face<->attributes): every micro-batch, hence every global batch, holds exactly the chosen mix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from facecorpus.records import KINDS
from facecorpus.shards import format as fmt
from facecorpus.shards.stream import ShardSequence

from .sequences import TASKS, SequenceBuilder, collate

# The kind of record each task reads (face->caption and caption->face read captions, ...).
KIND_OF_TASK = {task: "caption" if "caption" in task else "attributes" for task in TASKS}
STAT_KEYS = ("captions truncated", "caption ids dropped", "attribute texts subset", "attribute pairs dropped")


def training_index(shards: str, split: str, kinds: tuple[str, ...] = KINDS,
                   why: str = "all four tasks need both kinds") -> fmt.ShardIndex:
    """The shards' index, refused before any work if its vocabulary is foreign or `split` lacks one of `kinds`."""
    index = fmt.read_index(shards)
    index.check_vocab()
    for kind in kinds:
        if sum(e.count for e in index.select(split, kind)) == 0:
            raise fmt.FormatError(f"{index.file}: split {split!r} has no {kind} samples; {why}")
    return index


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
    start_batch: int = 0       # micro-batches this rank consumed before (the checkpointed data position)
    check_sha256: bool = True  # hash each shard against index.json when it is read (its size is always checked)
    tasks: tuple[str, ...] = TASKS   # the tasks of each micro-batch, in equal shares (data.tasks)


def task_kinds(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """The kinds of record `tasks` read, in KINDS order."""
    return tuple(k for k in KINDS if any(KIND_OF_TASK[t] == k for t in tasks))


def worker_start(start_batch: int, physical: int, W: int) -> tuple[int, int]:
    """(logical worker, its first batch number) for a physical worker after `start_batch` batches.

    The DataLoader hands out batches round-robin from worker 0; relabelling worker w as
    (w + start) mod W makes the resumed order continue exactly where the interrupted one stopped.
    """
    logical = (physical + start_batch) % W
    return logical, max(0, -(-(start_batch - logical) // W))


class ShardBatches(torch.utils.data.IterableDataset):
    """Endless micro-batches of one rank, made from shard samples by `_batches`. Inside a DataLoader
    worker a data error becomes a batch {"error": message} that make_loader raises: raised in the
    worker, torch would bury the message in the worker's traceback."""

    def __iter__(self):
        try:
            yield from self._batches()
        except fmt.FormatError as exc:
            if torch.utils.data.get_worker_info() is None:
                raise
            yield {"error": str(exc)}

    def _batches(self):
        raise NotImplementedError

    def reader(self) -> tuple[int, int, int, int, int]:
        """(W, logical worker, its first batch number j, reader g, readers G) of this DataLoader
        worker: its batches are this rank's numbers j * W + logical, j = j, j + 1, ..."""
        sp = self.spec
        info = torch.utils.data.get_worker_info()
        W = max(1, sp.num_workers)
        logical, j = worker_start(sp.start_batch, info.id if info else 0, W)
        return W, logical, j, sp.rank * W + logical, sp.world * W


class BalancedStream(ShardBatches):
    """Endless Talk2Face micro-batches {ids, seg, targets, task, stats} for one rank."""

    def __init__(self, spec: StreamSpec):
        super().__init__()
        self.spec = spec
        self.index = training_index(spec.shards, spec.split, task_kinds(spec.tasks),
                                    f"the tasks {', '.join(spec.tasks)} read them")

    def _batches(self):
        sp = self.spec
        _, _, j, g, G = self.reader()
        per = sp.micro_batch // len(sp.tasks)
        # Samples of each kind one micro-batch takes: its stream's position is j times that.
        take = {k: per * sum(KIND_OF_TASK[t] == k for t in sp.tasks) for k in task_kinds(sp.tasks)}
        streams = {k: ShardSequence(self.index, self.index.select(sp.split, k), g, G, (sp.seed, KINDS.index(k)),
                                    sp.shuffle_shards, sp.check_sha256).samples(j * n)
                   for k, n in take.items()}
        builder = SequenceBuilder(sp.seq_len, self.index.grid)
        while True:
            rng = np.random.default_rng([sp.seed, 2, g, j])
            instances = [_instance(builder, next(streams[KIND_OF_TASK[task]]), task, rng)
                         for task in sp.tasks for _ in range(per)]
            batch = collate(instances, sp.width, sp.loss_on)
            batch["stats"] = torch.tensor([builder.stats[k] for k in STAT_KEYS])
            builder.stats.clear()
            yield batch
            j += 1


def _instance(builder: SequenceBuilder, s: fmt.Sample, task: str, rng: np.random.Generator):
    """One training instance of `task` (a name of TASKS) from sample `s`."""
    kind = KIND_OF_TASK[task]
    where = f"{s.shard}: sample {fmt.show(s.key)}"
    if s.kind != kind:
        raise fmt.FormatError(f"{where} has kind {s.kind!r} inside a {kind} shard")
    try:
        text = builder.caption(s.text) if kind == "caption" else builder.attributes(s.text, rng, where)
    except ValueError as exc:   # an attribute text that does not parse or fit: the data's fault
        raise fmt.FormatError(str(exc)) from None
    return builder.build(TASKS.index(task), s.codes, text)


def make_loader(dataset: ShardBatches) -> Iterator:
    """The rank's batches; a data error in any worker stops the run with its message alone."""
    spec = dataset.spec
    # Its own generator: creating the iterator must not draw from the global RNG that dropout uses,
    # or a resumed run (which creates it after restoring RNG state) would drift from a straight one.
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=spec.num_workers,
                                         generator=torch.Generator().manual_seed(spec.seed),
                                         pin_memory=torch.cuda.is_available(),
                                         prefetch_factor=4 if spec.num_workers else None, persistent_workers=False)
    for batch in loader:
        if isinstance(batch, dict) and "error" in batch:
            raise fmt.FormatError(batch["error"])
        yield batch
