"""Tokenization speed: the whole pipeline against the bare encoder (several variants) and one-at-a-time encoding.

    .venv/bin/python benchmarks/tokenization.py                                  # CPU, tiny-f16
    python benchmarks/tokenization.py --device cuda --preset ffhq-f16 --images 20000 \\
        --bare eager,default,reduce-overhead,default+channels_last --compile reduce-overhead --engine local

In one run, on the same generated JPEG/PNG faces (tests/tokenkit.py; `--manifest DIR` keeps them for
the next run):
  bare      a bare `model.encode` loop over pre-decoded tensors already on the device, once per
            variant of `--bare`: eager, or a torch.compile mode (default, reduce-overhead = CUDA graphs,
            max-autotune), `+channels_last` to run the encoder in that layout instead of NCHW (GroupNorm
            was measured slow in channels_last). With a GPU each row gives the encoder's share of the
            chip's dense bf16 peak by its FLOP count (torch.utils.flop_counter); the best row is the
            ceiling the pipeline is compared with;
  single    one image at a time, as Talk2Face's released scripts encode: open, preprocess, encode a
            batch of 1 (eager), copy the codes back;
  pipeline  `facecorpus tokenize` end to end (plan, read/decode/preprocess tasks, the encoder actor
            with `--inflight` calls and `--compile`, cache parts), on Ray (`--engine ray`, Ray's start
            reported apart) or without it (`--engine local`); also its steady rate, over the second
            half of the batches.
`--encoder noop` times the pipeline alone: the encoder gets a stand-in that returns zero codes at once
(tests/tokenkit.py NullVQGAN), against a bare loop of load_image + preprocess over the same files in
one process; the pipeline should decode on every CPU but the encoder's. Without a GPU, Ray is told of
one logical GPU so the pipeline plans its GPU layout (read tasks on the CPUs, one encoder actor):

    .venv/bin/python benchmarks/tokenization.py --encoder noop --images 4000          # this machine
    python benchmarks/tokenization.py --encoder noop --images 20000 --engine local    # the GPU machine

ffhq-f16 runs with seeded random weights (speed does not depend on them). Targets (issue 14, one H200):
pipeline >= 2,000 images/s, >= 85% of the best bare encoder, >= 30x one-at-a-time; the bare encoder at
>= 25% of bf16 peak. CPU: pipeline <= 1.3x the bare loop's time.
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import copy
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facecorpus.preprocess import load_image, preprocess, preprocess_uint8, to_model_input
from facecorpus.shards import localengine
from facecorpus.shards.plan import plan
from facecorpus.shards.tokenization import Options, tokenize
from facecorpus.trainer import mfu
from facecorpus.vqgan import load_vqgan
from tokenkit import make_manifest, null_vqgan


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encoder_flops(model) -> float:
    """FLOPs of one image through the encoder and quant_conv (the nearest-code search is a rounding
    error beside them), counted on the `meta` device: no arithmetic runs."""
    from torch.utils.flop_counter import FlopCounterMode

    size = model.code_grid.resolution
    enc, conv = copy.deepcopy(model.encoder).to("meta"), copy.deepcopy(model.quant_conv).to("meta")
    x = torch.zeros(1, 3, size, size, device="meta", dtype=next(enc.parameters()).dtype)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        conv(enc(x))
    return float(counter.get_total_flops())


def device_batches(images: list[Path], size: int, batch: int, device: str) -> list[torch.Tensor]:
    """Up to four whole batches of pre-decoded, pre-normalized images on the device (one shape: a
    compiled encoder keeps it)."""
    pool = min(len(images), 4 * batch)
    x = torch.stack([preprocess(load_image(p), size=size) for p in images[:pool]]).to(device)
    return [x[i:i + batch] for i in range(0, pool - batch + 1, batch)] or [x]


def bare_loop(model, chunks: list[torch.Tensor], n: int, device: str) -> float:
    """images/s of model.encode over tensors already on the device."""
    for c in chunks[:2]:  # warm-up: compilation, CUDA graphs' recording, cuDNN autotune
        model.encode(c)
    sync(device)
    t0, done, i = time.perf_counter(), 0, 0
    while done < n:
        done += len(model.encode(chunks[i % len(chunks)]))
        i += 1
    sync(device)
    return done / (time.perf_counter() - t0)


def one_at_a_time(model, images: list[Path], n: int, device: str) -> float:
    """images/s one image at a time: each opened, preprocessed and encoded on its own."""
    size = model.code_grid.resolution
    model.encode(preprocess(load_image(images[0]), size=size)[None].to(device))
    sync(device)
    t0 = time.perf_counter()
    for p in images[:n]:
        model.encode(preprocess(load_image(p), size=size)[None].to(device)).cpu()
    return n / (time.perf_counter() - t0)


class _Clock:
    """A stand-in for the rich progress bar that tokenize() advances: when each batch came back."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []

    def add_task(self, *_args, **_kwargs) -> int:
        return 0

    def advance(self, _task, n: int) -> None:
        self.marks.append((time.perf_counter(), n))

    def first(self, t0: float) -> float:
        """Seconds from the start to the first batch back (workers' and actor's start-up, compilation)."""
        return self.marks[0][0] - t0 if self.marks else float("nan")

    def steady(self) -> float:
        """images/s over the second half of the batches: by then what the read stage did ahead while the
        encoder started up is used up, and start-up is over."""
        half = len(self.marks) // 2
        if len(self.marks) < 3 or self.marks[-1][0] == self.marks[half][0]:
            return float("nan")
        return sum(n for _, n in self.marks[half + 1:]) / (self.marks[-1][0] - self.marks[half][0])


def pipeline(manifest: Path, cache: Path, opts: Options, load_model=None, ray_args: dict | None = None) -> dict:
    """tokenize end to end: images/s, Ray's start (0 without Ray), first batch, steady rate, summary."""
    start = 0.0
    if opts.engine == "ray":
        import ray

        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **(ray_args or {}))
        start = time.perf_counter() - t0
    clock = _Clock()
    try:
        t0 = time.perf_counter()
        summary = tokenize(manifest, cache, opts, clock, load_model=load_model)
        seconds = time.perf_counter() - t0
    finally:
        if opts.engine == "ray":
            ray.shutdown()
    assert summary["accounted"] and summary["ledgered"] == 0, summary
    if summary["encode_retried"]:  # e.g. out of GPU memory: batches re-encoded in halves, much slower
        print(f"WARNING: {summary['encode_retried']} images were in encoder batches that failed and were retried")
    return {"rate": summary["encoded"] / seconds, "start": start, "first": clock.first(t0), "steady": clock.steady(),
            "retried": summary["encode_retried"], "encoded": summary["encoded"]}


def bare_decode(plan_df, n: int, size: int) -> float:
    """images/s of what a read task does per image, in one process: load_image + preprocess_uint8."""
    rows = list(plan_df.itertuples(index=False))[:n]
    t0 = time.perf_counter()
    for _, path, _root, bbox in rows:
        preprocess_uint8(load_image(Path(path)), [int(v) for v in bbox.split(",")] if bbox else None, size=size)
    return len(rows) / (time.perf_counter() - t0)


def manifest_for(args, tmp: Path, n: int) -> Path:
    """The generated faces: kept in `--manifest DIR` (made there the first time), else in `tmp`."""
    root = Path(args.manifest) if args.manifest else tmp
    if (root / "manifest").is_dir():
        return root / "manifest"
    t0 = time.perf_counter()
    out = make_manifest(root, n, seed=0, broken=False, captions=False)
    print(f"generated {n} images in {time.perf_counter() - t0:.1f} s")
    return out


def noop(args) -> None:
    """The pipeline with a no-op encoder against the bare decode loop (see the module docstring)."""
    n = args.images or (20000 if torch.cuda.is_available() else 4000)
    gpus = torch.cuda.device_count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = manifest_for(args, tmp, n)
        todo = plan(manifest)
        n = len(todo)
        bare_n = min(n, args.bare_images or 2000)
        bare = bare_decode(todo, bare_n, null_vqgan().code_grid.resolution)
        print(f"bare decode loop (1 process, {bare_n} images): {bare:.1f} images/s")
        ray_args = {"num_cpus": args.cpus, **({} if gpus else {"num_gpus": 1})}
        opts = Options(batch_size=args.batch_size, engine=args.engine, inflight=args.inflight)
        r = pipeline(manifest, tmp / "cache", opts, null_vqgan, ray_args)
    assert r["encoded"] == n, r
    if args.engine == "ray":
        cpus = args.cpus or os.cpu_count()
        readers = max(1, cpus - 1)  # the encoder actor holds one CPU
        where = (f"Ray: {cpus} CPUs, {f'{gpus} GPU' if gpus else '1 logical GPU (none real)'}, started "
                 f"{r['start']:.1f} s apart")
    else:
        cpus = os.cpu_count()
        readers = localengine.layout(opts, gpus > 0, cpus)["readers"]
        where = f"engine local: {cpus} CPUs, {gpus} GPU"
    lines = [
        (f"- no-op encoder (zero codes, `meta` device), {n} images, encoder batch {args.batch_size or 256}, {where}, "
         f"{readers} read processes; first batch back after {r['first']:.1f} s"),
        "",
        "| what | images/s | vs bare decode loop |",
        "|---|---:|---:|",
        f"| bare loop: load_image + preprocess_uint8, one process | {bare:.1f} | 1.00 |",
        f"| pipeline, no-op encoder, end to end (plan, workers' start-up, cache parts) | {r['rate']:.1f} | {r['rate'] / bare:.2f} |",
        f"| the same, steady (the second half of the batches) | {r['steady']:.1f} | {r['steady'] / bare:.2f} |",
        "",
        (f"- read-stage scaling, steady pipeline / (bare x {readers} read CPUs): "
         f"**{100 * r['steady'] / (bare * readers):.0f}%** (100% = no overhead at all): the CPU side's ceiling"),
        load_line(),
    ]
    _results.append("tokenize: pipeline overhead with a no-op encoder vs a bare decode loop", lines, record=not args.no_append)


def bare_rows(args, preset: str, ckpt, images: list[Path], n: int, batch: int) -> tuple[list, float]:
    """([(variant, images/s, share of the chip's bf16 peak or None)] for each `--bare` variant, FLOPs
    per image)."""
    peak = mfu.device_peak(args.device)
    out, flops, chunks = [], None, None
    for variant in args.bare.split(","):
        mode, _, layout = variant.partition("+")
        compile_ = "" if mode == "eager" else mode
        model = load_vqgan(preset, ckpt, device=args.device, compile=compile_, channels_last=layout == "channels_last")
        flops = flops or encoder_flops(model)
        chunks = chunks or device_batches(images, model.code_grid.resolution, batch, args.device)
        t0 = time.perf_counter()
        rate = bare_loop(model, chunks, n, args.device)
        print(f"bare encoder, {variant}: {rate:.1f} images/s ({time.perf_counter() - t0:.0f} s with compilation)")
        out.append((variant, rate, rate * flops / peak if peak else None))
        if variant == (args.compile or "eager"):  # the pipeline's encoder: where its time goes
            _results.profile(args.profile, f"bare encoder {variant}, {preset}, 2 batches of {len(chunks[0])}",
                             lambda m=model: [m.encode(c) for c in chunks[:2]], lambda: sync(args.device))
        del model
    return out, flops


def encoders(args) -> None:
    cuda = args.device.startswith("cuda")
    preset = args.preset or ("ffhq-f16" if cuda else "tiny-f16")
    n = args.images or (20000 if cuda else 1000)
    batch = args.batch_size or (256 if cuda else 32)
    n_single = args.one_at_a_time or (500 if cuda else 100)
    engine = args.engine or ("ray" if _has_ray() else "local")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = manifest_for(args, tmp, n)
        images = [Path(p) for p in plan(manifest)["path"]]
        n = len(images)
        ckpt = None
        if preset == "ffhq-f16":  # random weights, saved so the encoder actors load the same thing
            ckpt = str(tmp / "ffhq-random.pt")
            torch.save(load_vqgan(preset, random_seed=0).state_dict(), ckpt)
        bare, flops = bare_rows(args, preset, ckpt, images, min(n, args.bare_images or n), batch)
        eager = load_vqgan(preset, ckpt, device=args.device)
        single = one_at_a_time(eager, images, min(n_single, n), args.device)
        print(f"one at a time: {single:.1f} images/s")
        decoded = gpu_decode(eager, plan(manifest), min(n, 4096), batch)
        del eager
        if cuda:  # give the GPU memory the loops above cached back: the encoder may be another process
            torch.cuda.empty_cache()
        opts = Options(vqgan=preset, ckpt=ckpt, batch_size=batch, compile=args.compile, engine=engine,
                       inflight=args.inflight)
        r = pipeline(manifest, tmp / "cache", opts)
        print(f"pipeline: {r['rate']:.1f} images/s end to end, {r['steady']:.1f} steady")
    lines = encoder_lines(args, preset, n, batch, engine, bare, flops, single, r) + ([decoded] if decoded else [])
    _results.append("tokenize: pipeline vs bare encoder variants vs one at a time", lines, record=not args.no_append)


def encoder_lines(args, preset, n, batch, engine, bare, flops, single, r) -> list[str]:
    best = max(rate for _, rate, _ in bare)
    share = lambda f: "n/a" if f is None else f"{100 * f:.1f}%"  # noqa: E731
    return [
        (f"- preset {preset}, device {args.device}, {n} images ({min(n, args.one_at_a_time or n)} one at a time), "
         f"encoder batch {batch}, {flops / 1e9:.1f} GFLOP per image, torch {torch.__version__}; pipeline: engine "
         f"{engine}, compile {args.compile or 'off'}, calls in flight {args.inflight or 'default'}"),
        "",
        "| what | images/s | vs best bare encoder | share of bf16 peak |",
        "|---|---:|---:|---:|",
        *(f"| bare encoder loop, {v} (tensors on the device) | {rate:.1f} | {rate / best:.2f} | {share(f)} |"
          for v, rate, f in bare),
        f"| one image at a time: open, preprocess, encode (Talk2Face's scripts) | {single:.1f} | {single / best:.2f} | |",
        (f"| pipeline `tokenize` end to end (first batch after {r['first']:.1f} s{', Ray started %.1f s apart' % r['start'] if r['start'] else ''}) "
         f"| {r['rate']:.1f} | {r['rate'] / best:.2f} | |"),
        f"| the same, steady (the second half of the batches) | {r['steady']:.1f} | {r['steady'] / best:.2f} | |",
        "",
        (f"- pipeline / best bare encoder: **{100 * r['rate'] / best:.0f}%** end to end, **{100 * r['steady'] / best:.0f}%** "
         f"steady (GPU target >= 85%); pipeline / one-at-a-time: **{r['rate'] / single:.1f}x** (GPU target >= 30x); "
         f"end to end **{r['rate']:,.0f} images/s** (one H200 target >= 2,000; 1.5M images would take "
         f"{1.5e6 / r['rate'] / 60:.0f} min)"),
        f"- images in encoder batches that failed and were re-encoded in halves: {r['retried']} (should be 0)",
        load_line(),
    ]


def gpu_decode(model, plan_df, n: int, batch: int) -> str | None:
    """A line measuring what decoding on the GPU would give (docs/performance.md: not adopted): the
    plan's JPEGs without a face box through torchvision.io.decode_jpeg on the device and torch's
    antialiased bicubic resize, in images/s, and how far its pixels and codes land from the policy's
    (Pillow). None without torchvision or a GPU."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except (ImportError, RuntimeError):
        return None
    if not torch.cuda.is_available():
        return None
    from PIL import Image

    size = model.code_grid.resolution
    paths = [p for p, b in zip(plan_df["path"], plan_df["bbox"]) if p.endswith(".jpg") and not b][:n]
    def mode(path: str) -> str:
        with Image.open(path) as im:
            return im.mode
    paths = [p for p in paths if mode(p) in ("RGB", "L")]   # nvjpeg has no CMYK
    try:
        return _gpu_decode(model, paths, size, batch, decode_jpeg, ImageReadMode.RGB)
    except Exception as exc:  # noqa: BLE001 - a measurement that could not run is reported, not fatal
        return f"- GPU JPEG decode: could not be measured: {type(exc).__name__}: {str(exc)[:200]}"


def _gpu_decode(model, paths: list[str], size: int, batch: int, decode_jpeg, rgb) -> str:
    datas = [torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8) for p in paths]

    def run(chunk):
        imgs = decode_jpeg(chunk, mode=rgb, device="cuda")
        return torch.cat([torch.nn.functional.interpolate(i[None].float(), size=(size, size), mode="bicubic",
                                                          antialias=True) for i in imgs]).round().clamp(0, 255)
    run(datas[:batch])
    sync("cuda")
    t0 = time.perf_counter()
    for i in range(0, len(datas), batch):
        run(datas[i:i + batch])
    sync("cuda")
    rate = len(datas) / (time.perf_counter() - t0)
    mine = run(datas[:batch]).to(torch.uint8).permute(0, 2, 3, 1).cpu()
    ref = torch.from_numpy(np.stack([preprocess_uint8(load_image(Path(p)), size=size) for p in paths[:batch]]))
    diff = (mine.int() - ref.int()).abs()
    codes = [model.encode(to_model_input(x.cuda())) for x in (mine, ref)]
    return (f"- GPU JPEG decode (not adopted, docs/performance.md): decode_jpeg on the device + antialiased bicubic "
            f"resize, {len(datas)} JPEGs in batches of {batch}: **{rate:,.0f} images/s**; against the policy's "
            f"Pillow pixels: mean |diff| {diff.float().mean():.2f} levels, max {int(diff.max())}, "
            f"{100 * float((diff == 0).float().mean()):.0f}% of values equal, "
            f"{100 * float((codes[0] == codes[1]).float().mean()):.1f}% of codes equal")


def load_line() -> str:
    return (f"- load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other jobs on the "
            "machine slow every row alike)")


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--preset", default=None, help="tiny-f16 (CPU default) or ffhq-f16 (CUDA default)")
    ap.add_argument("--images", type=int, default=None, help="images generated (CPU 1000, CUDA 20000)")
    ap.add_argument("--manifest", help="folder keeping the generated images between runs (made if missing)")
    ap.add_argument("--one-at-a-time", type=int, default=None, help="images for the one-at-a-time baseline")
    ap.add_argument("--batch-size", type=int, default=None, help="encoder batch (CPU 32, CUDA 256)")
    ap.add_argument("--bare", default="eager", help="bare-loop variants, comma-separated: eager or a compile mode "
                    "(default, reduce-overhead, max-autotune), each optionally +channels_last")
    ap.add_argument("--compile", default="", help="the pipeline encoder's torch.compile mode ('' = eager)")
    ap.add_argument("--engine", choices=("ray", "local"), default=None, help="pipeline engine (default: ray if installed)")
    ap.add_argument("--inflight", type=int, default=None, help="encoder calls in flight (default 3 with GPUs, 1 on CPU)")
    ap.add_argument("--encoder", choices=("vqgan", "noop"), default="vqgan",
                    help="noop: time the pipeline alone with a stand-in encoder against a bare decode loop")
    ap.add_argument("--cpus", type=int, default=None, help="noop on Ray: CPUs Ray may use (default: all)")
    ap.add_argument("--bare-images", type=int, default=None,
                    help="images per bare loop (default: all; noop: 2000 through the bare decode loop)")
    ap.add_argument("--profile", help="append the pipeline encoder's operator profile (its --bare row) to this file")
    ap.add_argument("--no-append", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args()
    if args.encoder == "noop":
        args.engine = args.engine or ("ray" if _has_ray() else "local")
        return noop(args)
    encoders(args)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
