"""`facecorpus tokenize`: every unique image of a manifest, encoded once, on Ray Data.

    manifest -> unique image_ids not in the cache -> [Ray tasks] read, decode, preprocess (uint8)
             -> [actor pool, one GPU per actor when there are GPUs] VQGAN encode
             -> driver: codes appended to the cache, failures to the ledger, part by part

Ray Data streams with backpressure, so the work in flight is bounded by its object-store budget and
memory stays flat however large the manifest is. On CPU the read stage carries the same resources
as the encoder, so Ray fuses both into the actor (no image crosses processes); with GPUs the
resources differ, Ray keeps them apart and the CPUs decode while the GPUs encode. A read task takes
`read_rows` images (a whole fraction of the encoder batch, several tasks per CPU so every core
decodes), never imports torch (seconds of start-up per worker), and ships uint8 pixels, which the
encoder converts to float on its own device.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import ledger

from facecorpus import manifest as mf
from facecorpus.preprocess import (
    POLICY,
    SIZE,
    as_tensor,
    load_image,
    preprocess_uint8,
    to_model_input,
)

OK = ""  # `stage` of a row that has not failed


def plan(manifest: Path, raw_root: Path | None = None) -> pd.DataFrame:
    """One row per unique image_id: absolute path and face box ("x0,y0,x1,y1" or ""). The first
    record by key names the file, so the plan does not depend on partition order. `raw_root`: where the
    raw dataset folders are now, if they moved since `convert` (manifest.image_root)."""
    table = mf.read_table(Path(manifest), columns=["key", "dataset", "image", "image_id", "bbox"])
    df = table.to_pandas().sort_values("key", kind="stable").drop_duplicates("image_id")
    roots = {d: mf.image_root(manifest, d, raw_root) for d in df["dataset"].unique()}
    paths = [str(roots[d] / img) for d, img in zip(df["dataset"], df["image"])]
    boxes = ["" if b is None else ",".join(str(int(v)) for v in b) for b in df["bbox"]]
    return pd.DataFrame({"image_id": df["image_id"].to_numpy(), "path": paths, "bbox": boxes}).reset_index(drop=True)


def _read_one(path: str, bbox: str) -> tuple[np.ndarray | None, str, str]:
    """(pixels, stage, message): the failing stage and why, or (pixels, OK, "")."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return None, "read", f"missing or unreadable file: {exc.strerror or exc}"
    if size == 0:
        return None, "read", "zero-byte file"
    try:
        img = load_image(Path(path))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's, not the run's
        return None, "decode", f"{type(exc).__name__}: {exc}"
    try:
        box = [int(v) for v in bbox.split(",")] if bbox else None
        return preprocess_uint8(img, box), OK, ""
    except Exception as exc:  # noqa: BLE001
        return None, "preprocess", f"{type(exc).__name__}: {exc}"


def read_batch(batch: dict) -> dict:
    """Ray task: read, decode and preprocess a batch; failures ride along as (stage, message)."""
    n = len(batch["image_id"])
    pixels = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    stage, message = [OK] * n, [""] * n
    for i, (path, box) in enumerate(zip(batch["path"], batch["bbox"])):
        px, stage[i], message[i] = _read_one(str(path), str(box))
        if px is not None:
            pixels[i] = px
    return {"image_id": batch["image_id"], "path": batch["path"], "pixels": pixels,
            "stage": np.array(stage, dtype=object), "message": np.array(message, dtype=object)}


class Encoder:
    """Ray actor: the VQGAN, loaded once, encoding the batches that reach it.

    A batch that fails is retried in halves down to single images, so one bad image costs one ledger
    row, not a batch, and the summary counts the images whose batch failed (`encode_retried`).
    `probe(image_ids)` runs before each encoder call (tests count calls and inject failures); `model`
    builds the model in place of load_vqgan (benchmarks: shards.sample.null_vqgan)."""

    def __init__(self, vqgan: str, ckpt: str | None, trust_checkpoint: bool, threads: int, probe=None, model=None,
                 compile: bool = False):

        import torch  # here, not at the top: the read tasks never need it

        from facecorpus.vqgan import load_vqgan

        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, threads))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        kwargs = {"compile": compile} if compile else {}
        self.model = (model or load_vqgan)(vqgan, ckpt, device=device, trust_checkpoint=trust_checkpoint, **kwargs)
        self.probe = probe
        self.limit = None  # images per encoder call once the device ran out of memory on a bigger one

    def _chunks(self, ids, pixels: np.ndarray) -> np.ndarray:
        step = self.limit or len(ids)
        return np.concatenate([self._encode(ids[i:i + step], pixels[i:i + step]) for i in range(0, len(ids), step)])

    def _encode(self, ids, pixels: np.ndarray) -> np.ndarray:
        import torch

        if self.probe is not None:
            self.probe(list(ids))
        device = self.model.device
        if device.type == "cuda":
            # uint8 (4x smaller than float) copied once into pinned memory, converted on the GPU.
            px = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
            px.numpy()[...] = pixels
            px = px.to(device, non_blocking=True)
        else:  # no copy here: to(cpu) is a no-op and to_model_input's .float() copies
            px = as_tensor(pixels).to(device)
        return self.model.encode(to_model_input(px)).reshape(len(ids), -1).cpu().numpy()

    def __call__(self, batch: dict) -> dict:
        n = len(batch["image_id"])
        codes = np.zeros((n, cache_mod.CODES), np.uint16)
        stage, message = list(batch["stage"]), list(batch["message"])
        retried = np.zeros(n, np.int8)  # 1: this image's first encoder call failed (the summary counts them)
        idx = np.flatnonzero([s == OK for s in stage])
        if len(idx):
            # The usual batch has no failure: no gather copy of its pixels.
            pixels = batch["pixels"] if len(idx) == n else batch["pixels"][idx]
            try:
                codes[idx] = self._chunks(batch["image_id"][idx], pixels)
            except Exception as exc:  # noqa: BLE001 - find which image(s) broke the batch
                retried[idx] = 1
                self._bisect(batch, idx, exc, codes, stage, message)
        return {"image_id": batch["image_id"], "path": batch["path"], "codes": codes,
                "stage": np.array(stage, dtype=object), "message": np.array(message, dtype=object),
                "retried": retried}

    def _bisect(self, batch: dict, idx: np.ndarray, exc: Exception, codes, stage, message) -> None:
        """Encode a failed batch again in halves, down to single images: a bad image costs about
        2*log2(batch) calls, not one per image, and a batch too big for the device (out of memory)
        goes through in smaller pieces instead of image by image."""
        if len(idx) == 1:
            stage[idx[0]], message[idx[0]] = "encode", f"{type(exc).__name__}: {exc}"
            return
        if "out of memory" in str(exc).lower():
            import torch

            torch.cuda.empty_cache()  # the failed attempt's blocks, before a smaller one tries
            # Later batches go in pieces this size from the start instead of failing first.
            self.limit = min(self.limit or len(idx), max(1, len(idx) // 2))
        for part in (idx[: len(idx) // 2], idx[len(idx) // 2:]):
            try:
                codes[part] = self._encode(batch["image_id"][part], batch["pixels"][part])
            except Exception as inner:  # noqa: BLE001
                self._bisect(batch, part, inner, codes, stage, message)


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
    probe: object = None              # called with the image_ids of every encoder call (tests)
    model: object = None              # builds the model instead of load_vqgan (benchmarks: sample.null_vqgan)
    compile: bool = False             # torch.compile the encoder on GPUs (~25 s once per actor)
    raw_root: Path | None = None      # where the raw dataset folders are now, if moved since `convert`


def _init_ray(address: str | None) -> bool:
    """Join `address`, or start embedded local Ray; True if we started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, configure_logging=True)
    return True


def _dataset(todo: pd.DataFrame, opts: Options):
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours is the one bar
    ctx.print_on_execution_start = False
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    if gpus:
        size, batch = opts.actors or gpus, opts.batch_size or 256
        read_args, enc_args, threads = {"num_cpus": 1}, {"num_cpus": 1, "num_gpus": 1}, 1
    else:
        threads = opts.cpus_per_actor or min(4, cpus)
        size, batch = opts.actors or max(1, cpus // threads), opts.batch_size or 32
        read_args = enc_args = {"num_cpus": threads}  # equal resources -> Ray fuses read into the actor
    rows = read_rows(len(todo), batch, cpus)
    # Input blocks are built in the driver: from_arrow would start a remote task per block just to
    # read metadata, and from_pandas' splitting breaks on pandas 3.
    ds = ray.data.from_items(todo.to_dict("records"), override_num_blocks=max(1, -(-len(todo) // rows)))
    # One read task per input block (batch_size=None: no bundling), `rows` images each.
    ds = ds.map_batches(read_batch, batch_size=None, batch_format="numpy", **read_args)
    return ds.map_batches(
        Encoder, batch_size=batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size),
        fn_constructor_args=(opts.vqgan, opts.ckpt, opts.trust_checkpoint, threads, opts.probe, opts.model,
                             opts.compile), **enc_args)


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
        self.encoded = self.ledgered = self.retried = 0

    def add(self, batch: dict) -> None:
        self.retried += int(batch["retried"].sum())
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


def tokenize(manifest: Path, cache: Path, opts: Options, progress=None) -> dict:
    """Encode what the cache lacks; return the counts (unique images == cached + ledgered)."""
    from facecorpus.vqgan import load_vqgan

    identity = (opts.model or load_vqgan)(opts.vqgan, opts.ckpt, trust_checkpoint=opts.trust_checkpoint).identity
    cache = cache_mod.open_cache(Path(cache), identity, POLICY)
    images = plan(Path(manifest), opts.raw_root)
    before = cache_mod.cached_ids(cache)
    todo = images[~images["image_id"].isin(before)].reset_index(drop=True)
    sink = _Sink(cache, identity, opts.part_rows)
    t0 = time.perf_counter()
    if len(todo):
        started = _init_ray(opts.ray_address)
        try:
            task = progress.add_task("tokenize", total=len(todo)) if progress else None
            for batch in _dataset(todo, opts).iter_batches(batch_size=None, batch_format="numpy"):
                sink.add(batch)
                if progress:
                    progress.advance(task, len(batch["image_id"]))
            sink.flush()
        finally:
            if started:
                import ray

                ray.shutdown()
    return summarize(cache, images, before, sink, time.perf_counter() - t0, identity)


def summarize(cache: Path, images: pd.DataFrame, before: set, sink: _Sink, seconds: float, identity: dict) -> dict:
    wanted = set(images["image_id"])
    cached = cache_mod.cached_ids(cache) & wanted
    failures = [r for r in ledger.read_ledger(cache, cached) if r["image_id"] in wanted]
    by_stage = {s: sum(r["stage"] == s for r in failures) for s in ledger.STAGES}
    out = {"unique_images": len(wanted), "cached_before": len(before & wanted), "encoded": sink.encoded,
           "ledgered_now": sink.ledgered,
           "encode_retried": sink.retried, "cached": len(cached), "ledgered": len(failures),
           **{f"ledgered_{s}": n for s, n in by_stage.items()}, "seconds": round(seconds, 2),
           "images_per_s": round(sink.encoded / seconds, 1) if seconds and sink.encoded else 0.0,
           "vqgan": identity["name"]}
    out["accounted"] = out["unique_images"] == out["cached"] + out["ledgered"]
    return out
