"""`tokenize --engine local`: the Ray pipeline's read and encode stages on one machine, without Ray.

For a single machine where Ray is missing or unwanted (a lent GPU machine has no Ray, and its wheel is
too big to carry there; benchmarks/gpu.sh measures through this engine). Read tasks (reading.py's
`read_batch`, unchanged) run in a pool of spawned processes, one per CPU but one, and never import
torch; the Encoder (encoder.py, unchanged) runs in this process, called from `inflight` threads as Ray
calls its actor. What Ray's streaming executor bounds, this bounds by hand: at most four read blocks per
reader and `inflight` encoder batches are in flight, so memory stays flat however long the plan is.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

from facecorpus.shards import plan
from facecorpus.shards.encoder import Encoder
from facecorpus.shards.reading import read_batch


def layout(opts, gpu: bool, cpus: int) -> dict:
    """Readers, encoder batch, calls in flight and the encoder's threads: tokenization.py's defaults for
    one machine (the encoder holds one CPU; on CPU it also holds the threads it computes with)."""
    threads = 1 if gpu else opts.cpus_per_actor or min(4, cpus)
    return {"readers": max(1, cpus - (1 if gpu else threads)), "batch": opts.batch_size or (256 if gpu else 32),
            "inflight": opts.inflight or (3 if gpu else 1), "threads": threads}


def batches(manifest, index, opts, size: int, load_model, rows_for) -> Iterator[dict]:
    """Encoded batches of the plan (plan.py: `index` from scan; the Encoder's output dicts), in plan
    order. `rows_for(n, batch, readers)`: images per read task (tokenization.read_rows)."""
    import torch

    cpus = os.cpu_count() or 1
    lay = layout(opts, torch.cuda.is_available(), cpus)
    encoder = Encoder(opts.vqgan, opts.ckpt, opts.trust_checkpoint, lay["threads"], opts.compile, load_model,
                      lay["batch"] if opts.compile else None)   # a compiled encoder keeps one shape
    rows = rows_for(index.todo, lay["batch"], lay["readers"])
    blocks = plan.blocks(manifest, index, rows, opts.raw_root)  # streamed: never the whole plan at once
    read = functools.partial(read_batch, size=size, allow_outside=opts.allow_outside_links)
    spawn = multiprocessing.get_context("spawn")  # a fork would copy this process's CUDA state and threads
    with ProcessPoolExecutor(lay["readers"], mp_context=spawn) as readers, \
            ThreadPoolExecutor(lay["inflight"], thread_name_prefix="call") as calls:
        encoding: deque = deque()
        for pixels in _gathered(readers, read, blocks, lay["batch"], 4 * lay["readers"]):
            encoding.append(calls.submit(encoder, pixels))
            if len(encoding) >= lay["inflight"]:
                yield encoding.popleft().result()
        while encoding:
            yield encoding.popleft().result()


def _gathered(pool: ProcessPoolExecutor, read, blocks: Iterator[dict], batch: int, window: int) -> Iterator[dict]:
    """Read blocks gathered into batches of `batch` images (the last may be short), in order, with at
    most `window` read tasks submitted ahead."""
    reading: deque = deque()
    parts, n = [], 0
    while True:
        while len(reading) < window and (block := next(blocks, None)) is not None:
            reading.append(pool.submit(read, block))
        if not reading:
            break
        parts.append(reading.popleft().result())
        n += len(parts[-1]["image_id"])
        if n >= batch:
            yield _concat(parts)
            parts, n = [], 0
    if parts:
        yield _concat(parts)


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
