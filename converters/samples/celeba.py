"""A CelebA tree, byte-faithful to the real label files (CRLF, count line, header with a trailing space,
values right-aligned in 3-character fields), in torchvision's flat layout or the official `Anno/` +
`Eval/` one. Images 000001..000012 are the ones samples/celebahq.py maps onto; `n` adds more (the
demo writes a couple of thousand, so a model can learn faces <-> attributes).

Every image draws its own row of attributes (samples/faces.py): hair colour (Black/Blond/Brown/
Gray_Hair, Bald, or none of them: red), long hair for women, Smiling (else Mouth_Slightly_Open: an
open mouth), Eyeglasses, No_Beard (-1: a beard), Mustache and Wearing_Hat. Those drawn attributes
are coherent (one hair colour, no beard on a woman); the other attributes stay random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecorpus.converters.celeba import ATTRIBUTES
from facecorpus.converters.samples.faces import BALD, Look, save_face

# (image number, identity, partition code): identity-disjoint splits like the real partition.
IMAGES = ((1, 2880, 0), (2, 2937, 0), (3, 8692, 0), (4, 5805, 0), (5, 2880, 0), (6, 8692, 0),
          (7, 4153, 1), (8, 4153, 1), (9, 9040, 1), (10, 6369, 2), (11, 3332, 2), (12, 6369, 2))
CRLF = "\r\n"
IMAGE_SIZE = (178, 218)  # the aligned crops' size
FIRST_EXTRA_IDENTITY = 10_178  # past the real 10,177, so added persons never meet the twelve above
IMAGES_PER_EXTRA_IDENTITY = 3
# Hair attribute -> drawn hair, with its share of the images; none of them (the rest) is drawn red.
HAIR = (("Black_Hair", "black", 0.26), ("Blond_Hair", "blond", 0.2), ("Brown_Hair", "brown", 0.24),
        ("Gray_Hair", "gray", 0.14), ("Bald", BALD, 0.06))
SHARES = {"Male": 0.5, "Smiling": 0.5, "Eyeglasses": 0.45, "Wearing_Hat": 0.35}
BEARD, MUSTACHE = 0.5, 0.4  # shares among men


def _col(name: str) -> int:
    return ATTRIBUTES.index(name)


def attribute_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 40) values of -1/1: the drawn attributes coherent, the others true 30% of the time."""
    values = np.where(rng.random((n, len(ATTRIBUTES))) < 0.3, 1, -1)
    u = rng.random((n, len(SHARES) + 4))
    for k, (name, share) in enumerate(SHARES.items()):
        values[:, _col(name)] = np.where(u[:, k] < share, 1, -1)
    male = values[:, _col("Male")] == 1
    hair = np.searchsorted(np.cumsum([share for *_, share in HAIR]), u[:, len(SHARES)])
    hair = np.where((hair == len(HAIR) - 1) & ~male, 0, hair)  # no bald women: black hair instead
    for k, (name, _, _) in enumerate(HAIR):
        values[:, _col(name)] = np.where(hair == k, 1, -1)
    beard = male & (u[:, len(SHARES) + 1] < BEARD)
    values[:, _col("No_Beard")] = np.where(beard, -1, 1)
    values[:, _col("Mustache")] = np.where(male & (u[:, len(SHARES) + 2] < MUSTACHE), 1, -1)
    for name in ("Goatee", "Sideburns", "5_o_Clock_Shadow"):  # facial hair only on men
        values[:, _col(name)] = np.where(male, values[:, _col(name)], -1)
    values[:, _col("Young")] = np.where(values[:, _col("Gray_Hair")] == 1, -1, values[:, _col("Young")])
    return values


def look(row) -> Look:
    """What a row of CelebA attributes (-1/1 in ATTRIBUTES order) draws."""
    on = {name for name, v in zip(ATTRIBUTES, row) if v == 1}
    hair = next((drawn for name, drawn, _ in HAIR if name in on), "red")
    mouth = "smile" if "Smiling" in on else "open" if "Mouth_Slightly_Open" in on else "flat"
    return Look(hair=hair, long_hair="Male" not in on and hair != BALD, mouth=mouth, eyeglasses="Eyeglasses" in on,
                beard="No_Beard" not in on, mustache="Mustache" in on, hat="Wearing_Hat" in on)


def images(rng: np.random.Generator, n: int) -> list[tuple[int, int, int]]:
    """IMAGES, then persons of three images each, split by person 80/10/10 like the real partition."""
    if n < len(IMAGES):
        raise ValueError(f"n={n}: the CelebA sample has at least its {len(IMAGES)} mapped images")
    extra = n - len(IMAGES)
    persons = -(-extra // IMAGES_PER_EXTRA_IDENTITY)
    codes = np.searchsorted([0.8, 0.9], rng.random(persons), side="right")
    return list(IMAGES) + [(len(IMAGES) + 1 + i, FIRST_EXTRA_IDENTITY + i // IMAGES_PER_EXTRA_IDENTITY,
                            int(codes[i // IMAGES_PER_EXTRA_IDENTITY])) for i in range(extra)]


def write(root: Path, seed: int = 0, layout: str = "flat", n: int = len(IMAGES)) -> dict:
    """Write `n` images (12 or more) under `root`; `layout` "flat" (torchvision) or "official" (Anno/, Eval/, Img/)."""
    rng = np.random.default_rng(seed)
    anno, evals, img = ("Anno/", "Eval/", "Img/") if layout == "official" else ("", "", "")
    table = images(rng, n)
    values = attribute_rows(rng, n)
    names = [f"{number:06d}.jpg" for number, _, _ in table]
    # Value 1 follows one space, values 2..40 are right-aligned in 3 characters: `000001.jpg -1  1 ...`.
    attr = [str(n), " ".join(ATTRIBUTES) + " "]
    attr += [f"{name} {row[0]}" + "".join(f"{v:>3}" for v in row[1:]) for name, row in zip(names, values.tolist())]
    _write(root / f"{anno}list_attr_celeba.txt", attr)
    _write(root / f"{anno}identity_CelebA.txt", [f"{name} {ident}" for name, (_, ident, _) in zip(names, table)])
    _write(root / f"{evals}list_eval_partition.txt", [f"{name} {code}" for name, (_, _, code) in zip(names, table)])
    for name, row in zip(names, values.tolist()):
        save_face(root / f"{img}img_align_celeba" / name, look(row), rng, IMAGE_SIZE)
    codes = [code for _, _, code in table]
    return {"splits": {s: codes.count(c) for c, s in enumerate(("train", "val", "test"))},
            "images": names, "values": values, "identities": len({i for _, i, _ in table})}


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((CRLF.join(lines) + CRLF).encode("ascii"))
