"""A tiny CACD tree: celebrity2000_meta.mat (MATLAB 5, the real nested structs and dtypes) + CACD2000/ images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from facecorpus.converters.samples.faces import look_for_person, save_face

# celebrityData rows (name, identity, birth, rank, lfw) and celebrityImageData rows
# (age, identity, year, rank, lfw, birth, name), copied from the real file; the counter restarts per age.
CELEBRITIES = [("Robin_Williams", 1, 1951, 1, 1), ("Stellan_Skarsgård", 4, 1951, 4, 0),
               ("Robert_Downey_Jr.", 701, 1965, 1, 0)]
IMAGES = [
    (53, 1, 2004, 1, 1, 1951, "53_Robin_Williams_0001.jpg"),
    (53, 1, 2004, 1, 1, 1951, "53_Robin_Williams_0002.jpg"),
    (62, 1, 2013, 1, 1, 1951, "62_Robin_Williams_0001.jpg"),
    (53, 4, 2004, 4, 0, 1951, "53_Stellan_Skarsgård_0001.jpg"),
    (54, 4, 2005, 4, 0, 1951, "54_Stellan_Skarsgård_0003.jpg"),
    (39, 701, 2004, 1, 0, 1965, "39_Robert_Downey_Jr._0001.jpg"),
    (47, 701, 2012, 1, 0, 1965, "47_Robert_Downey_Jr._0002.jpg"),
]
TEXTS = {
    "cacd/53_Robin_Williams_0001/attributes/0": "cacd age: 53",
    "cacd/54_Stellan_Skarsgård_0003/attributes/0": "cacd age: 54",
    "cacd/47_Robert_Downey_Jr-_0002/attributes/0": "cacd age: 47",
}
SUBJECTS = {"person/robin williams": 3, "person/stellan skarsgård": 2, "person/robert downey jr": 2}


def cell(strings: list[str]) -> np.ndarray:
    """A MATLAB column cell of strings (savemat writes an object array of str as one)."""
    out = np.empty((len(strings), 1), dtype=object)
    out[:, 0] = strings
    return out


def column(values, dtype) -> np.ndarray:
    return np.asarray(values, dtype=dtype).reshape(-1, 1)


def meta(celebrities=CELEBRITIES, images=IMAGES) -> dict:
    """The two structs in the real field order and dtypes; `feature` is empty (0x0) in the meta file."""
    name, identity, birth, rank, lfw = zip(*celebrities)
    age, img_id, year, img_rank, img_lfw, img_birth, file = zip(*images)
    return {
        "celebrityData": {"name": cell(list(name)), "identity": column(identity, np.int32),
                          "birth": column(birth, np.int32), "rank": column(rank, np.int32),
                          "lfw": column(lfw, np.int32)},
        "celebrityImageData": {"age": column(age, np.uint8), "identity": column(img_id, np.uint16),
                               "year": column(year, np.uint16), "feature": np.zeros((0, 0), np.uint8),
                               "rank": column(img_rank, np.uint8), "lfw": column(img_lfw, np.uint8),
                               "birth": column(img_birth, np.uint16), "name": cell(list(file))},
    }


def write(root: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "celebrity2000_meta.mat", meta(), do_compression=True)  # real: zlib-compressed variables
    for age, *_, file in IMAGES:  # grey hair when old
        save_face(root / "CACD2000" / file, look_for_person(rng, age=age), rng, (125, 125))  # real crops: 250 x 250
    return {"splits": {}, "records": len(IMAGES), "texts": TEXTS, "subjects": SUBJECTS}
