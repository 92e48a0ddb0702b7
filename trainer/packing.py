"""Several training sequences in one row, to spend less compute on padding.

`collate` pads every sequence to the batch width (336 for Talk2Face's 270-334 ids: about a tenth
of the positions are padding). `pack` places whole sequences, in their order, into the first row of
`width` ids with room left (first fit), and marks each position with its document (1, 2, ... within
its row; 0 = padding) and its position within its own sequence. The model then computes for every
sequence what it computes for it alone (model.py: a document mask beside the prefix-LM mask, and
positions from `pos`), and the loss positions are collate's own rule, never across two documents.
Worth it with FlexAttention, which skips the blocks between documents; SDPA would attend over the
whole row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sequences import Instance


def first_fit(lengths: list[int], width: int) -> list[list[int]]:
    """Indices of `lengths` per row: each in the first row with room for it, in order."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i, n in enumerate(lengths):
        if n > width:
            raise ValueError(f"a sequence of {n} ids does not fit in a packed row of {width}")
        r = next((r for r, room in enumerate(free) if room >= n), None)
        if r is None:
            rows.append([i])
            free.append(width - n)
        else:
            rows[r].append(i)
            free[r] -= n
    return rows


def pack(instances: list[Instance], width: int, loss_on: str = "target", rows: int = 0) -> dict[str, torch.Tensor]:
    """Packed rows: collate's ids, seg, targets and target_index, plus `pos` and `doc` ([R, width])
    for the model and `target_task` (the task of each target, in target_index order) in place of a
    task per row. `rows`: at least this many rows (empty ones are all padding), so a compiled step
    sees one shape."""
    layout = first_fit([len(inst.ids) for inst in instances], width)
    R = max(rows, len(layout))
    ids, seg, pos, doc, task = (torch.zeros(R, width, dtype=torch.long) for _ in range(5))
    for r, members in enumerate(layout):
        at = 0
        for d, i in enumerate(members, 1):
            inst, n = instances[i], len(instances[i].ids)
            ids[r, at:at + n] = torch.tensor(inst.ids)
            seg[r, at:at + n] = torch.tensor(inst.seg)
            pos[r, at:at + n] = torch.arange(n)
            doc[r, at:at + n] = d
            task[r, at:at + n] = inst.task
            at += n
    # collate's rule (sequences.py), between two positions of one document only.
    next_seg, next_doc = F.pad(seg[:, 1:], (0, 1)), F.pad(doc[:, 1:], (0, 1))
    has_target = (next_seg == 2 if loss_on == "target" else next_seg != 0) & (next_doc == doc) & (doc > 0)
    targets = torch.where(has_target, F.pad(ids[:, 1:], (0, 1)), torch.full_like(ids, -1))
    target_index = (targets.view(-1) >= 0).nonzero().squeeze(1)
    return {"ids": ids, "seg": seg, "pos": pos, "doc": doc, "targets": targets, "target_index": target_index,
            "target_task": task.view(-1).index_select(0, target_index)}
