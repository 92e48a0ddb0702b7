"""FS2K colours: RGB -> the nearest CSS3 colour name, written as words (`rosy brown`).

webcolors gives the 147 CSS3 names and their RGB values; the names are single tokens
(`lightgoldenrodyellow`), which WordPiece would shred, so we split them into the words people write.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import webcolors

from facecorpus.excerpt import quote

# Every word that occurs in a CSS3 colour name. A name is split into the fewest of these words, so
# `goldenrod` stays one word and `lightgoldenrodyellow` becomes `light goldenrod yellow`.
COLOR_WORDS = frozenset("""
alice almond antique aqua aquamarine azure beige bisque black blanched blue blush brown burly
cadet chartreuse chiffon chocolate coral cornflower cornsilk cream crimson cyan dark deep dim
dodger drab firebrick floral forest fuchsia gainsboro ghost gold goldenrod gray green grey honeydew
hot indian indigo ivory khaki lace lavender lawn lemon light lime linen magenta maroon medium
midnight mint misty moccasin navajo navy old olive orange orchid pale papaya peach peru pink plum
powder puff purple red rose rosy royal saddle salmon sandy sea seashell sienna silver sky slate
smoke snow spring steel tan teal thistle tomato turquoise violet wheat whip white wood yellow
""".split())


def split_color_name(name: str) -> str:
    """`lightgoldenrodyellow` -> `light goldenrod yellow` (fewest known words; raises if none fit)."""
    best: list[list[str] | None] = [[]] + [None] * len(name)
    for end in range(1, len(name) + 1):
        for start in range(end):
            word, head = name[start:end], best[start]
            if head is not None and word in COLOR_WORDS:
                if best[end] is None or len(head) + 1 < len(best[end]):
                    best[end] = head + [word]
    if best[-1] is None:
        raise ValueError(f"CSS3 colour name {quote(name)} does not split into known colour words")
    return " ".join(best[-1])


@functools.lru_cache(maxsize=1)
def _palette() -> tuple[tuple[str, tuple[int, int, int]], ...]:
    names = sorted(webcolors.names(webcolors.CSS3))
    return tuple((n, tuple(webcolors.name_to_rgb(n, spec=webcolors.CSS3))) for n in names)


@functools.lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, tuple[str, ...]]:
    names, rgbs = zip(*_palette())
    return np.array(rgbs, dtype=np.float64), tuple(split_color_name(n) for n in names)


def nearest_color(rgb: Sequence[float]) -> str:
    """Nearest CSS3 name (by Euclidean RGB distance) of an RGB triple of 0-255 ints or floats, as words.

    Ties (aqua/cyan, gray/grey, ...) resolve to the alphabetically first name (`gray`, not `grey`):
    the palette is sorted by name and argmin returns the first minimum.
    """
    if len(rgb) != 3 or any(not (0 <= float(c) <= 255) for c in rgb):
        raise ValueError(f"RGB {quote(list(rgb))} is not three values in 0..255")
    ref, words = _arrays()
    return words[int(np.argmin(((ref - np.asarray(rgb, dtype=np.float64)) ** 2).sum(axis=1)))]
