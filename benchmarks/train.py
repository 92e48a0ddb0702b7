"""Training throughput of facecorpus's Talk2Face step against a step done the original release's way, in one run.

    python benchmarks/train.py                                    # CPU, tiny preset: ratios only
    python benchmarks/train.py --device cuda --preset talk2face-base --batch 192

Both variants train the same model shape on the same synthetic batches, built by the training
sequence code for Talk2Face's FFHQ f16 grid (four balanced tasks, 256 image ids, 16-71 text ids,
padded to 336):
- facecorpus: bf16 autocast on CUDA, boolean prefix-LM mask through scaled_dot_product_attention,
  the LM head only where a target exists, fused AdamW, torch.compile of each block (--compile).
- the release's way (baseline): fp32, eager, an additive -10000 fp32 B x 1 x T x T mask built every forward,
  explicit softmax attention, the released LayerNorm, logits over every position, loss over every
  non-pad position, unfused AdamW.
Reports non-pad tokens/s, sequences/s, MFU (useful FLOPs over the device's dense bf16 peak from
trainer/mfu.py; `n/a` for CPUs and unknown GPUs), the speed-up, and how long the paper's 500k x 192
= 96M sequences would take. Needs no shards, Ray or GPU.
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import math
import time

import torch
import torch.nn.functional as F

from facecorpus.trainer import mfu
from facecorpus.trainer.config import RunConfig
from facecorpus.trainer.model import Talk2Face
from facecorpus.trainer.sequences import SequenceBuilder, collate
from facecorpus.trainer.train import batch_width

from facecorpus.codes import FFHQ_F16

PAPER_SEQUENCES = 500_000 * 192


def synthetic_batch(n: int, gen: torch.Generator, loss_on: str, cfg: RunConfig) -> dict:
    """`n` sequences, a quarter per task, in the training layout (CLS prompt SEP prefix SEP target SEP),
    with random text ids (16 up to the text budget) and random codes of the config's grid."""
    builder, out = SequenceBuilder(cfg.data.seq_len, cfg.grid), []
    for r in range(n):
        text = torch.randint(1000, 30000, (int(torch.randint(16, builder.budget + 1, (1,), generator=gen)),), generator=gen)
        codes = torch.randint(0, cfg.grid.codebook_size, (cfg.grid.count,), generator=gen)
        out.append(builder.build(r * 4 // n, codes.numpy(), text.tolist()))
    return collate(out, batch_width(cfg), loss_on)


def release_forward(model: Talk2Face, ids, seg):
    """The release's forward: additive fp32 mask rebuilt every call, explicit attention, all logits."""
    B, T = ids.shape
    pos = torch.arange(T, device=ids.device)
    allowed = (seg[:, None, :] == 1) | ((seg[:, None, :] == 2) & (pos[None, :] <= pos[:, None])[None])
    mask = (1.0 - allowed[:, None].float()) * -10000.0
    x = model.embed(ids, seg, pos[None].expand(B, T))
    for blk in model.blocks:
        h = blk.ln1(x)
        a = blk.attn
        q, k, v = (lin(h).view(B, T, a.n_head, -1).transpose(1, 2) for lin in (a.q, a.k, a.v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask
        probs = F.dropout(scores.softmax(-1), a.dropout, model.training)
        x = x + blk.drop(a.o((probs @ v).transpose(1, 2).reshape(B, T, -1)))
        x = x + blk.drop(blk.ff(blk.ln2(x)))
    return model.lm_head(model.ln_f(x))


def make_step(model, opt, variant: str, amp: bool, micro: int):
    def step(batch):
        n = batch["ids"].shape[0]
        for s in range(0, n, micro):
            ids, seg, tgt = (batch[k][s:s + micro] for k in ("ids", "seg", "targets"))
            if variant == "ours":
                index = batch["target_index"] if micro == n else None   # precomputed by collate for the full batch
                with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=amp):
                    losses = model(ids, seg, targets=tgt, target_index=index)
                loss = losses.sum() / losses.numel()
            else:
                logits = release_forward(model, ids, seg)
                loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), tgt.view(-1), ignore_index=-1)
            (loss * micro / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def measure(variant: str, args, device: torch.device, batches: list[dict]) -> dict:
    cfg = RunConfig.from_preset(args.preset).sized(FFHQ_F16).model
    if variant == "baseline":
        cfg.layernorm = "released"
    torch.manual_seed(0)
    model = Talk2Face(cfg).to(device).train()
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.999), fused=cuda and variant == "ours")
    if variant == "ours" and args.compile:
        for blk in model.blocks:
            blk.compile()
    micro = args.batch if variant == "ours" else (args.baseline_micro or args.batch)
    step = make_step(model, opt, variant, cuda, micro)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for b in batches[:args.warmup]:
        step(b)
    sync()
    timed = batches[args.warmup:]
    t0 = time.perf_counter()
    for b in timed:
        step(b)
    sync()
    seconds = time.perf_counter() - t0
    # Useful work is the same for both: non-pad tokens, and the head on segment-2 targets.
    flops = sum(mfu.batch_flops(cfg, (b["seg"] != 0).sum(1), int((b["targets_t"] >= 0).sum())) for b in timed)  # after timing
    tokens = sum(int((b["seg"] != 0).sum()) for b in timed)
    seqs = len(timed) * args.batch
    value = mfu.mfu(flops, seconds, mfu.device_peak(device))
    mem = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if cuda else "-"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    del model, opt
    return {"tokens_per_s": tokens / seconds, "seq_per_s": seqs / seconds, "mfu": value, "peak_gib": mem}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--preset", default=None, help="model preset (default: tiny on CPU, talk2face-base on CUDA)")
    p.add_argument("--batch", type=int, default=None, help="sequences per optimizer step (default 16 CPU, 192 CUDA)")
    p.add_argument("--baseline-micro", type=int, default=None,
                   help="baseline micro-batch (its fp32 logits and masks need accumulation; default 48 on CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 3 CPU, 20 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU, 5 CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile each block of facecorpus's model (default on for CUDA)")
    p.add_argument("--no-append", action="store_true", help="print without appending to RESULTS.md")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.preset = args.preset or ("talk2face-base" if cuda else "tiny")
    args.batch = args.batch or (192 if cuda else 16)
    args.baseline_micro = args.baseline_micro or (48 if cuda else None)
    args.steps = args.steps or (20 if cuda else 3)
    args.warmup = args.warmup or (5 if cuda else 1)
    args.compile = cuda if args.compile is None else args.compile
    if args.batch % 4:
        p.error("--batch must be a multiple of 4 (four balanced tasks)")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False   # the release ran true fp32; keep the baseline honest

    gen = torch.Generator().manual_seed(0)
    run_cfg = RunConfig.from_preset(args.preset).sized(FFHQ_F16)
    batches = []
    for _ in range(args.warmup + args.steps):
        ours = synthetic_batch(args.batch, gen, "target", run_cfg)
        release = dict(ours, targets=torch.where(F.pad(ours["seg"][:, 1:], (0, 1)) != 0, F.pad(ours["ids"][:, 1:], (0, 1)), -1))
        batches.append((ours, release))
    results = {}
    for variant in ("baseline", "ours"):
        data = [{**(o if variant == "ours" else a), "targets_t": o["targets"]} for o, a in batches]
        data = [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in data]
        results[variant] = measure(variant, args, device, data)
        r = results[variant]
        print(f"{variant:>9}: {r['tokens_per_s']:,.0f} tok/s  {r['seq_per_s']:,.1f} seq/s  MFU {mfu.fmt_mfu(r['mfu'])}")

    ours, base = results["ours"], results["baseline"]
    days = PAPER_SEQUENCES / ours["seq_per_s"] / 86400
    lines = [
        (f"- preset {args.preset}, batch {args.batch}, {args.steps} timed steps after {args.warmup}, "
         f"compile {args.compile}, baseline micro-batch {args.baseline_micro or args.batch}"),
        "",
        "| variant | non-pad tokens/s | sequences/s | MFU | peak GiB |",
        "|---|---|---|---|---|",
        *(f"| {name} | {r['tokens_per_s']:,.0f} | {r['seq_per_s']:,.1f} | {mfu.fmt_mfu(r['mfu'])} | {r['peak_gib']} |"
          for name, r in (("the release's way (fp32, eager, additive mask)", base), ("facecorpus", ours))),
        "",
        f"- speed-up: **{ours['tokens_per_s'] / base['tokens_per_s']:.2f}x** the baseline",
        (f"- the paper's 500k x 192 = 96M sequences at this rate: {days:.2f} days on this one device "
         f"(paper: about 15 days on 8 P40s)"),
    ]
    _results.append(f"train: Talk2Face step, {args.preset} on {args.device}", lines, record=not args.no_append)


if __name__ == "__main__":
    main()
