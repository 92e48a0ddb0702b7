"""LPIPS (Zhang et al., 2018), the VGG variant taming trains its VQGANs with, in plain torch, loaded from paths.

torchvision cannot be installed beside the CPU torch wheel (docs/dependencies.md), so VGG16's
feature stack is written out here exactly as torchvision builds it (`features.0` ... `features.29`,
the same layers and state-dict key names) and its weights are read from torchvision's own `vgg16`
checkpoint file (`vgg16-397923af.pth`); the five linear layers come from LPIPS's `vgg.pth` (v0.1,
keys `lin0.model.1.weight` ... `lin4.model.1.weight`; the file taming fetches as `vgg_lpips`).
Both are read with `torch.load(weights_only=True)` from paths the user gives; nothing downloads.

The forward pass is taming.modules.losses.lpips.LPIPS.forward: scale both images by LPIPS's fixed
shift and scale, take VGG16's relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, normalize each over
channels, square the differences, weigh the channels with the linear layer, average over space and
sum the five layers -> one distance per image, shape (B, 1, 1, 1) (tests/test_vqgan_losses.py
compares it with taming's own code).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

# torchvision's VGG16 "D" configuration: channel counts, "M" for a max-pool.
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
SLICE_ENDS = (4, 9, 16, 23, 30)          # features[:4] ends at relu1_2, [:9] at relu2_2, ... [:30] at relu5_3
CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)          # LPIPS's ScalingLayer
SCALE = (0.458, 0.448, 0.450)
OTHER_VGG_KEYS = "classifier."            # the rest of torchvision's vgg16 file: not needed for features


class LPIPSError(ValueError):
    """A weights file that does not make LPIPS; the message names the file and the problem."""


def vgg16_features() -> nn.Sequential:
    """torchvision's `vgg16().features` up to relu5_3 (its indices, so its state-dict keys)."""
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


class _Linear(nn.Module):
    """LPIPS's NetLinLayer: dropout then a 1x1 convolution to one channel, without bias (key `model.1.weight`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """Perceptual distance of two image batches in [-1, 1]; frozen, always in eval mode."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None])
        self.features = vgg16_features()
        for k, channels in enumerate(CHANNELS):
            setattr(self, f"lin{k}", _Linear(channels))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)   # a loss network: its dropout never runs

    def _layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for end in SLICE_ENDS:
            x = self.features[start:end](x)
            out.append(x)
            start = end
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa = self._layers((a - self.shift) / self.scale)
        fb = self._layers((b - self.shift) / self.scale)
        total = 0
        for k, (x, y) in enumerate(zip(fa, fb)):
            diff = (_unit(x) - _unit(y)) ** 2
            total = total + getattr(self, f"lin{k}").model(diff).mean([2, 3], keepdim=True)
        return total

    @classmethod
    def from_files(cls, vgg: Path, linear: Path) -> LPIPS:
        """LPIPS with torchvision's vgg16 weights file and LPIPS's linear-layer file, both checked strictly."""
        model = cls()
        feats = _tensors(vgg)
        extra = sorted(k for k in feats if not k.startswith(("features.", OTHER_VGG_KEYS)))
        _fit(model.features, {k[len("features."):]: v for k, v in feats.items() if k.startswith("features.")},
             vgg, extra, "torchvision's vgg16 weights (vgg16-397923af.pth)")
        lins = _tensors(linear)
        want = {f"lin{k}.model.1.weight" for k in range(len(CHANNELS))}
        # A whole LPIPS module's state dict carries its (constant) scaling layer and VGG copy too.
        extra = sorted(k for k in lins if k not in want and not k.startswith(("scaling_layer.", "net.")))
        own = nn.ModuleDict({f"lin{k}": getattr(model, f"lin{k}") for k in range(len(CHANNELS))})
        _fit(own, {k: v for k, v in lins.items() if k in want}, linear, extra, "LPIPS's linear layers (vgg.pth, v0.1)")
        return model


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each position's channel vector scaled to unit length (LPIPS's normalize_tensor)."""
    return x / (torch.sqrt((x ** 2).sum(dim=1, keepdim=True)) + eps)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise LPIPSError(f"LPIPS weights file {path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise LPIPSError(f"{path}: not a torch state dict of tensors ({str(err).splitlines()[0][:200]})") from None
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise LPIPSError(f"{path}: expected a state dict of tensors")
    return sd


def _fit(module: nn.Module, sd: dict, path: Path, extra: list[str], what: str) -> None:
    want = module.state_dict()
    missing = sorted(set(want) - set(sd))
    shapes = sorted(f"{k}: file {tuple(sd[k].shape)} vs {tuple(want[k].shape)}"
                    for k in set(want) & set(sd) if sd[k].shape != want[k].shape)
    problems = [f"{len(items)} {name} (e.g. {items[:3]})" for name, items in
                (("missing keys", missing), ("unexpected keys", extra), ("wrong shapes", shapes)) if items]
    if problems:
        raise LPIPSError(f"{path} is not {what}: " + "; ".join(problems))
    module.load_state_dict(sd, strict=True)
