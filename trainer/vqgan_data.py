"""`train-vqgan`'s images: a manifest split's unique images, read the way `tokenize` reads them, in a
seeded order that a resumed run continues exactly.

The images are the ones `tokenize` would encode (its `plan`: one row per image_id, the first record
by key naming the file and face box), restricted to one split, and each is read, decoded, cropped and
resized to the VQGAN's resolution by tokenize's own read stage (`facecorpus.shards.reading.read_batch`
over facecorpus/preprocess.py: plain files, tar members and Parquet cells alike), so a VQGAN trains on
exactly the pixels it will later encode. An image that
fails to read stops training with its image_id, file and reason (`tokenize` ledgers every such
image, so it is the place to find them all).

Order: the images of epoch e are a permutation seeded by (seed, e); the epochs are concatenated into
one endless sequence, and rank r of w takes its elements r, r + w, r + 2w, ... Rank r's k-th image
therefore depends only on (seed, r, w, k): a run resumed at k reads what the uninterrupted run read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facecorpus import manifest as mf
from facecorpus.excerpt import shorten
from facecorpus.shards.plan import plan
from facecorpus.shards.reading import OK, read_batch


class ImageError(ValueError):
    """An image of the training split that cannot be read; the message names it, its file and why."""


def split_images(manifest: Path, split: str, raw_root: Path | None = None) -> pd.DataFrame:
    """The unique images of `split` (image_id, path, bbox), ordered by image_id."""
    images = plan(Path(manifest), raw_root)
    splits = mf.read_table(Path(manifest), columns=["image_id", "split"]).to_pandas().drop_duplicates("image_id")
    table = images.merge(splits, on="image_id")
    return table[table["split"] == split].sort_values("image_id").reset_index(drop=True)


class Faces(torch.utils.data.Dataset):
    """Image i of a split table as uint8 (size, size, 3) pixels, or an ImageError naming it."""

    def __init__(self, table: pd.DataFrame, size: int):
        self.table, self.size = table, size

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> torch.Tensor:
        row = self.table.iloc[i]
        out = read_batch({k: np.array([row[k]], object) for k in ("image_id", "path", "root", "bbox")}, self.size)
        if out["stage"][0] != OK:
            raise ImageError(f"image {row['image_id']} ({shorten(str(row['path']))}): {out['stage'][0]} failed: "
                             f"{out['message'][0]}")
        return torch.from_numpy(out["pixels"][0])


def positions(n: int, seed: int, rank: int, world: int, start: int):
    """Rank `rank`'s image indices from its `start`-th on, endlessly (the module docstring's order)."""
    epoch, order = -1, None
    k = start
    while True:
        g = rank + k * world
        if g // n != epoch:
            epoch = g // n
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        yield int(order[g % n])
        k += 1


class Batches(torch.utils.data.Sampler):
    """Micro-batches of indices in `positions` order, from image `start` of this rank."""

    def __init__(self, n: int, micro_batch: int, seed: int, rank: int, world: int, start: int):
        self.args, self.micro_batch = (n, seed, rank, world, start), micro_batch

    def __iter__(self):
        it = positions(*self.args)
        while True:
            yield [next(it) for _ in range(self.micro_batch)]


def loader(table: pd.DataFrame, size: int, micro_batch: int, seed: int, rank: int, world: int, start: int,
           workers: int):
    """Endless uint8 micro-batches (B, size, size, 3) of this rank, from its image `start` on."""
    if table.empty:
        raise ImageError("the split holds no images")
    batches = Batches(len(table), micro_batch, seed, rank, world, start)
    return iter(torch.utils.data.DataLoader(Faces(table, size), batch_sampler=batches, num_workers=workers,
                                            persistent_workers=workers > 0))


def crop(pixels: torch.Tensor, side: int, seed: int, rank: int, start: int) -> torch.Tensor:
    """Random `side` x `side` crops of uint8 (B, R, R, 3) images, one per image, at offsets on the
    16-pixel code grid drawn from (seed, rank, start): the same crops after a resume."""
    if not side or side >= pixels.shape[1]:
        return pixels
    g = torch.Generator().manual_seed((seed * 1_000_003 + rank) * 1_000_003 + start)
    cells = (pixels.shape[1] - side) // 16 + 1
    yx = torch.randint(cells, (len(pixels), 2), generator=g) * 16
    return torch.stack([p[y:y + side, x:x + side] for p, (y, x) in zip(pixels, yx.tolist())])


def held_out(table: pd.DataFrame, size: int, count: int, rank: int, world: int) -> torch.Tensor | None:
    """This rank's share of the split's first `count` x world images (by image_id), read once: the
    log's held-out figures are measured on the same images every time. None when the split is empty."""
    mine = list(range(rank, min(len(table), count * world), world))
    if not mine:
        return None
    faces = Faces(table, size)
    return torch.stack([faces[i] for i in mine])
