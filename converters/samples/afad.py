"""A tiny AFAD-Full tree: AFAD-Full.txt (`./<age>/<gender>/<id>-<k>.jpg`, LF) + image folders with Thumbs.db."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecorpus.converters.afad import GENDER
from facecorpus.converters.samples.faces import look_for_person, save_face

# Real listing lines, in the listing's order; 278878 is a real id under both 111 and 112 at age 15.
LISTING = [
    "./15/111/109008-0.jpg",
    "./15/111/278878-0.jpg",
    "./15/112/278878-1.jpg",
    "./20/111/100060-0.jpg",
    "./20/111/Thumbs.db",
    "./20/112/Thumbs.db",
    "./20/112/100230-0.jpg",
    "./72/111/855329-0.jpg",
    "./72/112/858972-0.jpg",
]
TEXTS = {
    "afad/15-111-278878-0/attributes/0": "afad age: 15; gender: male",
    "afad/15-112-278878-1/attributes/0": "afad age: 15; gender: female",
    "afad/72-112-858972-0/attributes/0": "afad age: 72; gender: female",
}


def write(root: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    base = root / "AFAD-Full"
    base.mkdir(parents=True, exist_ok=True)
    (base / "AFAD-Full.txt").write_bytes("".join(f"{line}\n" for line in LISTING).encode("ascii"))
    images = [line[2:] for line in LISTING if line.endswith(".jpg")]
    for rel in images:  # `<age>/<gender code>/<id>.jpg`: grey hair when old, long hair on women
        age, gender, _ = rel.split("/")
        look = look_for_person(rng, age=int(age), female=GENDER[gender] == "female")
        save_face(base / rel, look, rng, (72, 88))  # AFAD crops are small and vary in size
    for line in LISTING:
        if line.endswith("Thumbs.db"):
            (base / line[2:]).write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(56))  # an OLE2 header
    return {"splits": {}, "records": len(images), "ignored": len(LISTING) - len(images), "texts": TEXTS}
