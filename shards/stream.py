"""Endless, seeded streams of one kind's samples, resumable at an exact position.

A reader `g` of `G` (the trainer's logical DataLoader workers across all ranks) reads its own slice
of a kind's shards (`shards[g::G]`; every shard when there are fewer than `G`) as an endless, seeded
sequence of epochs: shards are resampled in a fresh permutation each epoch, so uneven shard sizes
never end one reader's stream before another's, and `chunk` consecutive shards are read together and
shuffled as one buffer. Every draw is a pure function of (seed, stream id, g, position) and the index
knows every shard's count, so a position is one integer and resuming at it reads only the shards
that hold it. Samples come from format.read_shard: checked against index.json, decoded by the format.
What the samples become (tasks, balance, sequences) is the trainer's business (trainer/batches.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from facecorpus.shards import format as fmt


class ShardSequence:
    """The endless shard order of one reader for one kind, read in shuffled chunks."""

    def __init__(self, index: fmt.ShardIndex, shards: list[fmt.ShardEntry], g: int, G: int, seed: tuple[int, ...],
                 chunk: int, check_sha256: bool = True):
        if not shards:
            raise ValueError("a ShardSequence needs at least one shard")
        shards = sorted(shards, key=lambda s: s.path)   # the order is the stream's, whatever the index's
        self.index, self.check_sha256 = index, check_sha256
        self.shards = shards[g::G] if len(shards) >= G else shards
        self.seed = (*seed, g)
        self.chunk = max(1, min(chunk, len(self.shards)))

    def _shard(self, n: int) -> fmt.ShardEntry:
        S = len(self.shards)
        epoch = np.random.default_rng([*self.seed, 0, n // S]).permutation(S)
        return self.shards[epoch[n % S]]

    def _chunk(self, c: int) -> list[fmt.ShardEntry]:
        return [self._shard(n) for n in range(c * self.chunk, (c + 1) * self.chunk)]

    def samples(self, start: int) -> Iterator[fmt.Sample]:
        """Samples from position `start` on, forever; chunks before it are skipped by their index counts."""
        c = 0
        while True:
            size = sum(s.count for s in self._chunk(c))
            if start < size:
                break
            start, c = start - size, c + 1
        while True:
            group = [s for entry in self._chunk(c) for s in fmt.read_shard(self.index, entry, self.check_sha256)]
            order = np.random.default_rng([*self.seed, 1, c]).permutation(len(group))
            for i in order[start:]:
                yield group[i]
            start, c = 0, c + 1
