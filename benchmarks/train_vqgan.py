"""Training throughput of a `train-vqgan` step against a bare forward/backward of the same modules, in one run.

    python benchmarks/train_vqgan.py                                   # CPU, tiny-f16: the ratio
    python benchmarks/train_vqgan.py --device cuda --preset ffhq-f16 --batch 16

Both variants train the same VQGAN (a preset's architecture, seeded) on the same synthetic uint8
batches held in memory (no image reading: `tokenize`'s benchmark measures that):
- train-vqgan's step (trainer/vqgan_train.py `train_step`): uint8 -> [-1, 1], the training pass with the
  code search in fp32, L1 + codebook loss, code counts for the log, Adam; and again with the
  patch-GAN started (its pass inside the autoencoder's loss, the adaptive weight's two gradients, the
  discriminator's hinge step and its Adam). bf16 autocast on CUDA.
- the baseline: the same modules' bare forward, L1 + codebook loss, backward and Adam step, fp32.
The variants take turns step by step (a shared machine slows them alike) and each is timed by its
median step. Reports images/s of each and their ratio (the cost of what train-vqgan adds, and of bf16 on CUDA).
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import itertools
import os
import statistics
import time

import torch

from facecorpus import vqgan as vq
from facecorpus.trainer import vqgan_train
from facecorpus.trainer.train import autocast_dtype
from facecorpus.trainer.vqgan_codebook import CodebookWatch
from facecorpus.trainer.vqgan_config import VQRunConfig, apply_overrides


def batches(n: int, size: int, count: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8) for _ in range(count)]


def ours(cfg: VQRunConfig, device: torch.device, gan: bool):
    """train-vqgan's own step as a function of a uint8 batch (the patch-GAN on from the first step with `gan`)."""
    nets = vqgan_train.build(cfg, device)
    watch = CodebookWatch(cfg.grid.codebook_size, device)
    amp = autocast_dtype(cfg, device)
    step = itertools.count(cfg.loss.disc_start if gan else 0)

    def run(pixels: torch.Tensor) -> None:
        vqgan_train.train_step(cfg, nets, nets[:2], iter([pixels]), None, watch, vqgan_train.Sums(device), device,
                               amp, next(step), 1, 1)
    return run


def bare(cfg: VQRunConfig, device: torch.device):
    """The same VQGAN's plain forward, L1 + codebook loss, backward and Adam step, fp32."""
    torch.manual_seed(cfg.train.seed)
    model = vq.VQGAN(cfg.vqgan).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2))

    def run(pixels: torch.Tensor) -> None:
        x = pixels.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        xrec, q, _, _ = model(x)
        ((x - xrec).abs().mean() + q).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return run


def timed(variants: list, data: list[torch.Tensor], device: torch.device) -> list[float]:
    """Median seconds per step of each variant, the variants taking turns step by step so that a
    machine shared with other work slows them alike; the first two rounds are not counted
    (allocation, kernel selection)."""
    times = [[] for _ in variants]
    for pixels in data:
        for run, out in zip(variants, times):
            _sync(device)
            t0 = time.perf_counter()
            run(pixels)
            _sync(device)
            out.append(time.perf_counter() - t0)
    return [statistics.median(t[2:]) for t in times]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny-f16", choices=list(vq.PRESETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4, help="images per step")
    ap.add_argument("--steps", type=int, default=6, help="steps per variant (the first two are not timed)")
    ap.add_argument("--crop", type=int, default=0, help="image side (default: the VQGAN's resolution)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = apply_overrides(VQRunConfig.from_preset(args.preset), [f"--data.micro_batch={args.batch}",
                                                                   f"--train.batch_size={args.batch}"])
    size = args.crop or cfg.grid.resolution
    data = batches(args.batch, size, max(3, args.steps))
    base, plain, gan = timed([bare(cfg, device), ours(cfg, device, False), ours(cfg, device, True)], data, device)
    rows = [("bare forward/backward + Adam (fp32)", base), ("train-vqgan step, before the GAN starts", plain),
            ("train-vqgan step with the patch-GAN", gan)]
    lines = [f"- preset {args.preset} ({cfg.grid.as_dict()}), device {device}, {args.batch} images of {size}x{size} "
             f"per step, {args.steps} steps of each variant taking turns (median of all but the first two), "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end "
             "(other work on the machine)", "", "| what | images/s | vs bare |", "|---|---:|---:|"]
    lines += [f"| {name} | {args.batch / s:.2f} | {base / s:.2f} |" for name, s in rows]
    lines += ["", f"- train-vqgan step / bare step time: **{plain / base:.2f}x** without the GAN, **{gan / base:.2f}x** "
                  "with it (the discriminator's passes and the adaptive weight's gradients)"]
    _results.append("train-vqgan: a training step vs a bare forward/backward of the same modules", lines,
                    record=not args.no_record)


if __name__ == "__main__":
    main()
