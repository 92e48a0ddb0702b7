"""A stand-in for the TorchScript FID Inception (the real one is 100 MB and never downloaded), for the
FID tests of text2face and of VQGAN reconstructions."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


class FakeInception(torch.nn.Module):
    """Same call signature as the TorchScript FID Inception (uint8 in; pool features or class probabilities)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(48, 8)
        self.cls = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        f = self.proj(torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0, 4).flatten(1))
        return f if return_features else self.cls(f).softmax(-1)


def save_fake_inception(path: Path) -> Path:
    """The stand-in, scripted and saved where an Inception file would be given by path."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        torch.jit.script(FakeInception()).save(str(path))
    return path
