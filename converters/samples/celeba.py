"""A 12-image CelebA tree, byte-faithful to the real label files (CRLF, count line, header with a
trailing space, values right-aligned in 3-character fields), in torchvision's flat layout or the
official `Anno/` + `Eval/` one. Images 000001..000012 are the ones samples/celebahq.py maps onto.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecorpus.converters.celeba import ATTRIBUTES
from facecorpus.converters.samples.faces import save_face

# (image number, identity, partition code): identity-disjoint splits like the real partition.
IMAGES = ((1, 2880, 0), (2, 2937, 0), (3, 8692, 0), (4, 5805, 0), (5, 2880, 0), (6, 8692, 0),
          (7, 4153, 1), (8, 4153, 1), (9, 9040, 1), (10, 6369, 2), (11, 3332, 2), (12, 6369, 2))
CRLF = "\r\n"


def write(root: Path, seed: int = 0, layout: str = "flat") -> dict:
    """Write the tree under `root`; `layout` "flat" (torchvision) or "official" (Anno/, Eval/, Img/)."""
    rng = np.random.default_rng(seed)
    anno, evals, img = ("Anno/", "Eval/", "Img/") if layout == "official" else ("", "", "")
    values = np.where(rng.random((len(IMAGES), len(ATTRIBUTES))) < 0.3, 1, -1)
    names = [f"{n:06d}.jpg" for n, _, _ in IMAGES]
    # Value 1 follows one space, values 2..40 are right-aligned in 3 characters: `000001.jpg -1  1 ...`.
    attr = [str(len(IMAGES)), " ".join(ATTRIBUTES) + " "]
    attr += [f"{name} {row[0]}" + "".join(f"{v:>3}" for v in row[1:]) for name, row in zip(names, values.tolist())]
    _write(root / f"{anno}list_attr_celeba.txt", attr)
    _write(root / f"{anno}identity_CelebA.txt", [f"{name} {ident}" for name, (_, ident, _) in zip(names, IMAGES)])
    _write(root / f"{evals}list_eval_partition.txt", [f"{name} {code}" for name, (_, _, code) in zip(names, IMAGES)])
    for name in names:
        save_face(root / f"{img}img_align_celeba" / name, rng, (178, 218))
    codes = [code for _, _, code in IMAGES]
    return {"splits": {s: codes.count(c) for c, s in enumerate(("train", "val", "test"))},
            "images": names, "values": values, "identities": len({i for _, i, _ in IMAGES})}


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((CRLF.join(lines) + CRLF).encode("ascii"))
