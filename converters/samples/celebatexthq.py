"""A tiny CelebAText-HQ folder: `captions/<idx>.txt`, `data_flist/{train,test}.flist`, `CelebAimg/<idx>.jpg`.

The lists hold paths of the authors' fixed depth (SEA-T2F keeps the 4th `/` component). The captions
are manual-looking: one file has a blank line, one a U+FFFD pair where GBK punctuation was mangled
(becomes a space), one a full-width comma (NFKC makes it ','); the converter notes both files. Fewer
than the real 10 captions per image keep the tree tiny. HQ indices stay below 12, so the default
CelebA-HQ mapping sample covers them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecorpus.converters.samples.faces import look_from_captions, save_face

CAPTIONS = {
    1: ["This woman has long black hair and a pointed chin.", "She is young, with arched eyebrows."],
    2: ["The man has short hair\ufffd\ufffdhe wears glasses.", "", "A middle-aged man with a beard."],
    4: ["the lady has blonde hair and big eyes", "She has rosy cheeks\uff0cand she is smiling."],
    6: ["A young man with black hair.", "He has thick eyebrows and a big nose."],
    8: ["The woman has bangs and thin lips.", "She wears earrings."],
    10: ["This man is bald.", "He has a double chin and is old."],
}
FLISTS = {"train": [1, 2, 4, 6], "test": [8, 10]}
IMAGE_SIZE = (128, 128)  # the real CelebA-HQ images are 1024 x 1024


def write(root: Path, seed: int = 0) -> dict:
    """Write the tree under `root`; return what a correct conversion gives."""
    rng = np.random.default_rng(seed)
    for idx, lines in CAPTIONS.items():
        path = root / "captions" / f"{idx}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes("".join(f"{line}\n" for line in lines).encode("utf-8"))
        save_face(root / "CelebAimg" / f"{idx}.jpg", look_from_captions(lines, rng), rng, IMAGE_SIZE)
    (root / "data_flist").mkdir(parents=True, exist_ok=True)
    for split, ids in FLISTS.items():
        text = "".join(f"data/CelebAText-HQ/CelebAimg/{i}.jpg\n" for i in ids)
        (root / "data_flist" / f"{split}.flist").write_bytes(text.encode("ascii"))
    return {"splits": {"train": 8, "test": 4}, "filtered": {"empty caption line": 1}, "records": 12, "rows": 13,
            "hq_indices": sorted(CAPTIONS), "mapping_rows": max(CAPTIONS) + 1}
