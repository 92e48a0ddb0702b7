"""Comparable views across datasets: ages on one axis, expressions on one axis, gender, race, colours.

Datasets state age differently: CACD, AFAD and IMDB-WIKI in years, FairFace in bins ("10-19",
"more than 70"), CelebA-Dialog on its own 0-5 scale (kid ... seventies, docs/datasets.md, CelebA-Dialog), which is not
years and is therefore kept apart instead of being forced onto the bins.
"""

from __future__ import annotations

import re

# FairFace's bins, the coarsest of the age datasets, are the common axis.
AGE_BINS = [("0-2", 0, 2), ("3-9", 3, 9), ("10-19", 10, 19), ("20-29", 20, 29), ("30-39", 30, 39),
            ("40-49", 40, 49), ("50-59", 50, 59), ("60-69", 60, 69), ("70+", 70, 200)]
MAX_AGE = 120  # above this (or below 0) a year is reported as out of range, not binned
SCALE_DATASETS = ("celebadialog",)  # their "age" is an ordinal scale, not years
# CelebA-Dialog's age scale 0-5 in words (converters/celebadialog.py), youngest first.
SCALE_ORDER = ("child", "teenager", "young adult", "middle aged", "elderly", "very old")
EXPRESSIONS = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]
TOP_COLORS = 20

_RANGE = re.compile(r"(\d+)\s*-\s*(\d+)")
_ABOVE = re.compile(r"(?:more than|over|above)\s+(\d+)|(\d+)\s*\+")


def build(full: dict) -> dict:
    """`full` is {dataset: {axis attribute: [(value, n), ...]}} from labelstats.distributions."""
    return {
        "ages": _ages(full),
        "expressions": _expressions(full),
        "gender": {d: [list(p) for p in a["gender"]] for d, a in full.items() if "gender" in a},
        "race": {d: [list(p) for p in a["race"]] for d, a in full.items() if "race" in a},
        "colors": {d: {k: [list(p) for p in vc[:TOP_COLORS]] for k, vc in a.items() if k.endswith("color")}
                   for d, a in full.items() if any(k.endswith("color") for k in a)},
    }


def age_bin(value) -> int | None:
    """Index into AGE_BINS of a year or of a bin label whose range lies inside one bin."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not 0 <= value <= MAX_AGE:
            return None
        return next(i for i, (_, lo, hi) in enumerate(AGE_BINS) if lo <= value <= hi)
    text = str(value).strip().lower()
    m = _RANGE.fullmatch(text)
    if m:
        lo, hi = int(m[1]), int(m[2])
    elif m := _ABOVE.fullmatch(text):
        lo, hi = (int(m[1]) + 1, 200) if m[1] else (int(m[2]), 200)
    else:
        return None
    return next((i for i, (_, blo, bhi) in enumerate(AGE_BINS) if blo <= lo and hi <= bhi), None)


def _ages(full: dict) -> dict:
    out = {}
    for dataset, attrs in full.items():
        vc = attrs.get("age")
        if not vc:
            continue
        if dataset in SCALE_DATASETS or not all(isinstance(v, int) or age_bin(v) is not None for v, _ in vc):
            scale = "scale"
            values = sorted(vc, key=_scale_key)
        else:
            scale = "years" if all(isinstance(v, int) and not isinstance(v, bool) for v, _ in vc) else "bins"
            values = sorted(vc, key=lambda p: (age_bin(p[0]) if age_bin(p[0]) is not None else 99, str(p[0]).zfill(4)))
        entry = {"scale": scale, "values": [list(p) for p in values], "binned": None, "out_of_range": 0}
        if scale != "scale":
            binned = [0] * len(AGE_BINS)
            for v, n in vc:
                i = age_bin(v)
                if i is None:
                    entry["out_of_range"] += n
                else:
                    binned[i] += n
            entry["binned"] = binned
        out[dataset] = entry
    return {"bins": [b for b, _, _ in AGE_BINS], "datasets": out}


def _scale_key(pair: tuple) -> tuple:
    """Numbers in order, then the known scale words in order, then other words by frequency."""
    value, n = pair
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value, 0)
    if value in SCALE_ORDER:
        return (1, SCALE_ORDER.index(value), 0)
    return (2, 0, -n)


def _expressions(full: dict) -> dict:
    out = {}
    for dataset, attrs in full.items():
        vc = dict(attrs.get("expression", []))
        if not vc:
            continue
        out[dataset] = {"counts": [vc.get(e, 0) for e in EXPRESSIONS],
                        "other": {str(k): n for k, n in vc.items() if k not in EXPRESSIONS}}
    return {"order": EXPRESSIONS, "datasets": out}
