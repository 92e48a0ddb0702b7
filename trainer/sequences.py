"""The four Talk2Face training tasks as id sequences (docs/design.md, "Sequences"), and the prefixes
generation feeds the model, built by the same code so both cut texts alike.

    [CLS] prompt [SEP] prefix [SEP] target [SEP]
    |<------------ segment 1 ----------->|<- segment 2 ->|

face->caption and face->attributes put the image's codes (one id per code, code + 30,522) in the
prefix and text in the target; caption->face and attributes->face the other way round. How many
codes an image has comes from the VQGAN's code grid (facecorpus.codes), never from a constant. Text
gets what the longest prompt and the image leave of `seq_len`: by default the release's 71 ids
(`TEXT_BUDGET`), so 334 ids for a 16x16 grid. Captions are cut on a word boundary, attribute texts
keep a subset of their key-value pairs that fits (random and in random order in training, the
first pairs in their order at generation). Both are counted.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from facecorpus import textproto, vocab
from facecorpus.codes import FFHQ_F16, CodeGrid
from facecorpus.records import DATASETS

from .config import TALK2FACE_TASKS

TASKS = TALK2FACE_TASKS   # their names; a task's number is its place here

if TYPE_CHECKING:
    import torch

# What the model is asked to produce -> the prompt that asks for it (the release's three prompts).
PROMPTS = {"image": "to image", "caption": "to caption", "attributes": "to attributes"}
# Text ids per sequence in the release: its 334 ids are the 262-id to-caption prefix (16x16 codes)
# plus 71 text ids and the closing [SEP].
TEXT_BUDGET = 71
MIN_TEXT_BUDGET = 8


@functools.lru_cache(maxsize=1)
def prompt_ids() -> dict[str, list[int]]:
    return {name: vocab.encode_text(text) for name, text in PROMPTS.items()}


@functools.lru_cache(maxsize=1)
def continuation_table() -> np.ndarray:
    """Bool [30,522]: True at the WordPiece ids that continue a word (`##ion`); a cut must not land
    just before one, and a masked span counts whole words by it."""
    with open(vocab.vocab_path(), encoding="utf-8") as f:
        return np.array([tok.startswith("##") for tok in f.read().splitlines()], dtype=bool)


def truncate_words(ids: list[int], limit: int) -> tuple[list[int], int]:
    """`ids` cut to at most `limit` without splitting a word (one word longer than `limit` is cut
    inside it) -> (ids, how many were dropped). The one word-boundary cut of every text budget."""
    if len(ids) <= limit:
        return ids, 0
    cut, cont = limit, continuation_table()
    while cut > 0 and cont[ids[cut]]:   # back off to the start of the word that would be split
        cut -= 1
    cut = cut or limit
    return ids[:cut], len(ids) - cut


def fixed_ids(grid: CodeGrid) -> int:
    """Ids every sequence spends besides its text: [CLS], the longest prompt (`to capt ##ion`), [SEP],
    the image's codes, [SEP] and the closing [SEP]."""
    longest = max(len(p) for p in prompt_ids().values())
    return 1 + longest + 1 + grid.count + 1 + 1


def default_seq_len(grid: CodeGrid) -> int:
    """The sequence length that leaves the release's text budget beside this grid (334 at 16x16)."""
    return fixed_ids(grid) + TEXT_BUDGET


def text_budget(seq_len: int, grid: CodeGrid = FFHQ_F16) -> int:
    """Text ids that fit in `seq_len` beside the longest prompt and the grid's codes."""
    budget = seq_len - fixed_ids(grid)
    if budget < MIN_TEXT_BUDGET:   # the config validator's message format (trainer/config.py)
        raise ValueError(f"data.seq_len={seq_len}: must be >= {fixed_ids(grid) + MIN_TEXT_BUDGET} (the longest "
                         f"prompt, {grid.count} image codes and at least {MIN_TEXT_BUDGET} text ids)")
    return budget


def is_attribute_text(text: str) -> bool:
    """Whether `text` reads as the key-value protocol of a known dataset (`fairface age: 10-19; ...`)."""
    try:
        dataset, labels = textproto.from_text(text)
    except textproto.ProtocolError:
        return False
    return dataset in DATASETS and bool(labels)


def attribute_subset(text: str, budget: int, rng: np.random.Generator | None, where: str = "") -> tuple[list[int], int, int]:
    """The ids of `<dataset> k: v; k: v` keeping a subset of its pairs that fits in `budget` ids:
    with `rng` a random subset in random order (training), without it the first pairs in their order
    (generation) -> (ids, pairs kept, pairs in the text). A text no pair of which fits is an error."""
    dataset, _, body = text.strip().partition(" ")
    try:
        pairs = [f"{k}: {v}" for k, v in textproto.split_pairs(body)]
    except textproto.ProtocolError as e:
        raise ValueError(f"{where}: attribute text {text[:200]!r}: {e}") from None
    pair_ids = vocab.encode_batch(pairs)
    ids = vocab.encode_text(dataset)
    semicolon = vocab.encode_text(";")
    kept = 0
    for i in rng.permutation(len(pairs)) if rng is not None else range(len(pairs)):
        piece = (semicolon if kept else []) + pair_ids[i]
        if len(ids) + len(piece) > budget:
            break   # a prefix of a random permutation: an unbiased random subset
        ids, kept = ids + piece, kept + 1
    if kept == 0:
        raise ValueError(f"{where}: no key-value pair of {text[:200]!r} fits in {budget} ids")
    return ids, kept, len(pairs)


def cut_prompt(text: str, budget: int) -> tuple[list[int], str | None]:
    """A prompt's text (a caption or an attribute text) cut as training cuts it, without randomness:
    a caption on a word boundary, an attribute text to its first key-value pairs in their order ->
    (ids, a note saying what was cut, or None when it fits). Both model families' prompts use it."""
    if is_attribute_text(text):
        ids, kept, total = attribute_subset(text, budget, None, "prompt text")
        if kept < total:
            return ids, f"kept the first {kept} of {total} key-value pairs: the text budget is {budget} ids"
        return ids, None
    ids, dropped = truncate_words(vocab.encode_text(text), budget)
    if dropped:
        return ids, (f"cut to {len(ids)} of {len(ids) + dropped} WordPiece ids at a word boundary: the text "
                     f"budget is {budget} ids")
    return ids, None


@dataclass
class Instance:
    ids: list[int]
    seg: list[int]
    task: int


class SequenceBuilder:
    """Builds instances and prefixes for one code grid and sequence length, and counts what it
    shortened (`stats`), so nothing is cut silently. `seq_len=None`: `default_seq_len(grid)`."""

    def __init__(self, seq_len: int | None = None, grid: CodeGrid = FFHQ_F16):
        self.grid = grid
        self.seq_len = seq_len or default_seq_len(grid)
        self.budget = text_budget(self.seq_len, grid)
        self.stats: Counter = Counter()

    def caption(self, text: str) -> list[int]:
        ids, dropped = truncate_words(vocab.encode_text(text), self.budget)
        if dropped:
            self.stats["captions truncated"] += 1
            self.stats["caption ids dropped"] += dropped
        return ids

    def attributes(self, text: str, rng: np.random.Generator | None, where: str = "") -> list[int]:
        """`<dataset> k: v; k: v` with a subset of the pairs that fits (`attribute_subset`), counted."""
        ids, kept, total = attribute_subset(text, self.budget, rng, where)
        if kept < total:
            self.stats["attribute texts subset"] += 1
            self.stats["attribute pairs dropped"] += total - kept
        return ids

    def prompt_text(self, text: str) -> tuple[list[int], str | None]:
        """A to-image input cut to this builder's text budget (`cut_prompt`)."""
        return cut_prompt(text, self.budget)

    def image_ids(self, codes) -> list[int]:
        """One image's codes (any shape holding `grid.count` codes in the codebook) as vocabulary ids."""
        flat = np.asarray(codes).reshape(-1)
        if flat.size != self.grid.count or (flat.size and (int(flat.min()) < 0 or int(flat.max()) >= self.grid.codebook_size)):
            lo, hi = (int(flat.min()), int(flat.max())) if flat.size else (0, 0)
            raise ValueError(f"an image needs {self.grid.count} codes in [0, {self.grid.codebook_size}), "
                             f"got {flat.size} in {lo}..{hi}")
        return vocab.image_ids(flat)

    def prefix(self, produce: str, image: list[int] | None = None, text_ids: list[int] | None = None) -> list[int]:
        """Segment 1 of a sequence asking for `produce` (a key of PROMPTS):
        `[CLS] prompt [SEP] <text ids, or the image ids> [SEP]`."""
        body = text_ids if produce == "image" else image
        return [vocab.CLS, *prompt_ids()[produce], vocab.SEP, *body, vocab.SEP]

    def build(self, task: int, codes: np.ndarray, text_ids: list[int]) -> Instance:
        name = TASKS[task]
        image = self.image_ids(codes)
        if name.startswith("face2"):
            first, target = self.prefix(name[5:], image=image), text_ids
        else:
            first, target = self.prefix("image", text_ids=text_ids), image
        second = [*target, vocab.SEP]
        ids = first + second
        if len(ids) > self.seq_len:
            raise AssertionError(f"{name}: {len(ids)} ids exceed seq_len={self.seq_len}")  # budget arithmetic bug
        return Instance(ids, [1] * len(first) + [2] * len(second), task)


def collate(instances: list[Instance], width: int, loss_on: str = "target") -> dict[str, torch.Tensor]:
    """Right-padded tensors: ids, seg, targets (next id, -1 where no loss), target_index (flat
    positions of the targets, so the GPU never has to find them with a host sync), task.

    loss_on="target" predicts segment 2 only (from the prefix's closing [SEP] to the final [SEP]);
    "all" predicts every non-pad next id, as the released model did (a copy task inside the prefix).
    """
    import torch  # here, not at the top: the report reads the budgets without loading torch

    B = len(instances)
    ids = torch.zeros(B, width, dtype=torch.long)
    seg = torch.zeros(B, width, dtype=torch.long)
    for r, inst in enumerate(instances):
        ids[r, :len(inst.ids)] = torch.tensor(inst.ids)
        seg[r, :len(inst.seg)] = torch.tensor(inst.seg)
    next_seg = torch.nn.functional.pad(seg[:, 1:], (0, 1))
    has_target = next_seg == 2 if loss_on == "target" else next_seg != 0
    targets = torch.where(has_target, torch.nn.functional.pad(ids[:, 1:], (0, 1)), torch.full_like(ids, -1))
    task = torch.tensor([inst.task for inst in instances], dtype=torch.long)
    target_index = (targets.view(-1) >= 0).nonzero().squeeze(1)
    return {"ids": ids, "seg": seg, "targets": targets, "target_index": target_index, "task": task}
