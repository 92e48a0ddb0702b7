"""A tiny ExpW tree: label/label.lst (LF, no header), label/readme.txt (BOM) and image/origin/ pictures.

No official split: `splits` counts the rows under "none" (source_split None).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facecorpus.converters.expw import EXPRESSION
from facecorpus.converters.samples.faces import EXPRESSION_MOUTH, draw, look_for_person, save

LABEL_FILE = "label/label.lst"
# Real rows (top left right bottom confidence expression); angry_actor_120 holds two faces, and its
# name's keyword ("angry") is not its label. The boxes fit the 420x400 pictures written below.
ROWS = [
    "angry_actor_104.jpg 0 28 113 226 141 22.9362 0",
    "angry_actor_109.jpg 0 31 157 345 219 50.3056 0",
    "angry_actor_120.jpg 1 53 53 372 372 13.9434 2",
    "angry_actor_120.jpg 0 10 200 300 100 3.51 3",
    "awe_people_262.jpg 0 40 60 180 170 0.8831 2",
    "sad_bride_17.jpg 0 75 20 210 190 41.27 4",
]
TEXTS = {"expw/angry_actor_104-0/attributes/0": "expw expression: anger",
         "expw/angry_actor_120-1/attributes/0": "expw expression: fear",
         "expw/angry_actor_120-0/attributes/0": "expw expression: happy"}
BBOXES = {"expw/angry_actor_104-0/attributes/0": [113, 28, 226, 141]}  # top,left,right,bottom -> x0,y0,x1,y1
README = ("\ufefflabel.lst\uff1a each line indicates an image as follows:\nimage_name face_id_in_image "
          "face_box_top face_box_left face_box_right face_box_bottom face_box_cofidence expression_label\n\n"
          "for expression label\uff1a\n" + "\n".join(f'"{i}" "{w}"' for i, w in enumerate(
              ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))))


def picture(rng: np.random.Generator, faces: list[list[str]]) -> Image.Image:
    """A 420x400 picture with one face per row (`face top left right bottom confidence expression`) in
    its box, the bigger faces first so a small one in front of a big one stays whole."""
    boxes = [(int(left), int(top), int(right), int(bottom)) for _, top, left, right, bottom, *_ in faces]
    looks = [look_for_person(rng, mouth=EXPRESSION_MOUTH[EXPRESSION[int(f[-1])]]) for f in faces]
    order = sorted(range(len(faces)), key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    return draw((420, 400), [(looks[i], boxes[i]) for i in order], int(rng.integers(2**32)))


def write(root: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    (root / "label").mkdir(parents=True, exist_ok=True)
    (root / LABEL_FILE).write_bytes(("\n".join(ROWS) + "\n").encode())
    (root / "label/readme.txt").write_bytes(README.encode())
    for name in sorted({row.split()[0] for row in ROWS}):
        save(root / "image/origin" / name, picture(rng, [row.split()[1:] for row in ROWS if row.startswith(name + " ")]))
    return {"splits": {"none": len(ROWS)}, "texts": TEXTS, "bboxes": BBOXES, "images": 5, "label_file": LABEL_FILE}
