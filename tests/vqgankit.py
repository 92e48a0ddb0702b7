"""What the VQGAN tests share: seeded LPIPS weight files in the real files' key layouts, and a small
converted CelebA sample manifest."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from rich.console import Console

from facecorpus.converters import pipeline
from facecorpus.converters.samples import celeba
from facecorpus.trainer import lpips as lp


def lpips_files(folder: Path, seed: int = 0) -> tuple[Path, Path, torch.nn.Sequential]:
    """(torchvision-style vgg16 file, LPIPS linear-layer file, the VGG16 stack they hold), seeded."""
    torch.manual_seed(seed)
    features = lp.vgg16_features()
    vgg = {f"features.{k}": v for k, v in features.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)   # torchvision's file holds the classifier too
    torch.save(vgg, folder / "vgg16.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(lp.CHANNELS)},
               folder / "vgg.pth")
    return folder / "vgg16.pth", folder / "vgg.pth", features


def celeba_manifest(root: Path, n: int = 24, seed: int = 0) -> Path:
    """`root/manifest`: a CelebA sample of `n` drawn faces (raw tree under `root/raw`), converted."""
    celeba.write(root / "raw" / "celeba", seed=seed, n=n)
    pipeline.convert({"celeba": root / "raw" / "celeba"}, root / "manifest", raw_root=root / "raw",
                     console=Console(file=io.StringIO()))
    return root / "manifest"
