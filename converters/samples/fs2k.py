"""A tiny FS2K tree: anno_train.json / anno_test.json (one-line JSON arrays, no final newline) + photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facecorpus.converters.samples.faces import BALD, Look, save_face

KEYS = ("image_name", "skin_color", "lip_color", "eye_color", "hair", "hair_color", "gender", "earring", "smile",
        "frontal_face", "style")
# (image_name, lip RGB, eye RGB, hair, hair_color, gender, earring, smile, frontal_face, style); the first
# two are the real first train entries; photo3/image0449 is the download's one upper-case `.JPG`.
TRAIN = [
    ("photo1/image0110", [156.97750511247443, 82.51124744376278, 79.0], [118.65178571428571, 72.25892857142857,
     69.59821428571429], 0, 2, 0, 1, 1, 1, 0),
    ("photo1/image0111", [179.48856209150327, 102.2124183006536, 106.55392156862744], [115.44274809160305,
     95.83206106870229, 89.0381679389313], 0, 4, 1, 1, 0, 0, 0),
    ("photo2/image0007", [188.0, 143.0, 142.0], [40.5, 38.25, 30.0], 1, 3, 0, 1, 1, 0, 2),
    ("photo3/image0449", [205.3, 92.1, 92.6], [101.0, 100.9, 99.7], 0, 1, 1, 0, 0, 0, 2),
]
TEST = [
    ("photo1/image1596", [233.1, 150.4, 122.0], [10.2, 8.9, 6.0], 0, 0, 0, 1, 0, 0, 1),
    ("photo3/image0113", [105.2, 105.0, 104.9], [47.1, 79.2, 79.0], 0, 1, 0, 1, 1, 0, 0),
    ("photo3/image0200", [220.0, 20.0, 60.0], [139.0, 69.0, 19.0], 0, 0, 1, 0, 0, 1, 2),
]
# hair_color code -> drawn hair (FS2K: 0 brown, 1 black, 2 red, 3 no hair, 4 golden)
DRAWN_HAIR = {0: "brown", 1: "black", 2: "red", 3: BALD, 4: "blond"}
TEXTS = {
    "fs2k/photo1-image0110/attributes/0": "fs2k gender: male; hair: true; hair color: red; lip color: sienna; "
                                           "eye color: sienna; earring: false; smile: false; frontal face: false",
    "fs2k/photo2-image0007/attributes/0": "fs2k gender: male; hair: false; hair color: no hair; lip color: rosy "
                                           "brown; eye color: black; earring: false; smile: false; frontal face: true",
    "fs2k/photo3-image0449/attributes/0": "fs2k gender: female; hair: true; hair color: black; lip color: indian "
                                           "red; eye color: dim gray; earring: true; smile: true; frontal face: true",
}


def entry(row: tuple, rng: np.random.Generator) -> dict:
    name, lip, eye, *codes = row
    point = [int(v) for v in rng.integers(100, 180, 2)]  # skin_color is a point in the face, not a colour
    return dict(zip(KEYS, [name, point, lip, eye, *codes]))


def look(row: tuple) -> Look:
    """What an entry draws: its hair (0: with hair) and hair colour, long hair on women, its smile (0: smiling)."""
    entry = dict(zip(KEYS, (row[0], None, *row[1:])))
    hair = BALD if entry["hair"] else DRAWN_HAIR[entry["hair_color"]]
    return Look(hair=hair, long_hair=hair != BALD and entry["gender"] == 1, mouth="flat" if entry["smile"] else "smile")


def write(root: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for file, rows in (("anno_train.json", TRAIN), ("anno_test.json", TEST)):
        # json.dumps' default separators are the real files' `", "` and `": "`; no final newline.
        (root / file).write_text(json.dumps([entry(r, rng) for r in rows]), encoding="utf-8")
        for r in rows:
            suffix = ".JPG" if r[0] == "photo3/image0449" else ".jpg"
            save_face(root / "photo" / f"{r[0]}{suffix}", look(r), rng, (125, 160))
    return {"splits": {"train": len(TRAIN), "test": len(TEST)}, "texts": TEXTS}
