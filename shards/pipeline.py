"""`facecorpus tokenize`: every unique image of a manifest, encoded once, on Ray Data.

    manifest -> unique image_ids not in the cache -> [Ray tasks] read, decode, preprocess (uint8)
             -> [actor pool, one GPU per actor when there are GPUs] VQGAN encode
             -> driver: codes appended to the cache, failures to the ledger, part by part

Ray Data streams with backpressure, so the work in flight is bounded by its object-store budget and
memory stays flat however large the manifest is. On CPU the read stage carries the same resources
as the encoder, so Ray fuses both into the actor (no image crosses processes); with GPUs the
resources differ, Ray keeps them apart and the CPUs decode while the GPUs encode.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import ledger

from facecorpus import manifest as mf
from facecorpus.preprocess import (
    POLICY,
    SIZE,
    load_image,
    preprocess_uint8,
    to_model_input,
)

OK = ""  # `stage` of a row that has not failed


def plan(manifest: Path) -> pd.DataFrame:
    """One row per unique image_id: absolute path and face box ("x0,y0,x1,y1" or ""). The first
    record by key names the file, so the plan does not depend on partition order."""
    table = mf.read_table(Path(manifest), columns=["key", "dataset", "image", "image_id", "bbox"])
    df = table.to_pandas().sort_values("key", kind="stable").drop_duplicates("image_id")
    roots = {d: mf.image_root(manifest, d) for d in df["dataset"].unique()}
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

    A batch that fails is retried image by image, so one bad image costs one ledger row, not a batch.
    `probe(image_ids)` runs before each encoder call (tests count calls and inject failures)."""

    def __init__(self, vqgan: str, ckpt: str | None, trust_checkpoint: bool, threads: int, probe=None):

        from facecorpus.vqgan import load_vqgan

        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, threads))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_vqgan(vqgan, ckpt, device=device, trust_checkpoint=trust_checkpoint)
        self.probe = probe

    def _encode(self, ids, pixels) -> np.ndarray:
        if self.probe is not None:
            self.probe(list(ids))
        px = np.asarray(pixels)
        px = torch.from_numpy(px if px.flags.writeable else px.copy())
        if self.model.device.type == "cuda":  # ship uint8 (4x smaller), convert on the GPU
            px = px.pin_memory().to(self.model.device, non_blocking=True)
        return self.model.encode(to_model_input(px)).reshape(len(ids), -1).cpu().numpy()

    def __call__(self, batch: dict) -> dict:
        n = len(batch["image_id"])
        codes = np.zeros((n, cache_mod.CODES), np.uint16)
        stage, message = list(batch["stage"]), list(batch["message"])
        todo = np.array([s == OK for s in stage], bool)
        if todo.any():
            idx = np.flatnonzero(todo)
            try:
                codes[idx] = self._encode(batch["image_id"][idx], batch["pixels"][idx])
            except Exception:  # noqa: BLE001 - find which image(s) broke the batch
                for i in idx:
                    try:
                        codes[i] = self._encode(batch["image_id"][i:i + 1], batch["pixels"][i:i + 1])[0]
                    except Exception as exc:  # noqa: BLE001
                        stage[i], message[i] = "encode", f"{type(exc).__name__}: {exc}"
        return {"image_id": batch["image_id"], "path": batch["path"], "codes": codes,
                "stage": np.array(stage, dtype=object), "message": np.array(message, dtype=object)}


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
    # One input block per batch. from_items builds blocks in the driver; from_arrow would start a
    # remote task per block just to read metadata, and from_pandas' splitting breaks on pandas 3.
    ds = ray.data.from_items(todo.to_dict("records"), override_num_blocks=max(1, -(-len(todo) // batch)))
    ds = ds.map_batches(read_batch, batch_size=batch, batch_format="numpy", **read_args)
    return ds.map_batches(
        Encoder, batch_size=batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size),
        fn_constructor_args=(opts.vqgan, opts.ckpt, opts.trust_checkpoint, threads, opts.probe), **enc_args)


class _Sink:
    """Driver side: buffer results, write a cache part and a ledger part every `part_rows` rows."""

    def __init__(self, cache: Path, identity: dict, part_rows: int):
        self.cache, self.identity, self.part_rows = cache, identity, part_rows
        self.ids, self.codes, self.failed = [], [], []
        self.encoded = self.ledgered = 0

    def add(self, batch: dict) -> None:
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

    identity = load_vqgan(opts.vqgan, opts.ckpt, trust_checkpoint=opts.trust_checkpoint).identity
    cache = cache_mod.open_cache(Path(cache), identity, POLICY)
    images = plan(Path(manifest))
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
           "ledgered_now": sink.ledgered, "cached": len(cached), "ledgered": len(failures),
           **{f"ledgered_{s}": n for s, n in by_stage.items()}, "seconds": round(seconds, 2),
           "images_per_s": round(sink.encoded / seconds, 1) if seconds and sink.encoded else 0.0,
           "vqgan": identity["name"]}
    out["accounted"] = out["unique_images"] == out["cached"] + out["ledgered"]
    return out
