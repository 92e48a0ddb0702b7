"""Training throughput of facecorpus's Talk2Face step, its attention and packing variants, against a step
done the original release's way, in one run; and the real training loop's MFU and data wait.

    python benchmarks/train.py                                    # CPU, tiny preset: ratios only
    python benchmarks/train.py --device cuda --preset talk2face-base --batch 192 --variants sdpa,flex,flex-packed --loop flex

Every variant trains the same model shape on the same synthetic batches, built by the training sequence
code for Talk2Face's FFHQ f16 grid (four balanced tasks, 256 image ids, 16-71 text ids, padded to 336):
- sdpa: facecorpus as it trains by default: bf16 autocast on CUDA, the boolean prefix-LM mask through
  scaled_dot_product_attention, the LM head only where a target exists, fused AdamW, torch.compile of
  each block (--compile; --compile-scope model compiles the whole model instead);
- flex: the same with model.attention=flex (FlexAttention, the prefix-LM block mask, compiled kernel;
  no attention-probability dropout, which FlexAttention lacks);
- flex-packed: flex on the same sequences packed first fit into rows of --pack-width ids (document
  mask, positions per sequence; trainer/packing.py);
- release (baseline): fp32, eager, an additive -10000 fp32 B x 1 x T x T mask built every forward,
  explicit softmax attention, the released LayerNorm, logits over every position, loss over every
  non-pad position, unfused AdamW.
Reports non-pad tokens/s, sequences/s, MFU (useful FLOPs of the unpacked sequences over the device's
dense bf16 peak from trainer/mfu.py; `n/a` for CPUs and unknown GPUs), the speed-up over the first
variant, and how long the paper's 500k x 192 = 96M sequences would take. `--loop VARIANT` also runs
the real training loop (trainer/train.py, its DataLoader on generated shards) for --loop-steps steps
and reports the MFU and data-wait share it logs. Needs no Ray; no GPU for the CPU figures.
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from facecorpus.codes import FFHQ_F16
from facecorpus.trainer import mfu
from facecorpus.trainer.config import RunConfig, apply_overrides
from facecorpus.trainer.model import Talk2Face
from facecorpus.trainer.packing import pack
from facecorpus.trainer.sequences import SequenceBuilder, collate
from facecorpus.trainer.train import batch_width

PAPER_SEQUENCES = 500_000 * 192
VARIANTS = ("release", "sdpa", "flex", "flex-packed")


def synthetic_instances(n: int, gen: torch.Generator, cfg: RunConfig) -> list:
    """`n` sequences, a quarter per task, in the training layout (CLS prompt SEP prefix SEP target SEP),
    with random text ids (16 up to the text budget) and random codes of the config's grid."""
    builder, out = SequenceBuilder(cfg.data.seq_len, cfg.grid), []
    for r in range(n):
        text = torch.randint(1000, 30000, (int(torch.randint(16, builder.budget + 1, (1,), generator=gen)),), generator=gen)
        codes = torch.randint(0, cfg.grid.codebook_size, (cfg.grid.count,), generator=gen)
        out.append(builder.build(r * 4 // n, codes.numpy(), text.tolist()))
    return out


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
            if variant == "release":
                logits = release_forward(model, ids, seg)
                loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), tgt.view(-1), ignore_index=-1)
            else:
                index = batch["target_index"] if micro == n else None   # precomputed by collate for the full batch
                extra = {k: batch[k][s:s + micro] for k in ("pos", "doc") if k in batch}
                with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=amp):
                    losses = model(ids, seg, targets=tgt, target_index=index, **extra)
                loss = losses.sum() / losses.numel()
            (loss * micro / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def build(variant: str, args, device: torch.device):
    cfg = RunConfig.from_preset(args.preset).sized(FFHQ_F16).model
    cfg.layernorm = "released" if variant == "release" else cfg.layernorm
    cfg.attention = "flex" if variant.startswith("flex") else "sdpa"
    torch.manual_seed(0)
    model = Talk2Face(cfg).to(device).train()
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.999), fused=cuda and variant != "release")
    if variant != "release" and args.compile:
        for target in ([model] if args.compile_scope == "model" else model.blocks):
            target.compile()
    return cfg, model, opt


def measure(variant: str, args, device: torch.device, batches: list[dict], flops: list[float]) -> dict:
    cfg, model, opt = build(variant, args, device)
    cuda = device.type == "cuda"
    rows = batches[0]["ids"].shape[0]
    micro = (args.baseline_micro or rows) if variant == "release" else rows
    step = make_step(model, opt, variant, cuda, micro)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    for b in batches[:args.warmup]:
        step(b)
    sync()
    warm = time.perf_counter() - t0
    timed = batches[args.warmup:]
    t0 = time.perf_counter()
    for b in timed:
        step(b)
    sync()
    seconds = time.perf_counter() - t0
    _results.profile(args.profile, f"{variant}, {args.preset}, batch {args.batch}: 2 steps",
                     lambda: [step(b) for b in timed[:2]], sync)
    # Useful work is the same for every variant: the unpacked sequences' non-pad tokens and targets.
    value = mfu.mfu(sum(flops[args.warmup:]), seconds, mfu.device_peak(device))
    tokens = sum(int((b["seg"] != 0).sum()) for b in timed)
    mem = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if cuda else "-"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    del model, opt
    return {"tokens_per_s": tokens / seconds, "seq_per_s": len(timed) * args.batch / seconds, "mfu": value,
            "peak_gib": mem, "rows": rows, "warmup_s": warm}


def make_batches(args, device: torch.device) -> tuple[dict[str, list[dict]], list[float]]:
    """Each variant's batches of the same sequences (padded rows, the release's all-position targets,
    packed rows), and each batch's useful FLOPs."""
    gen = torch.Generator().manual_seed(0)
    run_cfg = RunConfig.from_preset(args.preset).sized(FFHQ_F16)
    out: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    flops = []
    packed_rows = 0
    sets = [synthetic_instances(args.batch, gen, run_cfg) for _ in range(args.warmup + args.steps)]
    for insts in sets:   # one row count for every packed batch: a compiled step sees one shape
        packed_rows = max(packed_rows, len(pack(insts, args.pack_width)["ids"]))
    for insts in sets:
        ours = collate(insts, batch_width(run_cfg), "target")
        release = dict(ours, targets=collate(insts, batch_width(run_cfg), "all")["targets"])
        flops.append(mfu.batch_flops(run_cfg.model, (ours["seg"] != 0).sum(1), ours["target_index"].numel()))
        for v, b in (("release", release), ("sdpa", ours), ("flex", ours),
                     ("flex-packed", pack(insts, args.pack_width, "target", packed_rows))):
            out[v].append({k: t.to(device, non_blocking=True) for k, t in b.items()})
    return out, flops


def loop(args, variant: str) -> dict:
    """The real training loop (trainer/train.py) on generated shards: what its log lines say."""
    from facecorpus.trainer.train import train
    from shardkit import stream_shards

    every = max(1, args.loop_steps // 3)   # three log windows: the first holds compilation
    with tempfile.TemporaryDirectory() as tmp:
        shards = stream_shards(Path(tmp) / "shards", {"caption": args.loop_samples, "attributes": args.loop_samples},
                               max(10, args.loop_samples // 4))
        overrides = [f"--data.shards={shards}", f"--data.micro_batch={args.batch}", f"--train.batch_size={args.batch}",
                     f"--train.max_steps={args.loop_steps}", f"--train.log_interval={every}", "--train.eval_interval=0",
                     f"--train.compile={str(args.compile).lower()}", "--train.keep_checkpoints=1",
                     f"--model.attention={'flex' if variant.startswith('flex') else 'sdpa'}"]
        cfg = apply_overrides(RunConfig.from_preset(args.preset), overrides)
        train(cfg, Path(tmp) / "run")
        logged = [json.loads(line) for line in (Path(tmp) / "run" / "train.jsonl").read_text().splitlines()]
    logs = [r for r in logged if "mfu" in r]
    windows = logs[1:] or logs   # the first window holds compilation and the loader's start
    seconds = sum(r["seconds"] for r in windows)
    mean = lambda key: sum(r[key] * r["seconds"] for r in windows) / seconds  # noqa: E731
    value = None if any(r["mfu"] == "n/a" for r in windows) else mean("mfu")
    skipped = f" after the first {every}" if len(logs) > 1 else ""
    return {"mfu": value, "data_wait": mean("data_wait"), "seq_per_s": mean("seq_per_s"),
            "steps": f"{every * len(windows)} logged steps{skipped}"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--preset", default=None, help="model preset (default: tiny on CPU, talk2face-base on CUDA)")
    p.add_argument("--batch", type=int, default=None, help="sequences per optimizer step (default 16 CPU, 192 CUDA)")
    p.add_argument("--variants", default="release,sdpa", help=f"comma-separated, from {', '.join(VARIANTS)}; "
                   "ratios are to the first")
    p.add_argument("--pack-width", type=int, default=4096,
                   help="ids per packed row (flex-packed; 4,096 leaves 4.6% padding where 2,048 leaves 10.6%)")
    p.add_argument("--baseline-micro", type=int, default=None,
                   help="release's micro-batch (its fp32 logits and masks need accumulation; default 48 on CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 3 CPU, 20 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU, 5 CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile facecorpus's model (default on for CUDA)")
    p.add_argument("--compile-scope", choices=("blocks", "model"), default="blocks",
                   help="compile each block (as train.compile does) or the whole model")
    p.add_argument("--loop", choices=VARIANTS[1:], default=None, help="also run the real training loop with this variant")
    p.add_argument("--loop-steps", type=int, default=30, help="optimizer steps of the --loop run (three log lines)")
    p.add_argument("--loop-samples", type=int, default=2000, help="samples of each kind in the --loop run's shards")
    p.add_argument("--profile", help="append each variant's operator profile (2 steps) to this file")
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
    variants = args.variants.split(",")
    if args.batch % 4 or not set(variants) <= set(VARIANTS):
        p.error(f"--batch must be a multiple of 4 (four balanced tasks); --variants from {', '.join(VARIANTS)}")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False   # the release ran true fp32; keep the baseline honest

    batches, flops = make_batches(args, device)
    results = {}
    for variant in variants:
        results[variant] = r = measure(variant, args, device, batches[variant], flops)
        print(f"{variant:>12}: {r['tokens_per_s']:,.0f} tok/s  {r['seq_per_s']:,.1f} seq/s  MFU {mfu.fmt_mfu(r['mfu'])}  "
              f"({r['warmup_s']:.0f} s warm-up)")
    looped = loop(args, args.loop) if args.loop else None
    _results.append(f"train: Talk2Face step, {args.preset} on {args.device}", lines(args, variants, results, looped),
                    record=not args.no_append)


def lines(args, variants: list[str], results: dict, looped: dict | None) -> list[str]:
    first = results[variants[0]]
    best = max(results.values(), key=lambda r: r["seq_per_s"])
    out = [
        (f"- preset {args.preset}, batch {args.batch}, {args.steps} timed steps after {args.warmup}, compile "
         f"{args.compile} ({args.compile_scope}), release micro-batch {args.baseline_micro or args.batch}, packed rows "
         f"of {args.pack_width} ids, torch {torch.__version__}"),
        "",
        "| variant | rows per step | non-pad tokens/s | sequences/s | MFU | peak GiB | vs first |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(f"| {v} | {r['rows']} | {r['tokens_per_s']:,.0f} | {r['seq_per_s']:,.1f} | {mfu.fmt_mfu(r['mfu'])} | "
          f"{r['peak_gib']} | {r['seq_per_s'] / first['seq_per_s']:.2f}x |" for v, r in results.items()),
        "",
        (f"- the paper's 500k x 192 = 96M sequences at the best rate: {PAPER_SEQUENCES / best['seq_per_s'] / 3600:.1f} "
         f"hours on this one device (target on one H200: < 12 h; paper: about 15 days on 8 P40s)"),
    ]
    if looped:
        out.append(f"- the real training loop (trainer/train.py, {args.loop}, DataLoader on generated shards, "
                   f"{looped['steps']}): MFU {mfu.fmt_mfu(looped['mfu'])}, "
                   f"{looped['seq_per_s']:,.1f} sequences/s, data wait **{100 * looped['data_wait']:.2f}%** of the "
                   f"step time (target < 1%)")
    return out


if __name__ == "__main__":
    main()
