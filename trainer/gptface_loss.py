"""GPTFace's objective on one batch: MILM (masked image and text ids through the shared softmax) + ITM.

MILM is the mean cross-entropy over every masked position of the matched rows, image codes and text
ids pooled (the paper's one MILM loss over both modalities), over the full shared vocabulary: the
model must itself learn which modality a position holds. ITM is the binary cross-entropy of the
[CLS] logit. The loss to backpropagate is MILM + itm_weight x ITM.

The sums behind the logs (per modality, ITM loss and accuracy) are returned as named, detached
device tensors, so a training loop can add them over micro-steps and all-reduce them without a
host sync; `summarize` turns summed stats into the logged means.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .gptface import GPTFace
from .gptface_batch import IMAGE, TEXT, GPTFaceBatch

# The fields of `GPTFaceLoss.stats`, in the order a loop may stack them for one all-reduce.
STAT_KEYS = ("image_loss_sum", "image_masked", "text_loss_sum", "text_masked", "itm_loss_sum", "itm_correct", "pairs")


class GPTFaceLoss(NamedTuple):
    loss: torch.Tensor              # MILM + itm_weight * ITM: the one to backpropagate
    milm: torch.Tensor
    itm: torch.Tensor
    stats: dict[str, torch.Tensor]  # STAT_KEYS -> detached float64 scalars, summable over micro-steps and ranks


def gptface_loss(model: GPTFace, batch: GPTFaceBatch, itm_weight: float = 1.0) -> GPTFaceLoss:
    out = model(batch.ids, batch.attention_pad, batch.index)
    targets = batch.targets.view(-1).index_select(0, batch.index)
    modality = batch.modality.view(-1).index_select(0, batch.index)
    ce = F.cross_entropy(out.logits.float(), targets, reduction="none")
    # numel() is known on the host (the batch builder found the targets), so no sync here.
    milm = ce.sum() / max(batch.index.numel(), 1)
    itm = F.binary_cross_entropy_with_logits(out.itm.float(), batch.itm)
    with torch.no_grad():
        stats = {"image_loss_sum": (ce * (modality == IMAGE)).sum(), "image_masked": (modality == IMAGE).sum(),
                 "text_loss_sum": (ce * (modality == TEXT)).sum(), "text_masked": (modality == TEXT).sum(),
                 "itm_loss_sum": itm * batch.itm.numel(), "itm_correct": ((out.itm > 0) == (batch.itm > 0.5)).sum(),
                 "pairs": torch.tensor(batch.itm.numel(), device=ce.device)}
    return GPTFaceLoss(milm + itm_weight * itm, milm, itm, {k: stats[k].detach().double() for k in STAT_KEYS})


def summarize(stats: dict[str, torch.Tensor | float]) -> dict[str, float | None]:
    """Summed stats -> the logged means: MILM loss per modality, ITM loss and accuracy (None without data)."""
    s = {k: float(v) for k, v in stats.items()}

    def mean(total: str, count: str) -> float | None:
        return s[total] / s[count] if s[count] else None

    return {"milm_image": mean("image_loss_sum", "image_masked"), "milm_text": mean("text_loss_sum", "text_masked"),
            "itm_loss": mean("itm_loss_sum", "pairs"), "itm_acc": mean("itm_correct", "pairs"),
            "image_masked": s["image_masked"], "text_masked": s["text_masked"]}
