"""Decoding speed: facecorpus's key/value cache against cache-less decoding (the original release's way), in one run.

    python benchmarks/generate.py                                           # CPU, tiny preset: the ratio
    python benchmarks/generate.py --device cuda --preset talk2face-base --batch 16

Both decode 256 image tokens (a to-image prompt) from the same model and seed with the same sampling
(top-k 70, modality mask):
- cached: `trainer.generate.decode`: one prefill of the prefix, then one token per step through a
  static KV cache, the LM head only at the last position, on the image rows. On CUDA (the default
  path there) each step is one CUDA-graph replay; `--no-graph` runs the same step eagerly. The
  output says which path ran, and on CUDA also times the eager step and checks that both paths
  draw the same tokens.
- the release's way (baseline): every step re-runs the whole sequence (prefix + everything generated
  so far) and computes logits over every position, as the released generation script did.
A third row decodes without the cache but with facecorpus's head (last position, image rows only),
separating the cache's share of the speed-up. Reports generated tokens/s, the ratios, and whether
greedy decoding gives the same tokens both ways.
`--baseline-steps N` times the baseline on its first N steps only: its steps grow longer as the
sequence grows, so a shorter baseline understates the ratio (conservative). The prefix is built by
the training sequence code for Talk2Face's FFHQ f16 grid. Needs no shards, Ray or GPU.
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import time

import torch

from facecorpus.codes import FFHQ_F16
from facecorpus.trainer import generate as gen
from facecorpus.trainer.config import model_preset
from facecorpus.trainer.model import Talk2Face
from facecorpus.trainer.sequences import SequenceBuilder

# [CLS] to image [SEP] <20 text ids> [SEP]
TEXT = "a smiling young woman with long wavy blond hair, arched eyebrows and rosy cheeks"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def release_decode(model, ids, seg, steps: int, s: gen.Sampling, g) -> torch.Tensor:
    """Cache-less: the whole sequence through the network, logits everywhere, every step."""
    allowed = gen.allowed_ids("image", gen.codebook_of(model)).to(ids.device)
    two = torch.full((ids.shape[0], 1), 2, dtype=torch.long, device=ids.device)
    out = []
    for _ in range(steps):
        nxt = gen.pick(model(ids, seg)[:, -1], allowed, s, g)
        out.append(nxt)
        ids, seg = torch.cat([ids, nxt[:, None]], 1), torch.cat([seg, two], 1)
    return torch.stack(out, 1)


def timed(fn, device: str) -> tuple[torch.Tensor, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default=None, help="tiny (CPU default) or talk2face-base (CUDA default)")
    ap.add_argument("--batch", type=int, default=None, help="sequences decoded together (default 1 on CPU, 16 on CUDA)")
    ap.add_argument("--steps", type=int, default=256, help="image tokens per sequence")
    ap.add_argument("--baseline-steps", type=int, default=None, help="time the baseline on this many steps (default all)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default torch's)")
    ap.add_argument("--no-graph", action="store_true", help="no CUDA graph: run the cached step eagerly")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    return ap.parse_args()


def main() -> None:
    args = _args()
    cuda = args.device.startswith("cuda")
    preset = args.preset or ("talk2face-base" if cuda else "tiny")
    batch = args.batch or (16 if cuda else 1)
    base_steps = min(args.baseline_steps or args.steps, args.steps)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Talk2Face(model_preset(preset, FFHQ_F16)).eval().to(args.device)
    if args.dtype == "bf16":
        model = model.to(torch.bfloat16)
    builder = SequenceBuilder(grid=FFHQ_F16)
    ids = torch.tensor([gen.text_prefix(builder, TEXT)[0]] * batch, device=args.device)
    seg = torch.ones_like(ids)
    s = gen.Sampling(top_k=70)
    graph = gen.graph_ok(model) and not args.no_graph
    # Warm-up (kernels, allocator, and on CUDA the graph capture: kept on the model, reused below).
    gen.decode(model, ids, seg, 4, "image", s, graph=graph, seq_len=builder.seq_len)
    release_decode(model, ids, seg, 2, s, None)
    graph = graph and "_graph_failed" not in model.__dict__    # a failed capture warned and fell back
    path = ("CUDA graph (static KV cache, one replay per token)" if graph else
            f"eager static step (no CUDA graph: {'--no-graph' if args.no_graph else model.__dict__.get('_graph_failed', 'device ' + args.device)})")
    print(f"decode path: {path}", flush=True)
    cached, t_cache = timed(lambda: gen.decode(model, ids, seg, args.steps, "image", s,
                                               torch.Generator(args.device).manual_seed(1), graph=graph,
                                               seq_len=builder.seq_len), args.device)
    eager_row, same_paths = [], None
    if graph:   # the graph's share, and a check that replaying it draws exactly what the eager step draws
        eager, t_eager = timed(lambda: gen.decode(model, ids, seg, args.steps, "image", s,
                                                  torch.Generator(args.device).manual_seed(1), graph=False,
                                                  seq_len=builder.seq_len), args.device)
        same_paths = (eager == cached).float().mean().item()
        eager_row = [f"| facecorpus (KV cache, eager step, no CUDA graph) | {batch * args.steps / t_eager:,.1f} | {t_eager:.2f} |"]
    _, t_base = timed(lambda: release_decode(model, ids, seg, base_steps, s,
                                               torch.Generator(args.device).manual_seed(1)), args.device)
    _, t_nocache = timed(lambda: gen.decode(model, ids, seg, base_steps, "image", s,
                                            torch.Generator(args.device).manual_seed(1), use_cache=False), args.device)
    cache_tps, base_tps = batch * args.steps / t_cache, batch * base_steps / t_base
    nocache_tps = batch * base_steps / t_nocache
    # Same tokens? Greedy, so that both draw nothing random (the cached path samples over the 1,024
    # image rows only, the baseline over the masked full vocabulary: same distribution, other draws).
    n = min(16, args.steps)
    same = (gen.decode(model, ids, seg, n, "image", gen.GREEDY, graph=graph, seq_len=builder.seq_len)
            == release_decode(model, ids, seg, n, gen.GREEDY, None))
    same = same.float().mean().item()
    lines = [(f"- preset {preset}, batch {batch}, {args.steps} image tokens, {args.dtype}, device {args.device}, "
              f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}; baseline timed on {base_steps} steps"),
             f"- decode path: {path}",
             "", "| variant | generated tokens/s | seconds |", "|---|---|---|",
             f"| the release's way (no cache, all logits, every step) | {base_tps:,.1f} | {t_base:.2f} |",
             f"| facecorpus without its cache (head at the last position, image rows only) | {nocache_tps:,.1f} | {t_nocache:.2f} |",
             *eager_row,
             f"| facecorpus (KV cache{', CUDA graph' if graph else ''}) | {cache_tps:,.1f} | {t_cache:.2f} |", "",
             (f"- speed-up: **{cache_tps / base_tps:.1f}x** over the release's way (target on GPU: >= 10x); "
              f"the cache alone: {cache_tps / nocache_tps:.1f}x"),
             f"- same greedy tokens in both (first {n} steps): {100 * same:.1f}% of positions (fp32 should give 100%)"]
    if same_paths is not None:
        lines.append(f"- CUDA graph vs eager step, same seed, top-k 70: {100 * same_paths:.1f}% of positions equal (should be 100%)")
    _results.append(f"generate: KV-cache decoding vs cache-less, {preset} on {args.device}", lines,
                    record=not args.no_record)


if __name__ == "__main__":
    main()
