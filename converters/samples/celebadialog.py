"""A small CelebA-Dialog tree in the documented layout (no real file may be redistributed).

- `combined_annotation.txt`: header + 8 rows (CelebA images 000001..000008, the CelebA sample's).
- `captions.json` (standard) for the same 8 images: overall + attribute-wise captions, with the
  pitfalls of the real data: an empty `No_Beard` caption for a woman, a null one, an empty overall.
- `text/captions_hq.json` for CelebA-HQ 0..5 without 3 (like the real file lacks 5380.jpg), with
  `text/request_hq.json` beside it (requests are not captions), images under `image/`.
The HQ records need the CelebA-HQ mapping: samples/celebahq.py writes one for indices 0..11.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facecorpus.converters.samples.faces import Look, save_face, some_hair

STANDARD = [f"{i:06d}.jpg" for i in range(1, 9)]
HQ = ["0.jpg", "1.jpg", "2.jpg", "4.jpg", "5.jpg"]  # 3.jpg missing, as 5380.jpg is upstream
COLUMNS = ("Bangs", "Eyeglasses", "No_Beard", "Smiling", "Young")
OLD = 4  # Young degree "elderly": drawn with grey hair
PHRASES = {  # paraphrases of Talk-to-Edit's caption templates, one per degree 0..5
    "Bangs": ("Her whole forehead is visible.", "She has very short bangs.", "She has short bangs.",
              "Her bangs cover half of the forehead.", "Long bangs cover almost all of her forehead.",
              "Extremely long bangs cover the entire forehead."),
    "Eyeglasses": ("There are no eyeglasses.", "The person wears rimless eyeglasses.",
                   "The person wears thin-frame eyeglasses.", "The person wears thick-frame eyeglasses.",
                   "The person wears thin-frame sunglasses.", "The person wears thick-frame sunglasses."),
    "No_Beard": ("There is no beard at all.", "This man has stubble.", "This man has a short beard.",
                 "This man has a beard of medium length.", "This man has a bushy beard.",
                 "This man has a very long, thick beard."),
    "Smiling": ("The face looks serious.", "The corners of the mouth turn up a little.",
                "A broad smile shows some teeth.", "The face is beaming, teeth visible.",
                "A big smile with the mouth slightly open.", "Laughing with the mouth wide open."),
    "Young": ("This is a young kid.", "This is a teenager.", "The person is in the thirties.",
              "The person is middle-aged, in the forties.", "The person is in the fifties or sixties.",
              "The person is in the seventies or eighties."),
}


def write(root: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    degrees = rng.integers(0, 6, (len(STANDARD) + len(HQ), len(COLUMNS)))
    header = "img_name " + " ".join(COLUMNS)
    body = [f"{name} " + " ".join(map(str, row)) for name, row in zip(STANDARD, degrees.tolist())]
    root.mkdir(parents=True, exist_ok=True)
    (root / "combined_annotation.txt").write_text("\n".join([header, *body]) + "\n", encoding="ascii")
    standard = {name: _entry(row) for name, row in zip(STANDARD, degrees.tolist())}
    standard[STANDARD[1]]["attribute_wise_captions"]["No_Beard"] = ""     # woman: no beard caption
    standard[STANDARD[4]]["attribute_wise_captions"]["Eyeglasses"] = None
    standard[STANDARD[6]]["overall_caption"] = ""
    hq = {name: _entry(row) for name, row in zip(HQ, degrees[len(STANDARD):].tolist())}
    (root / "captions.json").write_text(json.dumps(standard, indent=2), encoding="utf-8")
    (root / "text").mkdir(exist_ok=True)
    (root / "text" / "captions_hq.json").write_text(json.dumps(hq, indent=2), encoding="utf-8")
    (root / "text" / "request_hq.json").write_text(json.dumps({n: "Make the bangs longer." for n in HQ}, indent=2))
    for name, row in zip(STANDARD, degrees.tolist()):
        save_face(root / "img_align_celeba" / name, look(row, rng), rng, (178, 218))
    for name, row in zip(HQ, degrees[len(STANDARD):].tolist()):
        save_face(root / "image" / name, look(row, rng), rng, (128, 128))
    empty_wise = 2  # the "" and the null above
    return {"splits": {}, "attributes": len(STANDARD), "overall": len(STANDARD) - 1 + len(HQ),
            "attribute_wise": 5 * (len(STANDARD) + len(HQ)) - empty_wise, "hq": HQ, "degrees": degrees}


def look(row: list[int], rng: np.random.Generator) -> Look:
    """What a row of degrees (COLUMNS order) draws: any degree of glasses, beard or smile; grey hair
    from "elderly" (Young 4) on. Bangs are not drawn."""
    degree = dict(zip(COLUMNS, row))
    hair = "gray" if degree["Young"] >= OLD else some_hair(rng)
    return Look(hair=hair, long_hair=bool(rng.random() < 0.5), mouth="smile" if degree["Smiling"] else "flat",
                eyeglasses=degree["Eyeglasses"] > 0, beard=degree["No_Beard"] > 0)


def _entry(row: list[int]) -> dict:
    wise = {col: PHRASES[col][d] for col, d in zip(COLUMNS, row)}
    overall = " ".join(wise[c] for c in ("Young", "Smiling", "Bangs"))
    return {"attribute_wise_captions": wise, "overall_caption": overall}
