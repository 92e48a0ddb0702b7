"""Tokenization speed: the whole Ray pipeline against a bare encoder loop and one-at-a-time encoding.

    .venv/bin/python benchmarks/tokenization.py                                  # CPU, tiny-f16
    python benchmarks/tokenization.py --device cuda --preset ffhq-f16 --images 30000   # one GPU

In one run, on the same generated JPEG/PNG faces (tests/tokenkit.py):
  ceiling   a bare `model.encode` loop over pre-decoded tensors already on the device (batches);
  single    one image at a time, as Talk2Face's released scripts encode: open, preprocess, encode a
            batch of 1, copy the codes back;
  pipeline  `facecorpus tokenize` end to end (plan, Ray read/decode/preprocess tasks, encoder actor
            pool, cache parts): wall time with Ray already started (the start is reported apart).
`--encoder noop` times the pipeline alone: the encoder actor gets a stand-in that returns zero codes
at once (tests/tokenkit.py NullVQGAN), against a bare loop of load_image + preprocess over the same
files in one process; the pipeline should decode on every CPU but the encoder's, so its images/s
should approach (CPUs - 1) x the bare loop's. Without a GPU, Ray is told of one logical GPU so the
pipeline plans its GPU layout (read tasks on the CPUs, one encoder actor):

    .venv/bin/python benchmarks/tokenization.py --encoder noop --images 4000          # this machine
    python benchmarks/tokenization.py --encoder noop --images 20000                   # the GPU machine

ffhq-f16 runs with seeded random weights (speed does not depend on them). Targets: CPU tiny-f16
pipeline <= 1.3x the ceiling's time; one H100 with ffhq-f16 >= 1,500 images/s end to end, >= 80% of
the ceiling, >= 20x one-at-a-time. Needs the package installed (Ray for the pipeline part; without
Ray the pipeline part is skipped and says so).
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from facecorpus.shards.tokenization import Options, plan, tokenize
from tokenkit import make_manifest, null_vqgan

from facecorpus.preprocess import load_image, preprocess, preprocess_uint8
from facecorpus.vqgan import load_vqgan


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_loop(model, images: list[Path], n: int, batch: int, device: str) -> float:
    """images/s of model.encode over pre-decoded, pre-normalized tensors on the device."""
    pool = min(len(images), 4 * batch)
    size = model.code_grid.resolution
    x = torch.stack([preprocess(load_image(p), size=size) for p in images[:pool]]).to(device)
    model.encode(x[:batch])  # warm-up (cuDNN autotune, allocator)
    sync(device)
    t0, done = time.perf_counter(), 0
    while done < n:
        start = done % pool
        chunk = x[start:start + min(batch, n - done, pool - start)]
        model.encode(chunk)
        done += len(chunk)
    sync(device)
    return n / (time.perf_counter() - t0)


def one_at_a_time(model, images: list[Path], n: int, device: str) -> float:
    """images/s one image at a time: each opened, preprocessed and encoded on its own."""
    size = model.code_grid.resolution
    model.encode(preprocess(load_image(images[0]), size=size)[None].to(device))
    sync(device)
    t0 = time.perf_counter()
    for p in images[:n]:
        model.encode(preprocess(load_image(p), size=size)[None].to(device)).cpu()
    return n / (time.perf_counter() - t0)


def pipeline(manifest: Path, cache: Path, preset: str, ckpt: str | None, batch: int | None,
             compile: bool = False) -> tuple[float, float]:
    """(images/s with Ray started, seconds to start Ray)."""
    import ray

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        summary = tokenize(manifest, cache, Options(vqgan=preset, ckpt=ckpt, batch_size=batch, compile=compile))
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
    assert summary["accounted"] and summary["ledgered"] == 0, summary
    if summary["encode_retried"]:  # e.g. out of GPU memory: batches re-encoded in halves, much slower
        print(f"WARNING: {summary['encode_retried']} images were in encoder batches that failed and were retried")
    return summary["encoded"] / seconds, start, summary["encode_retried"]


class _Clock:
    """A stand-in for the rich progress bar that tokenize() advances: when each batch came back."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []

    def add_task(self, *_args, **_kwargs) -> int:
        return 0

    def advance(self, _task, n: int) -> None:
        self.marks.append((time.perf_counter(), n))

    def first(self, t0: float) -> float:
        """Seconds from the start to the first batch back (workers' and actor's start-up)."""
        return self.marks[0][0] - t0 if self.marks else float("nan")


def bare_decode(plan_df, n: int, size: int) -> float:
    """images/s of what a read task does per image, in one process: load_image + preprocess_uint8."""
    rows = list(plan_df.itertuples(index=False))[:n]
    t0 = time.perf_counter()
    for _, path, _root, bbox in rows:
        preprocess_uint8(load_image(Path(path)), [int(v) for v in bbox.split(",")] if bbox else None, size=size)
    return len(rows) / (time.perf_counter() - t0)


def noop(args) -> None:
    """The pipeline with a no-op encoder against the bare decode loop (see the module docstring)."""
    import os

    import ray

    n = args.images or (20000 if torch.cuda.is_available() else 4000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = make_manifest(tmp, n, seed=0, broken=False, captions=False)
        todo = plan(manifest)
        bare = bare_decode(todo, min(n, args.bare_images), null_vqgan().code_grid.resolution)
        print(f"bare decode loop (1 process, {min(n, args.bare_images)} images): {bare:.1f} images/s")
        gpus = torch.cuda.device_count()
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 num_cpus=args.cpus, **({} if gpus else {"num_gpus": 1}))
        start, cpus = time.perf_counter() - t0, int(ray.cluster_resources().get("CPU", 1))
        clock = _Clock()
        try:
            t0 = time.perf_counter()
            summary = tokenize(manifest, tmp / "cache", Options(batch_size=args.batch_size), clock,
                               load_model=null_vqgan)
            seconds = time.perf_counter() - t0
        finally:
            ray.shutdown()
    assert summary["accounted"] and summary["encoded"] == n and not summary["encode_retried"], summary
    piped, first = n / seconds, clock.first(t0)
    readers = max(1, cpus - 1)  # the encoder actor holds one CPU
    lines = [
        (f"- no-op encoder (zero codes, `meta` device), {n} images, encoder batch {args.batch_size or 256}, "
         f"{cpus} Ray CPUs ({readers} for read tasks), {f'{gpus} GPU' if gpus else '1 logical GPU (none real)'}, "
         f"os.cpu_count() {os.cpu_count()}, Ray start {start:.1f} s apart, first batch back after {first:.1f} s"),
        "",
        "| what | images/s | vs bare decode loop |",
        "|---|---:|---:|",
        f"| bare loop: load_image + preprocess_uint8, one process | {bare:.1f} | 1.00 |",
        f"| pipeline, no-op encoder, end to end (plan, workers' start-up, cache parts) | {piped:.1f} | {piped / bare:.2f} |",
        "",
        (f"- read-stage scaling, pipeline / (bare x {readers} read CPUs): **{100 * piped / (bare * readers):.0f}%** "
         f"(100% = no overhead at all); time per image per read CPU {1000 * readers / piped:.2f} ms vs the bare "
         f"loop's {1000 / bare:.2f} ms"),
    ]
    _results.append("tokenize: pipeline overhead with a no-op encoder vs a bare decode loop", lines, record=not args.no_append)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the encoder (CUDA) in the bare loop and the pipeline; the pipeline's time includes it")
    ap.add_argument("--preset", default=None, help="tiny-f16 (CPU default) or ffhq-f16 (CUDA default)")
    ap.add_argument("--images", type=int, default=None, help="images in the pipeline run (CPU 1000, CUDA 30000)")
    ap.add_argument("--one-at-a-time", type=int, default=None, help="images for the one-at-a-time baseline")
    ap.add_argument("--batch-size", type=int, default=None, help="encoder batch (CPU 32, CUDA 256)")
    ap.add_argument("--encoder", choices=("vqgan", "noop"), default="vqgan",
                    help="noop: time the pipeline alone with a stand-in encoder against a bare decode loop")
    ap.add_argument("--cpus", type=int, default=None, help="noop: CPUs Ray may use (default: all)")
    ap.add_argument("--bare-images", type=int, default=2000, help="noop: images in the bare decode loop")
    ap.add_argument("--no-append", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args()
    if args.encoder == "noop":
        return noop(args)
    cuda = args.device.startswith("cuda")
    preset = args.preset or ("ffhq-f16" if cuda else "tiny-f16")
    n = args.images or (30000 if cuda else 1000)
    batch = args.batch_size or (256 if cuda else 32)
    n_single = args.one_at_a_time or (500 if cuda else 100)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        manifest = make_manifest(tmp, n, seed=0, broken=False, captions=False)
        print(f"generated {n} images in {time.perf_counter() - t0:.1f} s")
        images = [Path(p) for p in plan(manifest)["path"]]
        ckpt = None
        if preset == "ffhq-f16":  # random weights, saved so the Ray actors load the same thing
            model = load_vqgan(preset, random_seed=0)
            ckpt = str(tmp / "ffhq-random.pt")
            torch.save(model.state_dict(), ckpt)
        model = load_vqgan(preset, ckpt, device=args.device, compile=args.compile)
        ceiling = bare_loop(model, images, n, batch, args.device)
        print(f"bare encoder loop: {ceiling:.1f} images/s")
        single = one_at_a_time(model, images, min(n_single, n), args.device)
        print(f"one at a time: {single:.1f} images/s")
        del model
        if cuda:  # give the GPU memory the loops above cached back: the encoder actor is another process
            torch.cuda.empty_cache()
        try:
            import ray  # noqa: F401
        except ImportError:
            piped, start, retried = float("nan"), float("nan"), 0
            print("Ray is not installed: pipeline part skipped (pip install 'ray[data]')")
        else:
            piped, start, retried = pipeline(manifest, tmp / "cache", preset, ckpt, batch, args.compile)
            print(f"pipeline: {piped:.1f} images/s (Ray start {start:.1f} s apart)")

    lines = [
        f"- preset {preset}, device {args.device}, {n} images ({min(n_single, n)} one at a time), encoder batch {batch}, compile {args.compile}, torch {torch.__version__}",
        "",
        "| what | images/s | vs bare encoder |",
        "|---|---:|---:|",
        f"| bare encoder loop, pre-decoded tensors on the device (ceiling) | {ceiling:.1f} | 1.00 |",
        f"| one image at a time: open, preprocess, encode (Talk2Face's scripts) | {single:.1f} | {single / ceiling:.2f} |",
        f"| pipeline `tokenize` end to end, Ray started ({start:.1f} s apart) | {piped:.1f} | {piped / ceiling:.2f} |",
        "",
        (f"- pipeline time / bare loop time: **{ceiling / piped:.2f}x** (CPU target <= 1.3x); "
        f"pipeline / one-at-a-time: **{piped / single:.1f}x** (GPU target >= 20x); "
        f"pipeline / bare: **{100 * piped / ceiling:.0f}%** (GPU target >= 80%)"),
        f"- images in encoder batches that failed and were re-encoded in halves: {retried} (should be 0)",
    ]
    _results.append("tokenize: Ray pipeline vs bare encoder loop vs one at a time", lines, record=not args.no_append)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
