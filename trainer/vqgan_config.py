"""`train-vqgan`'s typed configuration: the VQGAN's architecture (a preset), data, loss and train sections.

The architecture is a preset's taming config (facecorpus/data/vqgan-*.json: `tiny-f16`, `ffhq-f16`,
`gptface-f16`) and is recorded whole in every checkpoint. Each preset brings the training recipe
it is meant for (`RECIPES`); any key can still be overridden as `--section.key=value`
(trainer/settings.py). Which defaults are taming's and which are ours: docs/vqgan.md.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import ClassVar

from facecorpus import vqgan as vq
from facecorpus.codes import CodeGrid

from .settings import FRACTION, NON_NEGATIVE, POSITIVE, ConfigError, Rule, check, fail, key_lines, override

PRESETS = tuple(vq.PRESETS)
ABOVE_ZERO = Rule(low=0, open_low=True)   # a rate: any finite number above 0


@dataclass
class DataConfig:
    manifest: str = ""                  # the manifest folder (set by the MANIFEST argument)
    raw_root: str = ""                  # where the raw dataset folders are now, if moved since `convert`
    split: str = "train"                # the split whose unique images train the VQGAN
    eval_split: str = "val"             # held-out images for the log's reconstruction figures
    micro_batch: int = 4                # images per rank per micro-step
    crop: int = 0                       # train on random square crops of this side (a multiple of 16); 0 = whole images
    num_workers: int = 2                # DataLoader processes per rank that read and preprocess images

    RULES: ClassVar[dict] = {"micro_batch": POSITIVE, "num_workers": NON_NEGATIVE,
                             "crop": Rule(low=16, zero="whole images")}

    def __post_init__(self):
        check("data", self)
        if self.crop % 16:
            fail("data", "crop", self.crop, "a multiple of 16 (whole codes of an f16 VQGAN), or 0")


@dataclass
class LossConfig:
    codebook_weight: float = 1.0        # VectorQuantizer2's codebook + commitment term (taming)
    perceptual_weight: float = 1.0      # LPIPS, when loss.vgg and loss.lpips are given (taming)
    vgg: str = ""                       # torchvision's vgg16 weights file (vgg16-397923af.pth); "" = no perceptual term
    lpips: str = ""                     # LPIPS's linear layers (vgg.pth, v0.1); "" = no perceptual term
    disc_start: int = 30_001            # optimizer step the patch-GAN starts at (taming's FFHQ configs)
    disc_weight: float = 0.8            # scales taming's adaptive GAN weight (taming's FFHQ configs)
    disc_factor: float = 1.0            # the GAN terms' factor once started (taming)
    disc_layers: int = 3                # NLayerDiscriminator depth (taming)
    disc_ndf: int = 64                  # its first layer's filters (taming)

    RULES: ClassVar[dict] = {"codebook_weight": NON_NEGATIVE, "perceptual_weight": NON_NEGATIVE,
                             "disc_start": NON_NEGATIVE, "disc_weight": NON_NEGATIVE, "disc_factor": NON_NEGATIVE,
                             "disc_layers": POSITIVE, "disc_ndf": POSITIVE}

    def __post_init__(self):
        check("loss", self)
        if bool(self.vgg) != bool(self.lpips):
            fail("loss", "lpips" if self.vgg else "vgg", self.lpips or self.vgg,
                 "given together with loss.vgg and loss.lpips (LPIPS needs both files)")

    @property
    def perceptual(self) -> bool:
        return bool(self.vgg) and self.perceptual_weight > 0


@dataclass
class TrainConfig:
    batch_size: int = 8                 # images per optimizer step, all ranks; the rest is accumulation
    max_steps: int = 100_000
    lr: float = 3.6e-5                  # Adam, constant: taming's base rate 4.5e-6 x this batch of 8
    beta1: float = 0.5                  # taming's Adam betas for both networks
    beta2: float = 0.9
    precision: str = "auto"             # "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16", "fp32"
    seed: int = 0                       # initial weights, data order and code re-seeding
    log_interval: int = 10              # optimizer steps between JSONL log lines
    ckpt_interval: int = 1000           # optimizer steps between checkpoints (plus one at step 0 and at the end)
    keep_checkpoints: int = 3           # newest step-* folders kept (0 keeps all)
    eval_interval: int = 1000           # steps between held-out reconstruction figures (0 = never)
    eval_images: int = 32               # held-out images per rank in them (the same ones every time)
    reseed_interval: int = 1000         # steps between re-seeding codes unused since the last time (0 = never)
    tensorboard: bool = False           # also write TensorBoard scalars to RUN/tb
    stop_at_step: int = 0               # end cleanly after this step's checkpoint (0 = run to max_steps); resumable

    RULES: ClassVar[dict] = {"batch_size": POSITIVE, "max_steps": POSITIVE, "lr": ABOVE_ZERO, "beta1": FRACTION,
                             "beta2": FRACTION, "seed": NON_NEGATIVE, "log_interval": POSITIVE,
                             "ckpt_interval": POSITIVE, "keep_checkpoints": Rule(low=1, zero="keep all"),
                             "eval_interval": Rule(low=1, zero="never"), "eval_images": POSITIVE,
                             "reseed_interval": Rule(low=1, zero="never"),
                             "stop_at_step": Rule(low=1, zero="run to train.max_steps")}
    CHOICES: ClassVar[dict] = {"precision": ("auto", "bf16", "fp32")}

    def __post_init__(self):
        check("train", self)


SECTIONS = {"data": DataConfig, "loss": LossConfig, "train": TrainConfig}
# What each preset trains with where it differs from the defaults above (taming's FFHQ recipe at batch 8).
RECIPES = {
    # The bundled weights' recipe (docs/vqgan.md): 128-pixel crops (a quarter of a face's cost on CPU), no GAN
    # (it costs PSNR), a higher constant rate, dead codes re-seeded every 100 steps (a fresh codebook collapses).
    "tiny-f16": {"data": {"micro_batch": 8, "crop": 128},
                 "train": {"batch_size": 8, "lr": 1e-3, "ckpt_interval": 100, "reseed_interval": 100},
                 "loss": {"disc_start": 1_000_000}},
    "ffhq-f16": {},
    "gptface-f16": {},
}


@dataclass
class VQRunConfig:
    preset: str = "tiny-f16"
    vqgan: dict = field(default_factory=dict)   # the architecture: facecorpus.vqgan.read_config's dict
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_preset(cls, preset: str) -> VQRunConfig:
        if preset not in PRESETS:
            raise ConfigError(f"unknown VQGAN preset {preset!r}; choose one of {', '.join(PRESETS)}")
        config, _ = vq.resolve(preset, None)
        d = {"preset": preset, "vqgan": config, **{name: dataclasses.asdict(kind()) for name, kind in SECTIONS.items()}}
        for section, values in RECIPES[preset].items():
            d[section].update(values)
        return cls.from_dict(d)

    @property
    def grid(self) -> CodeGrid:
        return vq.code_grid(self.vqgan)

    def to_dict(self) -> dict:
        return {"preset": self.preset, "vqgan": self.vqgan, "grid": self.grid.as_dict(),
                **{name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}}

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> VQRunConfig:
        try:
            return cls(preset=d["preset"], vqgan=d["vqgan"], **{name: kind(**d[name]) for name, kind in SECTIONS.items()})
        except (KeyError, TypeError) as err:
            raise ConfigError(f"{where}: not a train-vqgan config ({err})") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def apply_overrides(cfg: VQRunConfig, args: list[str]) -> VQRunConfig:
    """Apply `--section.key=value` strings; returns a new, re-validated config."""
    return VQRunConfig.from_dict(override(cfg.to_dict(), SECTIONS, args, "train-vqgan"))


def describe() -> list[str]:
    """Every key with its default and its valid values, and each preset's recipe, for `--help`."""
    recipes = [f"{name}: " + (", ".join(f"{s}.{k}={v}" for s, kv in r.items() for k, v in kv.items()) or "the defaults")
               for name, r in RECIPES.items()]
    return key_lines(SECTIONS) + ["", "Preset recipes (over the defaults):", *recipes]
