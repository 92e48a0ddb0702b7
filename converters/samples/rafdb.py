"""A tiny RAF-DB basic tree: basic/EmoLabel/list_patition_label.txt (LF, no final newline) + aligned faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecorpus.converters.rafdb import EXPRESSION
from facecorpus.converters.samples.faces import EXPRESSION_MOUTH, look_for_person, save_face

LABEL_FILE = "basic/EmoLabel/list_patition_label.txt"
# Real names and labels: train names have 5 digits, test names 4; labels 1-7 in RAF-DB's order.
ROWS = [("train_00001.jpg", 5), ("train_00003.jpg", 4), ("train_00010.jpg", 1), ("train_12271.jpg", 7),
        ("test_0001.jpg", 5), ("test_0002.jpg", 1), ("test_3068.jpg", 7)]
TEXTS = {"rafdb/train_00001/attributes/0": "rafdb expression: sad",
         "rafdb/train_00010/attributes/0": "rafdb expression: surprise",
         "rafdb/test_3068/attributes/0": "rafdb expression: neutral"}


def write(root: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    path = root / LABEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("\n".join(f"{name} {label}" for name, label in ROWS).encode())  # no newline at the end
    for name, label in ROWS:
        look = look_for_person(rng, mouth=EXPRESSION_MOUTH[EXPRESSION[label]])
        save_face(root / "basic/Image/aligned" / name.replace(".jpg", "_aligned.jpg"), look, rng, (100, 100))
    return {"splits": {"train": 4, "test": 3}, "texts": TEXTS, "label_file": LABEL_FILE}
