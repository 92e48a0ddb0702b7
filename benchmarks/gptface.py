"""GPTFace against Talk2Face in one run: training throughput and MFU, and inpainting with and without ITM guidance.

    python benchmarks/gptface.py                                   # CPU, tiny presets: ratios only
    python benchmarks/gptface.py --device cuda                     # gptface-base vs talk2face-base, bf16

Training: both families take optimizer steps through the trainer's own code (trainer/family.py:
the micro-step's forward and loss, backward, gradient clipping, AdamW fused on CUDA, bf16 autocast
on CUDA) on the same synthetic images (random codes on Talk2Face's FFHQ f16 grid) and captions
(random words, 16-64 WordPiece ids):
- talk2face: the four balanced tasks, built by the training sequence code (334 ids, prefix-LM mask);
- gptface, padded: GPTFaceBatcher batches as training makes them (322 ids at most, padding masked);
- gptface, unpadded: every caption 64 ids long, so no row is padded and attention runs without a
  mask, which lets SDPA take its fused (flash / memory-efficient) kernels on a GPU.
Reports non-pad tokens/s, sequences/s and MFU (useful FLOPs, trainer/mfu.py, over the device's dense
bf16 peak; `n/a` on CPUs). On a CPU the tiny presets stand in (the ratios, not the figures, carry).
Inpainting: a 25% box (the middle 8 x 8 of 16 x 16 codes) redrawn, k = 8 codes per iteration, with
no text (unguided) and with a text (ITM-guided: a gradient step on the weights, a second forward
and a restore every iteration). Reports seconds per face and the guidance's cost. Needs no shards.
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import time

import numpy as np
import torch

from facecorpus import vocab
from facecorpus.codes import FFHQ_F16
from facecorpus.trainer import gptface_generate as gg
from facecorpus.trainer import mfu
from facecorpus.trainer.batches import STAT_KEYS
from facecorpus.trainer.config import RunConfig, apply_overrides
from facecorpus.trainer.family import family_of
from facecorpus.trainer.gptface_batch import GPTFaceBatcher
from facecorpus.trainer.gptface_data import layout
from facecorpus.trainer.sequences import SequenceBuilder, collate
from facecorpus.trainer.train import batch_width, build_optimizer

WORDS = ("a smiling young woman with long wavy blond hair arched eyebrows rosy cheeks and a small nose "
         "an old man wearing glasses grey beard receding hairline thin lips").split()


def captions(n: int, rng: np.random.Generator, full: bool) -> list[str]:
    """Random captions of 16 to 64 WordPiece ids; when `full`, longer than 64 one-id words, which the
    batcher cuts to exactly 64 (so no row is padded)."""
    words = [w for w in WORDS if len(vocab.encode_text(w)) == 1]
    return [" ".join(rng.choice(words, size=80 if full else int(rng.integers(16, 65)))) for _ in range(n)]


def talk2face_batch(cfg: RunConfig, images: np.ndarray, texts: list[str]) -> dict:
    builder = SequenceBuilder(cfg.data.seq_len, cfg.grid)
    n = len(texts)
    batch = collate([builder.build(r * 4 // n, images[r], builder.caption(texts[r])) for r in range(n)], batch_width(cfg))
    return {**batch, "stats": torch.zeros(len(STAT_KEYS))}


def gptface_batch(cfg: RunConfig, images: np.ndarray, texts: list[str], step: int):
    records = [{"key": f"bench/{i}", "image_id": f"bench/{i}", "codes": images[i], "text": texts[i]}
               for i in range(len(texts))]
    return GPTFaceBatcher(layout(cfg), cfg.masking, 0).build(records, step, 0)


def measure_training(cfg: RunConfig, batches: list, args, device: torch.device) -> dict:
    family = family_of(cfg)
    torch.manual_seed(0)
    model = family.build_model(cfg.model).to(device).train()
    opt = build_optimizer(model, cfg, device)
    if args.compile:
        for block in model.blocks:
            block.compile()
    cuda = device.type == "cuda"

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss, _ = family.forward(model, batch, device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in batches[:args.warmup]:
        step(b)
    sync(device)
    timed = batches[args.warmup:]
    t0 = time.perf_counter()
    for b in timed:
        step(b)
    sync(device)
    seconds = time.perf_counter() - t0
    flops = sum(family.flops(cfg, b) for b in timed)
    tokens = sum(tokens_of(b) for b in timed)
    value = mfu.mfu(flops, seconds, mfu.device_peak(device))
    return {"tokens_per_s": tokens / seconds, "seq_per_s": len(timed) * args.batch / seconds, "mfu": value}


def tokens_of(batch) -> int:
    return int((batch["seg"] != 0).sum()) if isinstance(batch, dict) else int((~batch.pad).sum())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_inpainting(cfg: RunConfig, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = family_of(cfg).build_model(cfg.model).to(device).eval()
    codes = torch.randint(0, cfg.grid.codebook_size, (args.faces, cfg.grid.count))
    cells = gg.mask_cells((64, 64, 192, 192), (256, 256), cfg.grid)       # 64 of 256 codes: 25%
    out = {}
    for name, text in (("unguided", None), ("ITM-guided", "a smiling young woman with long wavy blond hair")):
        def run():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                return gg.inpaint(model, layout(cfg), codes, cells, text, gg.Decoding(per_iteration=8),
                                  torch.Generator(device).manual_seed(0), batch_size=args.faces)
        run()   # warm-up
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        out[name] = (time.perf_counter() - t0) / args.faces
    return {"cells": int(cells.sum()), **out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 16 CPU, 96 CUDA); a multiple of 4")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 3 CPU, 20 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU, 5 CUDA)")
    p.add_argument("--faces", type=int, default=None, help="faces inpainted together (default 4 CPU, 16 CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile each block")
    p.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default torch's)")
    p.add_argument("--no-append", action="store_true", help="print without appending to RESULTS.md")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.batch = args.batch or (96 if cuda else 16)
    args.steps, args.warmup = args.steps or (20 if cuda else 3), args.warmup or (5 if cuda else 1)
    args.faces = args.faces or (16 if cuda else 4)
    if args.batch % 4:
        p.error("--batch must be a multiple of 4 (Talk2Face's four balanced tasks)")
    presets = ("talk2face-base", "gptface-base") if cuda else ("tiny", "gptface-tiny")
    cfgs = {name: apply_overrides(RunConfig.from_preset(name), [f"--data.micro_batch={args.batch}"]).sized(FFHQ_F16)
            for name in presets}
    rng = np.random.default_rng(0)
    n = args.warmup + args.steps
    images = [rng.integers(0, 1024, (args.batch, 16, 16)).astype(np.uint16) for _ in range(n)]
    texts, full = ([captions(args.batch, rng, f) for _ in range(n)] for f in (False, True))
    talk, gpt = cfgs[presets[0]], cfgs[presets[1]]
    unpadded = [gptface_batch(gpt, i, t, s) for s, (i, t) in enumerate(zip(images, full))]
    assert not any(b.padded for b in unpadded), "the unpadded variant has padding"
    variants = {f"{presets[0]} (prefix-LM mask)": (talk, [talk2face_batch(talk, i, t) for i, t in zip(images, texts)]),
                f"{presets[1]}, padded as trained": (gpt, [gptface_batch(gpt, i, t, s) for s, (i, t) in
                                                           enumerate(zip(images, texts))]),
                f"{presets[1]}, no padding (no mask)": (gpt, unpadded)}
    results = {}
    for name, (cfg, batches) in variants.items():
        if cuda:
            batches = [b.to(device) if not isinstance(b, dict) else {k: v.to(device) for k, v in b.items()}
                       for b in batches]
        results[name] = r = measure_training(cfg, batches, args, device)
        print(f"{name:>42}: {r['tokens_per_s']:,.0f} tok/s  {r['seq_per_s']:,.1f} seq/s  MFU {mfu.fmt_mfu(r['mfu'])}",
              flush=True)
    inpaint = measure_inpainting(gpt, args, device)
    base = results[next(iter(results))]
    lines = [
        (f"- presets {presets[0]} vs {presets[1]} (FFHQ f16 grid), batch {args.batch}, {args.steps} timed steps after "
         f"{args.warmup}, {'bf16 autocast' if cuda else 'fp32'}, compile {args.compile}, {torch.get_num_threads()} CPU "
         f"threads, torch {torch.__version__}" + ("" if cuda else "; CPU: tiny presets stand in, compare the ratios")),
        "", "| training step | non-pad tokens/s | sequences/s | MFU | vs Talk2Face (seq/s) |", "|---|---|---|---|---|",
        *(f"| {name} | {r['tokens_per_s']:,.0f} | {r['seq_per_s']:,.1f} | {mfu.fmt_mfu(r['mfu'])} | "
          f"{r['seq_per_s'] / base['seq_per_s']:.2f}x |" for name, r in results.items()),
        "",
        (f"- inpainting a 25% box ({inpaint['cells']} of {gpt.grid.count} codes, k = 8: "
         f"{-(-inpaint['cells'] // 8)} iterations), {args.faces} faces together: unguided "
         f"{1000 * inpaint['unguided']:.1f} ms per face, ITM-guided {1000 * inpaint['ITM-guided']:.1f} ms per face "
         f"(**{inpaint['ITM-guided'] / inpaint['unguided']:.2f}x**: a backward pass, a second forward and a restore "
         "per iteration)"),
    ]
    _results.append(f"gptface: {presets[1]} vs {presets[0]} training, and inpainting, on {args.device}", lines,
                    record=not args.no_append)


if __name__ == "__main__":
    main()
