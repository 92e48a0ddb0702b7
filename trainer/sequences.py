"""The four Talk2Face training tasks as id sequences (docs/design.md, "Sequences").

    [CLS] prompt [SEP] prefix [SEP] target [SEP]
    |<------------ segment 1 ----------->|<- segment 2 ->|

face->caption and face->attributes put the 256 image ids (code + 30,522) in the prefix and text in
the target; caption->face and attributes->face the other way round. Text gets what the longest
prompt leaves of `seq_len` (334 - 263 = 71 ids): captions are cut on a word boundary, attribute
texts keep a random subset of their key-value pairs, in random order, that fits. Both are counted.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from facecorpus import textproto, vocab

TASKS = ("face2caption", "caption2face", "face2attributes", "attributes2face")
IMAGE_LEN = 256
PROMPTS = {"image": "to image", "caption": "to caption", "attributes": "to attributes"}


@functools.lru_cache(maxsize=1)
def prompt_ids() -> dict[str, list[int]]:
    return {name: vocab.encode_text(text) for name, text in PROMPTS.items()}


@functools.lru_cache(maxsize=1)
def continuation_ids() -> frozenset[int]:
    """WordPiece ids that continue a word (`##ion`): a cut must not land just before one."""
    with open(vocab.vocab_path(), encoding="utf-8") as f:
        return frozenset(i for i, tok in enumerate(f.read().splitlines()) if tok.startswith("##"))


def text_budget(seq_len: int) -> int:
    """Text ids that fit beside the longest prompt (`to capt ##ion`), 256 image ids and 3 specials."""
    longest = max(len(p) for p in prompt_ids().values())
    budget = seq_len - (1 + longest + 1 + IMAGE_LEN + 1 + 1)
    if budget < 8:
        raise ValueError(f"data.seq_len={seq_len} leaves {budget} text ids; use at least {seq_len - budget + 8}")
    return budget


@dataclass
class Instance:
    ids: list[int]
    seg: list[int]
    task: int


class SequenceBuilder:
    """Builds instances and counts what it shortened (`stats`), so nothing is cut silently."""

    def __init__(self, seq_len: int = 334):
        self.seq_len, self.budget = seq_len, text_budget(seq_len)
        self.stats: Counter = Counter()

    def caption(self, text: str) -> list[int]:
        ids = vocab.encode_text(text)
        if len(ids) <= self.budget:
            return ids
        cut, cont = self.budget, continuation_ids()
        while cut > 0 and ids[cut] in cont:   # back off to the start of the word that would be split
            cut -= 1
        self.stats["captions truncated"] += 1
        self.stats["caption ids dropped"] += len(ids) - cut
        return ids[:cut or self.budget]

    def attributes(self, text: str, rng: np.random.Generator, where: str = "") -> list[int]:
        """`<dataset> k: v; k: v` with a random subset of the pairs, in random order, that fits."""
        dataset, _, body = text.strip().partition(" ")
        try:
            pairs = [f"{k}: {v}" for k, v in textproto.split_pairs(body)]
        except textproto.ProtocolError as e:
            raise ValueError(f"{where}: attribute text {text!r}: {e}") from None
        pair_ids = vocab.encode_batch(pairs)
        ids = vocab.encode_text(dataset)
        semicolon = vocab.encode_text(";")
        kept = 0
        for i in rng.permutation(len(pairs)):
            piece = (semicolon if kept else []) + pair_ids[i]
            if len(ids) + len(piece) > self.budget:
                break   # a prefix of a random permutation: an unbiased random subset
            ids, kept = ids + piece, kept + 1
        if kept == 0:
            raise ValueError(f"{where}: no key-value pair of {text!r} fits in {self.budget} ids")
        if kept < len(pairs):
            self.stats["attribute texts subset"] += 1
            self.stats["attribute pairs dropped"] += len(pairs) - kept
        return ids

    def build(self, task: int, codes: np.ndarray, text_ids: list[int]) -> Instance:
        name = TASKS[task]
        image = vocab.image_ids(np.asarray(codes).reshape(-1))
        if name.startswith("face2"):
            prompt, prefix, target = prompt_ids()[name[5:]], image, text_ids
        else:
            prompt, prefix, target = prompt_ids()["image"], text_ids, image
        first = [vocab.CLS, *prompt, vocab.SEP, *prefix, vocab.SEP]
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
