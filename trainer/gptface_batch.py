"""GPTFace batches: records -> masked sequences, MILM targets, ITM labels and each position's modality.

A record is `{key, image_id, codes (side x side uint16), text}` and optionally `kind` ("caption",
the default, or "attributes"). Each becomes

    [CLS] image codes (span-masked) [SEP] text ids (span-masked, at most max_text) [PAD ...]

Half the rows (B // 2, chosen at random) are ITM negatives: they keep their image but take the text
of another row that shows another image (another image_id, so never a second record of the same
photo) and says something else (another text). Both kinds of row are masked the same way, so ITM
learns on the masked input it will see when generation scores a half-decoded image; only matched
rows carry MILM targets, because predicting a face from a caption of another face teaches wrong
associations (docs/gptface.md). A caption longer than `max_text` ids is cut on a word boundary; an
attribute text keeps a random subset of its key-value pairs that fits, as Talk2Face's training
does (`sequences.attribute_subset`, drawn from the sample's own generator); both are counted.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from facecorpus import vocab
from facecorpus.codes import CodeGrid

from .config import MaskingConfig
from .generate import allowed_ids
from .gptface_masking import (
    IMAGE_STREAM,
    ITM_STREAM,
    SUBSET_STREAM,
    TEXT_STREAM,
    image_budget,
    image_mask_count,
    image_span_mask,
    sample_rng,
    text_span_mask,
)
from .sequences import attribute_subset, continuation_table, truncate_words

OTHER, IMAGE, TEXT = 0, 1, 2   # a position's modality: [CLS], [SEP] and padding / an image code / a text id
IGNORE = -100                  # target of a position without a MILM loss (cross_entropy's ignore_index)
# What a batch counts of the texts it shortened (GPTFaceBatch.stats), in the order the logs sum them.
DATA_STATS = ("texts truncated", "text ids dropped", "attribute texts subset", "attribute pairs dropped")


@dataclass(frozen=True)
class Layout:
    """Where each part of a GPTFace sequence sits, for one code grid and text length."""
    grid: CodeGrid
    max_text: int = 64

    @property
    def text_start(self) -> int:
        return 2 + self.grid.count          # after [CLS], the codes and [SEP]

    @property
    def length(self) -> int:
        return self.text_start + self.max_text

    def modality(self, width: int) -> np.ndarray:
        """uint8 [width]: OTHER at [CLS] and [SEP], IMAGE on the codes, TEXT from the text start on."""
        m = np.full(width, TEXT, dtype=np.uint8)
        m[0] = m[self.text_start - 1] = OTHER
        m[1:self.text_start - 1] = IMAGE
        return m


@functools.lru_cache(maxsize=4)
def modality_table(codebook_size: int) -> torch.Tensor:
    """Bool [3, V], indexed by modality: the ids a position of that modality may produce
    (`generate.allowed_ids`; GPTFace's text has no [SEP] to produce). OTHER rows are never
    predicted; left unrestricted."""
    everything = torch.ones(vocab.vocab_size(codebook_size), dtype=torch.bool)
    return torch.stack([everything, allowed_ids("image", codebook_size), allowed_ids("text", codebook_size)])


def restrict_logits(logits: torch.Tensor, modality: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Logits [..., V] with -inf wherever the position's modality [...] forbids the id."""
    allowed = modality_table(codebook_size).to(logits.device)[modality.long()]
    return logits.masked_fill(~allowed, float("-inf"))


def itm_donors(image_ids: Sequence[str], texts: Sequence[str], keys: Sequence[str],
               rng: np.random.Generator) -> np.ndarray:
    """Row whose text each row gets: itself for the matched half, for the B // 2 negatives (chosen at
    random) a random row with another image_id and another text."""
    img, txt = np.asarray(image_ids, dtype=object), np.asarray(texts, dtype=object)
    eligible = (img[:, None] != img[None, :]) & (txt[:, None] != txt[None, :])
    donors = np.arange(len(img))
    for row in np.sort(rng.permutation(len(img))[:len(img) // 2]):
        choices = np.flatnonzero(eligible[row])
        if not len(choices):
            raise ValueError(_no_negative(row, img, keys))
        donors[row] = rng.choice(choices)
    return donors


def _no_negative(row: int, img: np.ndarray, keys: Sequence[str]) -> str:
    if (img == img[row]).all():
        why = f"all {len(img)} records of the batch show image {str(img[row])[:100]!r}"
    else:
        why = "every record of another image in the batch has the same text"
    return (f"{str(keys[row])[:100]}: no ITM negative possible: {why}; ITM needs records of at least two images "
            f"with different texts in every micro-batch (shuffle the shards, or raise the micro-batch size)")


@dataclass
class GPTFaceBatch:
    ids: torch.Tensor          # [B, W] long: the masked sequences, [PAD] (0) after the text
    pad: torch.Tensor          # [B, W] bool: True at padding
    targets: torch.Tensor      # [B, W] long: the true id at masked positions of matched rows, IGNORE elsewhere
    index: torch.Tensor        # [N] long: flat positions (b * W + t) of the targets, found here on the host
    modality: torch.Tensor     # [B, W] uint8: OTHER / IMAGE / TEXT
    itm: torch.Tensor          # [B] float: 1 = the row keeps its own text, 0 = another image's text
    padded: bool               # whether any row is padded (if not, attention runs with no mask)
    image_budget: float        # the image mask budget of this step (a fraction of the grid)
    keys: list[str]
    stats: Counter             # texts truncated and text ids dropped

    @property
    def attention_pad(self) -> torch.Tensor | None:
        """The padding mask for the model, None when nothing is padded."""
        return self.pad if self.padded else None

    def to(self, device, non_blocking: bool = False) -> GPTFaceBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> GPTFaceBatch:
        """What the DataLoader calls with pin_memory=True: page-locked tensors copy to a GPU asynchronously."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn) -> GPTFaceBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return GPTFaceBatch(**{k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})


class GPTFaceBatcher:
    """Builds GPTFace batches for one layout, masking schedule and run seed.

    `build(records, step, first_position)`: record i is the sample at `first_position + i` of
    optimizer step `step`'s global batch; its masks depend on (seed, step, position) only.
    """

    def __init__(self, layout: Layout, masking: MaskingConfig, seed: int, pad_to_multiple: int = 8):
        self.layout, self.masking, self.seed, self.pad_to_multiple = layout, masking, seed, pad_to_multiple

    def build(self, records: Sequence[dict], step: int, first_position: int) -> GPTFaceBatch:
        keys, image_ids, codes, texts, kinds = self._check(records)
        stats: Counter = Counter()
        text_ids = self._text_ids(texts, kinds, keys, step, first_position, stats)
        donors = itm_donors(image_ids, texts, keys, sample_rng(self.seed, step, first_position, ITM_STREAM))
        budget = image_budget(step, self.masking)
        n_image = image_mask_count(budget, self.layout.grid.count)
        rows = [self._row(codes[i], text_ids[donors[i]], n_image, step, first_position + i, donors[i] == i)
                for i in range(len(records))]
        return self._collate(rows, donors, budget, keys, stats)

    def _text_ids(self, texts: list[str], kinds: list[str], keys: list[str], step: int, first_position: int,
                  stats: Counter) -> list[list[int]]:
        """Each text's ids within max_text: captions cut on a word boundary, attribute texts a random
        subset of their pairs (drawn from the sample's SUBSET_STREAM); what was cut is counted."""
        out: list[list[int]] = [[] for _ in texts]
        captions = [i for i, kind in enumerate(kinds) if kind == "caption"]
        for i, ids in zip(captions, vocab.encode_batch([texts[i] for i in captions])):
            out[i], dropped = truncate_words(ids, self.layout.max_text)
            stats["texts truncated"] += dropped > 0
            stats["text ids dropped"] += dropped
        for i in (i for i, kind in enumerate(kinds) if kind == "attributes"):
            rng = sample_rng(self.seed, step, first_position + i, SUBSET_STREAM)
            out[i], kept, total = attribute_subset(texts[i], self.layout.max_text, rng, keys[i])
            stats["attribute texts subset"] += kept < total
            stats["attribute pairs dropped"] += total - kept
        return out

    def _check(self, records: Sequence[dict]) -> tuple[list[str], list[str], list[np.ndarray], list[str], list[str]]:
        keys, image_ids, codes, texts, kinds = [], [], [], [], []
        for n, r in enumerate(records):
            key = str(r.get("key", f"record {n} of the batch"))[:200]
            missing = [f for f in ("key", "image_id", "codes", "text") if f not in r]
            if missing:
                raise ValueError(f"{key}: record lacks {', '.join(missing)}")
            c = np.asarray(r["codes"])
            problem = self.layout.grid.problem(c)
            if problem:
                raise ValueError(f"{key}: {problem}")
            if not str(r["text"]).strip():
                raise ValueError(f"{key}: empty text")
            if r.get("kind", "caption") not in ("caption", "attributes"):
                raise ValueError(f"{key}: kind {str(r['kind'])[:50]!r} is neither caption nor attributes")
            keys.append(key)
            image_ids.append(str(r["image_id"]))
            codes.append(c)
            texts.append(str(r["text"]))
            kinds.append(r.get("kind", "caption"))
        return keys, image_ids, codes, texts, kinds

    def _row(self, codes: np.ndarray, text: list[int], n_image: int, step: int, position: int,
             matched: bool) -> tuple[np.ndarray, np.ndarray]:
        """(masked ids, targets) of one sequence."""
        image_rng, text_rng = (sample_rng(self.seed, step, position, s) for s in (IMAGE_STREAM, TEXT_STREAM))
        image_mask = image_span_mask(self.layout.grid.side, n_image, image_rng).reshape(-1)
        text_arr = np.asarray(text, dtype=np.int64)
        text_mask = text_span_mask(continuation_table()[text_arr], self.masking, text_rng)
        image = vocab.IMAGE_OFFSET + codes.reshape(-1).astype(np.int64)
        truth = np.concatenate([[vocab.CLS], image, [vocab.SEP], text_arr])
        masked = np.concatenate([[False], image_mask, [False], text_mask])
        targets = np.where(masked, truth, IGNORE) if matched else np.full(len(truth), IGNORE)
        return np.where(masked, vocab.MASK, truth), targets

    def _collate(self, rows, donors: np.ndarray, budget: float, keys: list[str], stats: Counter) -> GPTFaceBatch:
        longest = max(len(ids) for ids, _ in rows)
        width = min(-(-longest // self.pad_to_multiple) * self.pad_to_multiple, self.layout.length)
        ids = np.full((len(rows), width), vocab.PAD, dtype=np.int64)
        targets = np.full((len(rows), width), IGNORE, dtype=np.int64)
        pad = np.ones((len(rows), width), dtype=bool)
        for r, (row_ids, row_targets) in enumerate(rows):
            n = len(row_ids)
            ids[r, :n], targets[r, :n], pad[r, :n] = row_ids, row_targets, False
        modality = np.where(pad, OTHER, self.layout.modality(width)[None, :]).astype(np.uint8)
        matched = (donors == np.arange(len(rows))).astype(np.float32)
        return GPTFaceBatch(
            ids=torch.from_numpy(ids), pad=torch.from_numpy(pad), targets=torch.from_numpy(targets),
            index=torch.from_numpy(np.flatnonzero(targets.reshape(-1) != IGNORE)),
            modality=torch.from_numpy(modality), itm=torch.from_numpy(matched),
            padded=bool(pad.any()), image_budget=budget, keys=keys, stats=stats)
