"""A tiny AffectNet tree: Manually_Annotated_file_lists/{training,validation}.csv + Manually_Annotated_Images/.

The rows follow the real header and row format (136 landmark numbers joined by `;`, square boxes x = y,
w = h, 5-6 decimal valence/arousal, -2 for uncertain / non-face) with boxes that fit 256 px pictures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facecorpus.converters.affectnet import EXPRESSION
from facecorpus.converters.samples.faces import EXPRESSION_MOUTH, draw, look_for_person, save

HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
# (path, box x=y, box w=h, expression code, valence, arousal)
TRAIN = [
    ("459/81456263be241927c7a59a2646f88c2700ce4b7cba6094570ec2b10c.jpg", 30, 190, "7", "-0.65331", "0.65331"),
    ("680/cfa0c679da3dbe9f01e92cdeda2da1065aa50e7bf0b3990ec335f726.jpg", 20, 200, "0", "-0.176846", "-0.0776398"),
    ("12/3b2e1a09ffcd2d1e88a77b1f6a1f0c3d5b2a4e6f7a8b9c0d1e2f3a4b.JPG", 16, 210, "1", "0.815", "0.2"),
    ("12/77a4e9bbd1c0e3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6.jpg", 24, 180, "8", "0.1", "-0.35"),
    ("301/0aa1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b.jpeg", 10, 230, "9", "-2", "-2"),
    ("301/9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4.jpg", 40, 150, "10", "-2", "-2"),
    ("459/5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708.png", 32, 170, "6", "-0.5112", "0.7001"),
]
VALIDATION = [
    ("1001/c0ffee00112233445566778899aabbccddeeff00112233445566778.png", 28, 196, "2", "-0.71", "-0.3"),
    ("1001/deadbeef00112233445566778899aabbccddeeff0011223344556677.jpg", 18, 204, "5", "-0.42", "0.55"),
    ("1002/f00dcafe00112233445566778899aabbccddeeff0011223344556677.jpg", 12, 222, "10", "-2", "-2"),
]
TEXTS = {
    "affectnet/459-81456263be241927c7a59a2646f88c2700ce4b7cba6094570ec2b10c/attributes/0":
        "affectnet expression: contempt; valence: -0.65331; arousal: 0.65331",
    "affectnet/1001-c0ffee00112233445566778899aabbccddeeff00112233445566778/attributes/0":
        "affectnet expression: sad; valence: -0.71; arousal: -0.3",
}
BBOXES = {"affectnet/459-81456263be241927c7a59a2646f88c2700ce4b7cba6094570ec2b10c/attributes/0": [30, 30, 220, 220]}
LANDMARK_NUMBERS = 136
NON_FACE = 10
FILTERED = {"expression none (code 8)": 1, "expression uncertain (code 9)": 1, "non-face (code 10)": 2}


def landmarks(rng: np.random.Generator, x: int, w: int) -> str:
    """68 (x, y) points inside the box, 2 decimals, joined by `;` as in the real CSVs."""
    pts = rng.uniform(x + 0.1 * w, x + 0.9 * w, LANDMARK_NUMBERS)
    return ";".join(f"{p:.2f}" for p in pts)


def picture(rng: np.random.Generator, code: int, box: tuple) -> Image.Image:
    """A 256 px picture with the face in its box and the expression's mouth; a non-face row (10) shows
    no face, and the codes that are no expression (8, 9) a plain mouth."""
    faces = []
    if code != NON_FACE:
        mouth = EXPRESSION_MOUTH[EXPRESSION[code]] if code in EXPRESSION else "flat"
        faces = [(look_for_person(rng, mouth=mouth), box)]
    return draw((256, 256), faces, int(rng.integers(2**32)))


def write(root: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "Manually_Annotated_file_lists"
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("training.csv", TRAIN), ("validation.csv", VALIDATION)):
        lines = [HEADER] + [f"{p},{x},{x},{w},{w},{landmarks(rng, x, w)},{code},{v},{a}"
                            for p, x, w, code, v, a in rows]
        (folder / name).write_bytes(("\n".join(lines) + "\n").encode())
        for p, x, w, code, *_ in rows:
            save(root / "Manually_Annotated_Images" / p, picture(rng, int(code), (x, x, x + w, x + w)))
    return {"splits": {"train": 4, "test": 2}, "texts": TEXTS, "bboxes": BBOXES, "filtered": FILTERED}
