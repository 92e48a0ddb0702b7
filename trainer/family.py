"""The two model families behind one small interface, so the training loop (trainer/train.py) holds
no `if family ==`: a family builds its model and its data, runs one micro-batch's forward and loss,
and names the sums its log lines are made of.

Sums stay on the device (adding them needs no host sync) and add up over micro-steps and ranks;
`means` turns a window of them into the logged figures. Every family's sums also hold `tokens`
(non-pad) and `sequences`, and `data`: the loader's counts of shortened texts.
"""

from __future__ import annotations

import torch
from torch import nn

from . import mfu
from .batches import STAT_KEYS, BalancedStream, ShardBatches, StreamSpec, task_kinds
from .config import RunConfig
from .gptface import GPTFace
from .gptface import param_summary as gptface_summary
from .gptface_batch import DATA_STATS
from .gptface_data import RECORD_KINDS, GPTFaceStream
from .gptface_loss import STAT_KEYS as LOSS_KEYS
from .gptface_loss import gptface_loss, summarize
from .gptface_masking import image_budget
from .model import Talk2Face
from .model import param_summary as talk2face_summary
from .sequences import TASKS


class Family:
    name: str                                   # RunConfig.family
    title: str                                  # for people
    fields: tuple[tuple[str, int], ...]         # the sums `forward` returns besides tokens and sequences

    def build_model(self, model_cfg) -> nn.Module:
        raise NotImplementedError

    def kinds(self, cfg: RunConfig) -> tuple[str, ...]:
        """The record kinds a run trains on (the val split needs them too, for a held-out loss)."""
        raise NotImplementedError

    def dataset(self, spec: StreamSpec, cfg: RunConfig, accum: int) -> ShardBatches:
        raise NotImplementedError

    def forward(self, model, batch, device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(mean loss of the micro-batch to backpropagate, its detached sums)."""
        raise NotImplementedError

    def flops(self, cfg: RunConfig, batch) -> float:
        """Useful training FLOPs of a batch (mfu.batch_flops), from its CPU tensors."""
        raise NotImplementedError

    def means(self, sums: dict[str, list[float]], prefix: str) -> dict:
        """Summed fields -> the logged figures, named `{prefix}loss...` ("" in training, "val/" held out)."""
        raise NotImplementedError

    def extras(self, cfg: RunConfig, step: int) -> dict:
        """Figures of the schedule rather than of the data, for the log line after `step` steps."""
        return {}

    def summary(self, model) -> str:
        raise NotImplementedError


class Talk2FaceFamily(Family):
    name, title = "talk2face", "Talk2Face"
    fields = (("loss", len(TASKS)),            # summed per-position cross-entropy, per task
              ("targets", len(TASKS)),         # positions that carried a loss, per task
              ("data", len(STAT_KEYS)))        # the loader's counts of shortened texts (STAT_KEYS)
    data_stats = STAT_KEYS

    def build_model(self, model_cfg) -> nn.Module:
        return Talk2Face(model_cfg)

    def kinds(self, cfg: RunConfig) -> tuple[str, ...]:
        return task_kinds(cfg.data.task_names)   # both for the four tasks; data.tasks may need one

    def dataset(self, spec: StreamSpec, cfg: RunConfig, accum: int) -> ShardBatches:
        return BalancedStream(spec)

    def forward(self, model, batch, device):
        ids, seg, targets, index, task = (batch[k].to(device, non_blocking=True)
                                          for k in ("ids", "seg", "targets", "target_index", "task"))
        losses = model(ids, seg, targets=targets, target_index=index)
        # Per-task sums by scatter_add, not bincount: no host sync.
        row_task = task.index_select(0, index // ids.shape[1])
        zeros = torch.zeros(len(TASKS), dtype=torch.float64, device=device)
        sums = {"loss": zeros.scatter_add(0, row_task, losses.detach().double()),
                "targets": zeros.scatter_add(0, row_task, torch.ones_like(row_task, dtype=torch.float64)),
                "tokens": (seg != 0).sum(), "sequences": ids.shape[0], "data": batch["stats"]}
        return losses.sum() / losses.numel(), sums

    def flops(self, cfg: RunConfig, batch) -> float:
        return mfu.batch_flops(cfg.model, (batch["seg"] != 0).sum(1), batch["target_index"].numel())

    def means(self, sums: dict[str, list[float]], prefix: str) -> dict:
        """Mean loss per target position, in total and per task (None without targets)."""
        per_task = {f"{prefix}loss/{t}": s / c if c else None for t, s, c in zip(TASKS, sums["loss"], sums["targets"])}
        return {f"{prefix}loss": sum(sums["loss"]) / max(1.0, sum(sums["targets"])), **per_task}

    def summary(self, model) -> str:
        return talk2face_summary(model)


class GPTFaceFamily(Family):
    name, title = "gptface", "GPTFace"
    fields = (("milm", len(LOSS_KEYS)),        # gptface_loss's named sums, in its STAT_KEYS order
              ("data", len(DATA_STATS)))       # the batcher's counts of shortened texts
    loss_keys, data_stats = LOSS_KEYS, DATA_STATS

    def build_model(self, model_cfg) -> nn.Module:
        return GPTFace(model_cfg)

    def kinds(self, cfg: RunConfig) -> tuple[str, ...]:
        return RECORD_KINDS[cfg.data.gptface_records]

    def dataset(self, spec: StreamSpec, cfg: RunConfig, accum: int) -> ShardBatches:
        return GPTFaceStream(spec, cfg, accum)

    def forward(self, model, batch, device):
        b = batch.to(device, non_blocking=True)
        out = gptface_loss(model, b)
        stats = torch.tensor([batch.stats[k] for k in self.data_stats], dtype=torch.float64)
        sums = {"milm": torch.stack([out.stats[k] for k in self.loss_keys]), "tokens": (~b.pad).sum(),
                "sequences": b.ids.shape[0], "data": stats}
        return out.loss, sums

    def flops(self, cfg: RunConfig, batch) -> float:
        return mfu.batch_flops(cfg.model, (~batch.pad).sum(1), batch.index.numel())

    def means(self, sums: dict[str, list[float]], prefix: str) -> dict:
        """MILM (pooled and per modality), ITM loss and accuracy; `loss` is MILM + ITM, as trained."""
        s = dict(zip(self.loss_keys, sums["milm"]))
        m = summarize(s)
        masked = s["image_masked"] + s["text_masked"]
        milm = (s["image_loss_sum"] + s["text_loss_sum"]) / masked if masked else None
        loss = None if milm is None or m["itm_loss"] is None else milm + m["itm_loss"]
        return {f"{prefix}loss": loss, f"{prefix}loss/milm": milm, f"{prefix}loss/milm_image": m["milm_image"],
                f"{prefix}loss/milm_text": m["milm_text"], f"{prefix}loss/itm": m["itm_loss"],
                f"{prefix}itm_acc": m["itm_acc"], f"{prefix}masked/image": m["image_masked"],
                f"{prefix}masked/text": m["text_masked"]}

    def extras(self, cfg: RunConfig, step: int) -> dict:
        return {"mask_budget": image_budget(max(0, step - 1), cfg.masking)}   # the budget the last step trained with

    def summary(self, model) -> str:
        return gptface_summary(model)


FAMILIES = {f.name: f for f in (Talk2FaceFamily(), GPTFaceFamily())}


def family_of(cfg: RunConfig) -> Family:
    return FAMILIES[cfg.family]


def build_model(cfg: RunConfig) -> nn.Module:
    """The model of a run's config: its family's, of its model section's shape."""
    return family_of(cfg).build_model(cfg.model)
