"""Codebook health while a VQGAN trains: usage and perplexity for the log, and dead codes re-seeded.

Usage is the fraction of the codebook that the window's codes (every position of every image since
the last log line, all ranks) used at least once; perplexity is exp of the entropy of their
distribution (the number of equally used codes that would give the same entropy; at most the
codebook size).

Re-seeding: every `train.reseed_interval` optimizer steps, the codes that no position of any rank
chose since the previous re-seed are dead. Each gets a distinct encoder output (the vector before
quantization) of rank 0's last micro-batch, picked by a generator seeded with (seed, step), so a
resumed run re-seeds identically; rank 0 broadcasts them, so all ranks keep one codebook. Their Adam
moments are zeroed: the old ones belong to the dead vector. A batch has side² x micro-batch outputs
(2,048 at 16x16 x 8); when more codes are dead than that, the rest wait for the next re-seed.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


class CodebookWatch:
    """Code counts on the device: one window per log line, one since the last re-seed."""

    def __init__(self, codebook_size: int, device: torch.device):
        self.window = torch.zeros(codebook_size, dtype=torch.float64, device=device)
        self.since_reseed = torch.zeros(codebook_size, dtype=torch.float64, device=device)

    def add(self, codes: torch.Tensor) -> None:
        counts = torch.bincount(codes.reshape(-1), minlength=self.window.numel()).double()
        self.window += counts
        self.since_reseed += counts

    def health(self) -> dict:
        """Usage and perplexity of the window over all ranks (a host sync); starts the next window."""
        health = usage_and_perplexity(summed(self.window))
        self.window.zero_()
        return health

    def reseed(self, embedding: torch.nn.Embedding, optimizer: torch.optim.Optimizer, z: torch.Tensor,
               seed: int, step: int) -> int:
        """Re-seed the codes unused since the last call from rank 0's encoder outputs `z` (B, D, h, w);
        returns how many were re-seeded. Collective."""
        dead = (summed(self.since_reseed) == 0).nonzero().flatten()
        self.since_reseed.zero_()
        vectors = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        dead = dead[: len(vectors)]
        if not len(dead):
            return 0
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        new = vectors[torch.randperm(len(vectors), generator=g)[: len(dead)].to(vectors.device)].to(embedding.weight)
        if dist.is_initialized():
            dist.broadcast(new, src=0)
        with torch.no_grad():
            embedding.weight[dead] = new
        for moment in optimizer.state.get(embedding.weight, {}).values():
            if isinstance(moment, torch.Tensor) and moment.shape == embedding.weight.shape:
                moment[dead] = 0
        return len(dead)

    def state_dict(self) -> dict:
        return {"window": self.window.cpu(), "since_reseed": self.since_reseed.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.window.copy_(state["window"])
        self.since_reseed.copy_(state["since_reseed"])


def usage_and_perplexity(counts: torch.Tensor) -> dict:
    """{"usage": share of codes counted at least once, "perplexity": exp(entropy)} of code counts."""
    total = float(counts.sum())
    if total == 0:
        return {"usage": 0.0, "perplexity": 0.0}
    p = counts[counts > 0] / total
    return {"usage": float((counts > 0).sum()) / counts.numel(), "perplexity": math.exp(float(-(p * p.log()).sum()))}


def summed(counts: torch.Tensor) -> torch.Tensor:
    """`counts` summed over ranks: a new tensor under DDP, `counts` itself when alone."""
    if dist.is_initialized():
        counts = counts.clone()
        dist.all_reduce(counts)
    return counts
