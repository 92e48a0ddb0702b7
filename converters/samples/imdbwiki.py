"""A tiny IMDB-WIKI tree: wiki_crop/wiki.mat (8 fields) and imdb_crop/imdb.mat (10 fields) + crop images.

Both .mat files are MATLAB 5, zlib-compressed, one 1x1 struct whose fields are 1xN rows, with the real
dtypes (int32 dob, uint16 photo_taken, float64 gender / scores, cells of strings and of 1x4 boxes).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.io

from facecorpus.converters.imdbwiki import ages
from facecorpus.converters.samples.faces import look_for_person, save_face

NAN, NO_FACE = math.nan, -math.inf
# (dob datenum, photo_taken, full_path, gender, name, face_location, face_score, second_face_score):
# real wiki.mat entries 1, 2, 3, 4, 351, 419, 8941, 819, 38 and 31488 (scores rounded).
WIKI = [
    (723671, 2009, "17/10000217_1981-05-05_2009.jpg", 1.0, "Sami Jauhojärvi", [111.29, 111.29, 252.67, 252.67],
     4.30, NAN),
    (703186, 1964, "48/10000548_1925-04-04_1964.jpg", 1.0, "Dettmar Cramer", [252.48, 126.68, 354.53, 228.73],
     2.65, 1.95),
    (711677, 2008, "12/100012_1948-07-03_2008.jpg", 1.0, "Marc Okrand", [113.52, 169.84, 366.08, 422.4], 4.33, NAN),
    (705061, 1961, "65/10001965_1930-05-23_1961.jpg", 1.0, "Aleksandar Matanović", [1, 1, 634, 440], NO_FACE, NAN),
    (723577, 2012, "26/3001226_1981-01-31_2012.jpg", NAN, "Selçuk Şahin", [55.86, 37.41, 138.40, 119.94], 3.73, NAN),
    (727625, 2012, "13/30065213_1992-03-02_2012.jpg", NAN, "", [204.70, 21.73, 267.41, 84.45], 3.79, 2.86),
    (717720, 1960, "23/14129723_1965-01-18_1960.jpg", 1.0, "Paudge Behan", [167.15, 52.78, 259.92, 145.56], 2.25, NAN),
    (692851, 2008, "49/11092749_1896-12-16_2008.jpg", 1.0, "Ivan Merz", [154.4, 128.8, 211.2, 185.6], 0.93, NAN),
    (716645, 2011, "35/10016635_1962-02-08_2011.jpg", 1.0, "Shuli Rand", [156.21, 83.08, 237.68, 164.55], 0.88, NAN),
    (236447, 2010, "70/2051570_647-05-15_2010.jpg", 1.0, "Abbas ibn Ali", [1, 1, 408, 520], NO_FACE, NAN),
]
# The first is the real first imdb.mat entry's path; the rest are made up in the real naming (month and
# day not zero-padded). celeb_id indexes celeb_names (1-based).
IMDB = [
    (693726, 1968, "01/nm0000001_rm124825600_1899-5-10_1968.jpg", 1.0, "Fred Astaire", [1072.93, 161.84, 1214.78,
     303.68], 1.46, NAN, 1),
    (693726, 1970, "01/nm0000001_rm3343756032_1899-5-10_1970.jpg", 1.0, "Fred Astaire", [477.18, 100.45, 622.68,
     245.95], 2.54, 1.21, 1),
    (702986, 2004, "02/nm0000002_rm1346607872_1924-9-16_2004.jpg", 0.0, "Lauren Bacall", [78.24, 54.7, 187.52,
     163.98], 3.48, NAN, 2),
    (712790, 2004, "45/nm0000245_rm2143392256_1951-7-21_2004.jpg", 1.0, "Robin Williams", [301.1, 92.4, 465.0,
     256.3], 4.02, NAN, 3),
]
CELEB_NAMES = ["Fred Astaire", "Lauren Bacall", "Robin Williams"]
FILTERED = {"no face found (face_score -inf)": 2, "age outside 0..100": 2}
TEXTS = {
    "imdbwiki/wiki-17-10000217_1981-05-05_2009/attributes/0": "imdbwiki age: 28; gender: male",
    "imdbwiki/wiki-12-100012_1948-07-03_2008/attributes/0": "imdbwiki age: 59; gender: male",  # born in July
    "imdbwiki/wiki-26-3001226_1981-01-31_2012/attributes/0": "imdbwiki age: 31",  # gender NaN
    "imdbwiki/imdb-02-nm0000002_rm1346607872_1924-9-16_2004/attributes/0": "imdbwiki age: 79; gender: female",
}


def row(values, dtype=None) -> np.ndarray:
    return np.asarray(values, dtype=dtype).reshape(1, -1)


def cell(items) -> np.ndarray:
    out = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        out[0, i] = item
    return out


def box(values: list[float]) -> np.ndarray:
    """A 1x4 face_location; the whole-photo box of a no-face entry is stored as integers in the real file."""
    whole = all(float(v).is_integer() for v in values)
    return np.asarray(values, dtype=np.uint16 if whole else np.float64).reshape(1, 4)


def struct(entries: list[tuple], celeb_names: list[str] | None = None) -> dict:
    dob, taken, path, gender, name, loc, score, second, *celeb = zip(*entries)
    out = {"dob": row(dob, np.int32), "photo_taken": row(taken, np.uint16), "full_path": cell(path),
           "gender": row(gender, np.float64), "name": cell(name), "face_location": cell([box(b) for b in loc]),
           "face_score": row(score, np.float64), "second_face_score": row(second, np.float64)}
    if celeb_names is not None:  # imdb.mat only: 10 fields
        out["celeb_names"] = cell(celeb_names)
        out["celeb_id"] = row(celeb[0], np.uint16)
    return out


def write(root: Path, seed: int = 0, parts: tuple[str, ...] = ("wiki", "imdb")) -> dict:
    rng = np.random.default_rng(seed)
    entries = {"wiki": (WIKI, None), "imdb": (IMDB, CELEB_NAMES)}
    for part in parts:
        rows, celebs = entries[part]
        folder = root / f"{part}_crop"
        folder.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(folder / f"{part}.mat", {part: struct(rows, celebs)}, do_compression=True)
        years = ages(np.array([e[0] for e in rows], np.float64), np.array([e[1] for e in rows], np.float64))
        for entry, age in zip(rows, years):  # grey hair when old, long hair on women (gender 0)
            look = look_for_person(rng, age=float(age), female=None if math.isnan(entry[3]) else entry[3] == 0)
            save_face(folder / entry[2], look, rng, (120, 120))
    n = sum(len(entries[p][0]) for p in parts)
    filtered = FILTERED if "wiki" in parts else {}
    return {"splits": {}, "records": n - sum(filtered.values()), "filtered": filtered, "texts": TEXTS}
