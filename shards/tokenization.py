"""`facecorpus tokenize`: every unique image of a manifest, encoded once, on Ray Data.

    manifest -> unique image_ids not in the cache -> [Ray tasks] read, decode, preprocess (uint8; reading.py)
             -> [actor pool, one GPU per actor when there are GPUs] VQGAN encode (encoder.py)
             -> driver: codes appended to the cache, failures to the ledger, part by part

Ray Data streams with backpressure, so the work in flight is bounded by its object-store budget and
memory stays flat however large the manifest is. On CPU the read stage carries the same resources
as the encoder, so Ray fuses both into the actor (no image crosses processes); with GPUs the
resources differ, Ray keeps them apart and the CPUs decode while the GPUs encode. A read task takes
`read_rows` images (a whole fraction of the encoder batch, several tasks per CPU so every core
decodes), never imports torch (seconds of start-up per worker), and ships uint8 pixels, which the
encoder converts to float on its own device. Ray itself comes from raysession.py; `engine="local"`
runs the same stages without Ray on one machine (localengine.py).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import ledger, localengine
from facecorpus.shards.encoder import Encoder
from facecorpus.shards.raysession import ray_session
from facecorpus.shards.reading import OK, REFUSED, read_batch

from facecorpus import manifest as mf
from facecorpus import storage
from facecorpus.preprocess import POLICY


def plan(manifest: Path, raw_root: Path | None = None) -> pd.DataFrame:
    """One row per unique image_id: absolute path, its dataset's raw folder (resolved: reading.py
    checks that the image resolves inside it) and face box ("x0,y0,x1,y1" or ""). The first record by
    key names the file, so the plan does not depend on partition order. `raw_root`: where the raw
    dataset folders are now, if they moved since `convert` (manifest.image_root)."""
    table = mf.read_table(Path(manifest), columns=["key", "dataset", "image", "image_id", "bbox"])
    df = table.to_pandas().sort_values("key", kind="stable").drop_duplicates("image_id")
    roots = {d: mf.image_root(manifest, d, raw_root) for d in df["dataset"].unique()}
    # A raw folder in object storage stays a URI: its images are read in place (reading.py).
    remote = {d: storage.is_remote(root) for d, root in roots.items()}
    real = {d: root if remote[d] else os.path.realpath(root) for d, root in roots.items()}
    paths = [f"{roots[d]}/{img}" if remote[d] else str(roots[d] / img) for d, img in zip(df["dataset"], df["image"])]
    boxes = ["" if b is None else ",".join(str(int(v)) for v in b) for b in df["bbox"]]
    return pd.DataFrame({"image_id": df["image_id"].to_numpy(), "path": paths,
                         "root": [real[d] for d in df["dataset"]], "bbox": boxes}).reset_index(drop=True)


ENGINES = ("ray", "local")


@dataclass
class Options:
    vqgan: str = "tiny-f16"
    ckpt: str | None = None
    trust_checkpoint: bool = False
    ray_address: str | None = None
    batch_size: int | None = None     # default: 256 per GPU, 32 on CPU
    part_rows: int = 4096             # rows per cache part: what a kill can lose at most
    actors: int | None = None         # default: one per GPU, else cluster CPUs // cpus_per_actor
    cpus_per_actor: int | None = None  # CPU only; default min(4, cluster CPUs)
    compile: str = ""                 # GPUs: a torch.compile mode for the encoder ("" = eager; ~25 s or more per actor)
    inflight: int | None = None       # batches each encoder actor holds at once; default 3 with GPUs, 1 on CPU
    allow_outside_links: bool = False  # read images whose path resolves outside their dataset's folder
    raw_root: Path | None = None      # where the raw dataset folders are now, if moved since `convert`
    engine: str = "ray"               # "ray", or "local": the same stages in processes and threads of this machine


def _dataset(todo: pd.DataFrame, opts: Options, size: int, load_model):
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours is the one bar
    ctx.print_on_execution_start = False
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    if gpus:
        actors, batch = opts.actors or gpus, opts.batch_size or 256
        read_args, enc_args, threads = {"num_cpus": 1}, {"num_cpus": 1, "num_gpus": 1}, 1
        # One batch encoding, one staged (its copy to the GPU overlapping), one being assembled by Ray.
        inflight = opts.inflight or 3
    else:
        threads = opts.cpus_per_actor or min(4, cpus)
        actors, batch = opts.actors or max(1, cpus // threads), opts.batch_size or 32
        read_args = enc_args = {"num_cpus": threads}  # equal resources -> Ray fuses read into the actor
        inflight = opts.inflight or 1  # the CPU that decodes also encodes: nothing to overlap
    rows = read_rows(len(todo), batch, cpus)
    # Input blocks are built in the driver: from_arrow would start a remote task per block just to
    # read metadata, and from_pandas' splitting breaks on pandas 3.
    ds = ray.data.from_items(todo.to_dict("records"), override_num_blocks=max(1, -(-len(todo) // rows)))
    # One read task per input block (batch_size=None: no bundling), `rows` images each.
    ds = ds.map_batches(read_batch, batch_size=None, batch_format="numpy",
                        fn_kwargs={"size": size, "allow_outside": opts.allow_outside_links}, **read_args)
    # Several calls run at once in each actor (threads; Ray queues 4x as many batches per actor):
    # the Encoder stages one batch while its compute thread encodes another. A compiled encoder gets
    # every call padded to `batch` rows (one shape: compiled once, CUDA graphs replayed).
    pool = ray.data.ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=inflight,
                                      enable_true_multi_threading=inflight > 1)
    fixed = batch if opts.compile else None
    return ds.map_batches(
        Encoder, batch_size=batch, batch_format="numpy", compute=pool,
        fn_constructor_args=(opts.vqgan, opts.ckpt, opts.trust_checkpoint, threads, opts.compile, load_model, fixed),
        **enc_args)


def read_rows(n: int, batch: int, cpus: int) -> int:
    """Images per read task: the encoder batch split in 2, 4, 8... until there are at least four read
    tasks per CPU (every core decodes, and the last wave is short), but not under 16 images (a task
    costs ~ms to schedule; an image ~3 ms to decode). Dividing the batch evenly lets the encoder
    gather whole read blocks into its batches."""
    rows = batch
    while rows > 16 and -(-n // rows) < 4 * cpus:
        rows //= 2
    return max(1, rows)


class _Sink:
    """Driver side: buffer results, write a cache part and a ledger part every `part_rows` rows."""

    def __init__(self, cache: Path, identity: dict, part_rows: int):
        self.cache, self.identity, self.part_rows = cache, identity, part_rows
        self.ids, self.codes, self.failed = [], [], []
        self.encoded = self.ledgered = self.retried = self.outside = 0

    def add(self, batch: dict) -> None:
        self.retried += int(batch["retried"].sum())
        # Links out of a dataset's folder read because the user allowed them: counted, never silent.
        self.outside += int(sum(o and s != REFUSED for o, s in zip(batch["outside"], batch["stage"])))
        for i, image_id in enumerate(batch["image_id"]):
            if batch["stage"][i] == OK:
                self.ids.append(str(image_id))
                self.codes.append(batch["codes"][i])
            else:
                self.failed.append({"image_id": str(image_id), "path": str(batch["path"][i]),
                                    "stage": str(batch["stage"][i]), "message": str(batch["message"][i])})
        if len(self.ids) + len(self.failed) >= self.part_rows:
            self.flush()

    def flush(self) -> None:
        if self.ids:
            cache_mod.write_part(self.cache / "codes",
                                 cache_mod.codes_table(self.ids, np.stack(self.codes), self.identity))
        ledger.append(self.cache, self.failed)
        self.encoded += len(self.ids)
        self.ledgered += len(self.failed)
        self.ids, self.codes, self.failed = [], [], []


def tokenize(manifest: Path, cache: Path, opts: Options, progress=None, load_model=None) -> dict:
    """Encode what the cache lacks; return the counts (unique images == cached + ledgered).

    `load_model` builds the VQGAN in the driver (for its identity and code grid) and in each encoder
    actor, with facecorpus.vqgan.load_vqgan's signature (the default); tests and benchmarks inject
    stand-ins here. It must pickle: Ray ships it to the actors."""
    from facecorpus.vqgan import load_vqgan

    if opts.engine not in ENGINES:
        raise ValueError(f"engine {opts.engine!r}: choose one of {', '.join(ENGINES)}")
    if opts.engine == "local" and opts.ray_address:
        raise ValueError("--ray-address joins a Ray cluster and --engine local runs without Ray: choose one")
    load_model = load_model or load_vqgan
    model = load_model(opts.vqgan, opts.ckpt, trust_checkpoint=opts.trust_checkpoint)
    identity, size = model.identity, model.code_grid.resolution
    del model  # the actors load their own
    cache = cache_mod.open_cache(Path(cache), identity, POLICY)
    images = plan(Path(manifest), opts.raw_root)
    before = cache_mod.cached_ids(cache)
    todo = images[~images["image_id"].isin(before)].reset_index(drop=True)
    sink = _Sink(cache, identity, opts.part_rows)
    t0 = time.perf_counter()
    if len(todo):
        with _encoded(todo, opts, size, load_model) as batches:
            task = progress.add_task("tokenize", total=len(todo)) if progress else None
            for batch in batches:
                sink.add(batch)
                if progress:
                    progress.advance(task, len(batch["image_id"]))
            sink.flush()
    return {**summarize(cache, images, before, sink, time.perf_counter() - t0, identity), "engine": opts.engine}


@contextlib.contextmanager
def _encoded(todo: pd.DataFrame, opts: Options, size: int, load_model):
    """The encoder's output batches, from Ray (joined or embedded) or from the local engine."""
    if opts.engine == "local":
        yield localengine.batches(todo, opts, size, load_model, read_rows)
        return
    with ray_session(opts.ray_address):
        yield _dataset(todo, opts, size, load_model).iter_batches(batch_size=None, batch_format="numpy")


def summarize(cache: Path, images: pd.DataFrame, before: set, sink: _Sink, seconds: float, identity: dict) -> dict:
    wanted = set(images["image_id"])
    cached = cache_mod.cached_ids(cache) & wanted
    failures = [r for r in ledger.read_ledger(cache, cached) if r["image_id"] in wanted]
    by_stage = {s: sum(r["stage"] == s for r in failures) for s in ledger.STAGES}
    out = {"unique_images": len(wanted), "cached_before": len(before & wanted), "encoded": sink.encoded,
           "ledgered_now": sink.ledgered, "encode_retried": sink.retried, "read_outside_links": sink.outside,
           "cached": len(cached), "ledgered": len(failures),
           **{f"ledgered_{s}": n for s, n in by_stage.items()}, "seconds": round(seconds, 2),
           "images_per_s": round(sink.encoded / seconds, 1) if seconds and sink.encoded else 0.0,
           "vqgan": identity["name"]}
    out["accounted"] = out["unique_images"] == out["cached"] + out["ledgered"]
    return out
