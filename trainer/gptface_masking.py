"""GPTFace's masks, as pure functions of a seeded generator: image span masks on the code grid, the
image mask budget schedule, and SpanBERT-style text span masks.

Every random choice of a sample comes from `sample_rng(seed, step, position, purpose)`: the run's
seed, the optimizer step, the sample's position in that step's global batch and what the numbers
are for. So a resumed run draws exactly what the uninterrupted one would have, a sample's masks do
not depend on which other samples share its micro-batch, and the image mask does not shift when the
text beside it changes (an ITM negative gets another sample's text, not another image mask).
"""

from __future__ import annotations

import math

import numpy as np

from .config import MaskingConfig

# Streams of one sample's randomness (the last word of its seed sequence).
IMAGE_STREAM, TEXT_STREAM, ITM_STREAM, SUBSET_STREAM = 0, 1, 2, 3   # SUBSET: an attribute text's pairs


def sample_rng(seed: int, step: int, position: int, stream: int) -> np.random.Generator:
    """The generator of one sample's `stream` at one optimizer step (all arguments >= 0)."""
    return np.random.default_rng([seed, step, position, stream])


def image_budget(step: int, cfg: MaskingConfig) -> float:
    """Fraction of the image's codes masked at optimizer `step`: 15% rising 1% every 20,000 steps to 65%."""
    # Computed in whole rises from the start, not accumulated, so step 10^6 gives 0.65 and not 0.6500000001.
    return min(cfg.image_start + (step // cfg.image_every) * cfg.image_rise, cfg.image_max)


def image_mask_count(fraction: float, n_codes: int) -> int:
    """Codes to mask: the budget rounded to the nearest code (half up), at least one."""
    # round() first: float noise in a schedule value (0.15 + k x 0.01) must not move a .5 across the cut.
    return max(1, min(n_codes, math.floor(round(fraction * n_codes, 9) + 0.5)))


def image_span_mask(side: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Bool [side, side] with exactly `count` True cells forming one 4-connected region.

    Grown from a uniform random seed code by adding a uniformly chosen cell of the frontier (the
    unmasked 4-neighbours of the region) at a time, so the region is a compact random blob rather than
    a line. The grid is connected, so the frontier is never empty before the whole grid is masked:
    any budget up to side² is always met by one region.
    """
    if not 1 <= count <= side * side:
        raise ValueError(f"image mask of {count} codes on a {side}x{side} grid")
    mask = np.zeros((side, side), dtype=bool)
    frontier: list[tuple[int, int]] = []
    in_frontier = np.zeros((side, side), dtype=bool)
    cell = divmod(int(rng.integers(side * side)), side)
    for _ in range(count):
        mask[cell] = True
        r, c = cell
        for nb in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nb[0] < side and 0 <= nb[1] < side and not mask[nb] and not in_frontier[nb]:
                in_frontier[nb] = True
                frontier.append(nb)
        if frontier:
            i = int(rng.integers(len(frontier)))
            frontier[i], frontier[-1] = frontier[-1], frontier[i]   # O(1) removal of a random element
            cell = frontier.pop()
    return mask


def span_length_probs(p: float, longest: int) -> np.ndarray:
    """SpanBERT's span lengths 1..longest: geometric(p), clipped (renormalised) at `longest`."""
    lengths = np.arange(1, longest + 1)
    probs = p * (1 - p) ** (lengths - 1)
    return probs / probs.sum()


def word_starts(is_continuation: np.ndarray) -> np.ndarray:
    """Indices where a word begins: every id that is not a `##` continuation (and the first id)."""
    starts = ~is_continuation
    starts[:1] = True
    return np.flatnonzero(starts)


def text_span_mask(is_continuation: np.ndarray, cfg: MaskingConfig, rng: np.random.Generator) -> np.ndarray:
    """Bool [n] over a text's n ids: exactly ceil(text_ratio * n) of them, in spans of whole words.

    SpanBERT's scheme: draw a span length in words, a random id, start the span at that id's word and
    take whole words until the length or the budget is reached (so only the last span can end inside
    a word, and the budget is met exactly). Spans may touch or overlap earlier ones.
    """
    n = len(is_continuation)
    budget = math.ceil(cfg.text_ratio * n)
    starts = word_starts(is_continuation)
    ends = np.append(starts[1:], n)                      # word w is ids [starts[w], ends[w])
    word_of = np.searchsorted(starts, np.arange(n), side="right") - 1
    probs = span_length_probs(cfg.span_p, cfg.span_max)
    mask = np.zeros(n, dtype=bool)
    masked = 0
    while masked < budget:
        length = 1 + int(rng.choice(len(probs), p=probs))
        anchor = int(rng.integers(n))
        if mask[anchor]:
            continue   # as SpanBERT: a span never starts inside an earlier one
        first = word_of[anchor]
        for i in range(starts[first], ends[min(first + length, len(starts)) - 1]):
            if masked == budget:
                break
            masked += not mask[i]
            mask[i] = True
    return mask
