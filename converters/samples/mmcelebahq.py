"""A tiny MM-CelebA-HQ download: `text/celeba-caption/<idx>.txt`, the two split pickles, 512² images (small here).

The caption lines copy the real files' habits: LF endings, a final newline, some lines ending in one
space, a caption repeated in its file (`49.txt` style), a `has .` line that says nothing (`92.txt` style)
and three whose empty attribute list is removed, the rest kept.
Indices 24000+ are the test range, so the caller's CelebA-HQ mapping sample must cover
`mapping_rows` = max(hq_indices) + 1 rows.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from facecorpus.converters.samples.faces import look_from_captions, save_face

CAPTIONS = {
    0: ["The woman has wavy hair, and arched eyebrows. ", "She is attractive and wears lipstick.",
        "This person has high cheekbones."],
    5: ["The man has bags under eyes. ", "He has straight hair, and big lips.", "The man has bags under eyes."],
    24000: ["He has . ", "He is young and has black hair.", "The man has  and wears hat. He has beard. ",
            "This attractive man has ."],
    24001: ["She wears heavy makeup.", "The person has blond hair, and pointy nose. ", "She is smiling and has ."],
}
SPLITS = {"train": [0, 5], "test": [24000, 24001]}  # the maintainer's index ranges
IMAGE_SIZE = (128, 128)  # the real images are 512 x 512


def write(root: Path, seed: int = 0) -> dict:
    """Write the tree under `root`; return what a correct conversion gives (records per split, filters)."""
    rng = np.random.default_rng(seed)
    for idx, lines in CAPTIONS.items():
        path = root / "text" / "celeba-caption" / f"{idx}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes("".join(f"{line}\n" for line in lines).encode("ascii"))
        save_face(root / "image" / "images" / f"{idx}.jpg", look_from_captions(lines, rng), rng, IMAGE_SIZE)
    for split, ids in SPLITS.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        with open(root / split / "filenames.pickle", "wb") as fh:
            pickle.dump([str(i) for i in ids], fh, protocol=2)  # AttnGAN's list of stems
    return {"splits": {"train": 6, "test": 6},
            "filtered": {"empty attribute list, nothing else said ('He has .')": 1}, "repaired": 3,
            "records": 12, "rows": 13, "hq_indices": sorted(CAPTIONS), "mapping_rows": max(CAPTIONS) + 1}
