"""A tiny FFHQ-Text folder in the README's layout read the AttnGAN way: `Text/<id>.txt`, `Image/<id>.png`,
`Train/filenames.pickle`, `Test/filenames.pickle` (the real layout is unconfirmed: request-only data).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from facecorpus.converters.samples.faces import look_from_captions, save_face

CAPTIONS = {
    "00012": ["The woman has long brown hair and brown eyes.", "She is smiling with her teeth showing.",
              "Her face is oval and she wears no glasses."],
    "00345": ["A young woman with straight black hair.", "She has thin eyebrows and a small nose.",
              "She wears earrings."],
    "01021": ["The girl has a round face.", "Her hair is blonde and wavy."],
    "02088": ["This woman is middle-aged and wears glasses.", "She has short grey hair."],
}
SPLITS = {"Train": ["00012", "00345", "01021"], "Test": ["02088"]}
IMAGE_SIZE = (128, 128)  # the real images are 1024 x 1024 PNG


def write(root: Path, seed: int = 0) -> dict:
    """Write the tree under `root`; return what a correct conversion gives."""
    rng = np.random.default_rng(seed)
    for stem, lines in CAPTIONS.items():
        path = root / "Text" / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes("".join(f"{line}\n" for line in lines).encode("utf-8"))
        save_face(root / "Image" / f"{stem}.png", look_from_captions(lines, rng), rng, IMAGE_SIZE)
    for folder, stems in SPLITS.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        with open(root / folder / "filenames.pickle", "wb") as fh:
            pickle.dump(stems, fh, protocol=2)
    return {"splits": {"train": 8, "test": 2}, "filtered": {}, "records": 10, "rows": 10}
