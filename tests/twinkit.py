"""Inputs shared by the fast paths' CPU tests and their GPU twins (tests/test_attention.py,
tests/test_encoder.py, tests/test_gpu.py): training instances on a small code grid, pixel batches as the
read stage hands them to the encoder."""

from __future__ import annotations

import numpy as np
import torch

from facecorpus.codes import CodeGrid
from facecorpus.shards.reading import OK
from facecorpus.trainer.sequences import SequenceBuilder

GRID = CodeGrid(1024, 4, 64)  # 16 codes per image: sequences of 30-60 ids, quick on CPU


def instances(n: int, seed: int, seq_len: int = 60) -> list:
    """`n` training instances of the four tasks in turn, random codes and 8 up to the budget's text ids."""
    gen = torch.Generator().manual_seed(seed)
    builder = SequenceBuilder(seq_len, GRID)
    out = []
    for i in range(n):
        text = torch.randint(1000, 30000, (int(torch.randint(8, builder.budget + 1, (1,), generator=gen)),), generator=gen)
        out.append(builder.build(i % 4, torch.randint(0, 1024, (GRID.count,), generator=gen).numpy(), text.tolist()))
    return out


def pixel_batch(n: int, seed: int, side: int = 256) -> dict:
    rng = np.random.default_rng(seed)
    # Smooth colour fields (upsampled noise): like faces, they map to many different codes.
    small = rng.integers(0, 256, (n, side // 32, side // 32, 3), dtype=np.uint8)
    pixels = np.ascontiguousarray(small.repeat(32, 1).repeat(32, 2))
    return {"image_id": np.array([f"d/{seed}-{i}" for i in range(n)], dtype=object), "outside": np.zeros(n, bool),
            "path": np.array(["p"] * n, dtype=object), "pixels": pixels,
            "stage": np.array([OK] * n, dtype=object), "message": np.array([""] * n, dtype=object)}
