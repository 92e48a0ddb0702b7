"""A sample `CelebA-HQ-to-CelebA-mapping.txt` in the real fixed-width layout (header, 11/11/10 columns, LF).

CelebA-HQ indices 0..n-1 map onto CelebA ids 000001..n (seeded permutations, since the real file is
not sorted by CelebA id). Indices 0..11 always map onto 000001..000012, the images the CelebA sample
(samples/celeba.py) lists in its partition, so a sample caption set on those CelebA-HQ images gets
its splits from the sample CelebA partition, whatever `n` (the demo writes all 30,000 rows).
The caption-set samples (MM-CelebA-HQ, CelebAText-HQ, CelebA-Dialog HQ) write their own images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecorpus.converters.celebahq import HEADER, MAPPING

ROWS = 12  # = the CelebA sample's images, so every sample HQ image has a CelebA partition entry


def write(root: Path, seed: int = 0, n: int = ROWS) -> dict:
    """Write `root/CelebA-HQ-to-CelebA-mapping.txt`; return {"mapping": {"celebahq/<i>": "celeba/<id>"}, "rows": n}."""
    if not 0 < n <= 202_599:
        raise ValueError(f"n={n}: the mapping sample needs 1..202599 rows")
    rng = np.random.default_rng(seed)
    head = rng.permutation(min(n, ROWS))  # 0-based orig_idx, unsorted like the real file
    orig = np.concatenate([head, ROWS + rng.permutation(max(n - ROWS, 0))])
    lines = [f"{HEADER[0]:<11}{HEADER[1]:<11}{HEADER[2]}"]
    lines += [f"{idx:<11}{o:<11}{o + 1:06d}.jpg" for idx, o in enumerate(orig.tolist())]
    root.mkdir(parents=True, exist_ok=True)
    (root / MAPPING).write_bytes(("\n".join(lines) + "\n").encode("ascii"))
    return {"mapping": {f"celebahq/{idx}": f"celeba/{o + 1:06d}" for idx, o in enumerate(orig.tolist())}, "rows": n}
