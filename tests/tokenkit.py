"""Test and benchmark helpers for tokenization: a generated manifest with real image files, a
reference tokenizer without Ray, and stand-in encoders injected through `tokenize(load_model=...)`.

Images are drawn faces (an ellipse, eyes, a mouth on a coloured background) saved as JPEG/PNG in
several PIL modes and sizes; some records carry a face box; `broken` adds the failure cases the
ledger must catch: a missing file, a zero-byte file, a truncated JPEG and a file that is not an image.

Ray's workers import neither the tests folder nor this module by name, so the stand-ins (which Ray
ships to its encoder actors) are pickled by value: see the cloudpickle registration at the end.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facecorpus import manifest as mf
from facecorpus import records
from facecorpus.codes import FFHQ_F16
from facecorpus.preprocess import POLICY, to_model_input
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import ledger
from facecorpus.shards.plan import plan
from facecorpus.shards.reading import read_one
from facecorpus.vqgan import load_vqgan

BROKEN = ("missing", "empty", "truncated", "garbage")


def draw_face(rng: random.Random, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(img)
    skin = tuple(rng.randrange(120, 256) for _ in range(3))
    d.ellipse((w * 0.2, h * 0.15, w * 0.8, h * 0.9), fill=skin)
    for ex in (0.38, 0.62):
        d.ellipse((w * ex - 6, h * 0.4 - 4, w * ex + 6, h * 0.4 + 4), fill=(20, 20, 20))
    d.arc((w * 0.35, h * 0.55, w * 0.65, h * 0.75), 0, 180, fill=(150, 30, 30), width=3)
    return img.convert(mode)


def _save(img: Image.Image, path: Path) -> None:
    if img.mode in ("RGB", "L", "CMYK"):
        img.save(path.with_suffix(".jpg") if path.suffix != ".jpg" else path, quality=90)
    else:
        img.save(path)


def _write_broken(raw: Path, kind: str, rng: random.Random) -> str:
    name = f"img/{kind}.jpg"
    path = raw / name
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        draw_face(rng, (178, 218)).save(path, quality=90)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not an image\n" * 50)
    return name  # "missing": never written


def make_manifest(root: Path, n_images: int, seed: int = 0, broken: bool = True, captions: bool = True) -> Path:
    """root/raw/<dataset>/img/* and root/manifest/{celeba,affectnet}.parquet + summary.json.

    Every image gets an attributes record; with `captions`, every third one also gets a caption
    (several records per image, as in the real corpus). Returns the manifest folder."""
    rng = random.Random(seed)
    by_ds: dict[str, list] = {"celeba": [], "affectnet": []}
    raws = {}
    splits = ("train", "train", "train", "val", "test")
    for ds in by_ds:
        raws[ds] = root / "raw" / ds
        (raws[ds] / "img").mkdir(parents=True, exist_ok=True)
    names = [f"i{i:06d}" for i in range(n_images)] + (list(BROKEN) if broken else [])
    for i, local in enumerate(names):
        ds = "affectnet" if i % 4 == 3 else "celeba"
        if local in BROKEN:
            image = _write_broken(raws[ds], local, rng)
        else:
            mode = ("RGB", "L", "RGBA", "P", "CMYK")[i % 5]
            size = (178, 218) if ds == "celeba" else (rng.randrange(200, 400), rng.randrange(200, 400))
            ext = ".jpg" if mode in ("RGB", "L", "CMYK") else ".png"
            image = f"img/{local}{ext}"
            _save(draw_face(rng, size, mode), raws[ds] / image)
        bbox = None
        if ds == "affectnet" and local not in BROKEN:
            w, h = Image.open(raws[ds] / image).size
            bbox = [w // 5, h // 6, w * 4 // 5, h * 9 // 10]
        labels = {"gender": rng.choice(["male", "female"])} if ds == "celeba" else {"expression": rng.choice(["happy", "sad"])}
        rec = records.attributes(ds, local, image, labels, image_id=f"{ds}/{local}", bbox=bbox)
        rec.split = splits[i % len(splits)]
        by_ds[ds].append(rec)
        if captions and i % 3 == 0:
            cap = records.caption(ds, local, image, f"a face number {i} smiling", 0, image_id=f"{ds}/{local}")
            cap.split = rec.split
            by_ds[ds].append(cap)
    out = root / "manifest"
    for ds, recs in by_ds.items():
        mf.write_partition(mf.to_table(recs), out, ds)
    summary = {"datasets": {ds: {"raw_dir": str(raws[ds].resolve()), "records": len(recs)} for ds, recs in by_ds.items()}}
    (out / mf.SUMMARY).write_text(json.dumps(summary, indent=2))
    return out


def write_manifest(root: Path, dataset: str, images: dict[str, str]) -> Path:
    """root/manifest for files already under root/raw/<dataset>/: one attributes record per
    {local id: image path relative to the dataset folder}. Returns the manifest folder."""
    recs = []
    for local, image in images.items():
        rec = records.attributes(dataset, local, image, {"gender": "female"}, image_id=f"{dataset}/{local}")
        rec.split = "train"
        recs.append(rec)
    out = root / "manifest"
    mf.write_partition(mf.to_table(recs), out, dataset)
    raw = (root / "raw" / dataset).resolve()
    (out / mf.SUMMARY).write_text(json.dumps({"datasets": {dataset: {"raw_dir": str(raw), "records": len(recs)}}}))
    return out


def pixels_digest(pixels: np.ndarray) -> str:
    """Names one preprocessed image (uint8 HWC), as the encoder receives it."""
    return hashlib.sha1(np.ascontiguousarray(pixels, np.uint8).tobytes()).hexdigest()


def image_digests(manifest: Path, size: int = FFHQ_F16.resolution) -> dict[str, str]:
    """image_id -> digest of its preprocessed pixels, for every image of `manifest` that reads."""
    out = {}
    for image_id, path, root, bbox in plan(manifest).itertuples(index=False):
        read = read_one(path, root, bbox, size)
        if read.pixels is not None:
            out[image_id] = pixels_digest(read.pixels)
    return out


class ProbedVQGAN:
    """A `load_model` that loads the real VQGAN and watches its encoder: every image it is asked to
    encode is appended to `log` (by pixels_digest; the actors are other processes, so a file), and a
    call holding an image whose digest is in `fail` raises, as an encoder failure would."""

    def __init__(self, log: Path, fail: set[str] = frozenset()):
        self.log, self.fail = str(log), frozenset(fail)

    def __call__(self, *args, **kwargs):
        return _Probed(load_vqgan(*args, **kwargs), self.log, self.fail)

    def calls(self) -> list[str]:
        path = Path(self.log)
        return path.read_text().split() if path.exists() else []


class _Probed:
    def __init__(self, model, log: str, fail: frozenset):
        self.model, self.log, self.fail = model, log, fail

    def __getattr__(self, name):  # identity, code_grid, device... are the real model's
        return getattr(self.model, name)

    def encode(self, x):
        import torch

        pixels = ((x.float() + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).movedim(1, -1).cpu().numpy()
        digests = [pixels_digest(p) for p in pixels]
        with open(self.log, "a") as f:
            f.write("".join(f"{d}\n" for d in digests))
        if self.fail.intersection(digests):
            raise RuntimeError(f"injected encoder failure for {len(self.fail.intersection(digests))} image(s)")
        return self.model.encode(x)


class NullVQGAN:
    """A stand-in encoder model for benchmarks of the pipeline alone: `encode` returns zero codes at
    once, so a run measures reading, decoding, preprocessing, moving pixels between processes and
    writing the cache. Its device is `meta`: the uint8 -> float conversion that a GPU does in
    microseconds is free here too, instead of costing this machine's CPU. Its identity names it, so a
    cache it wrote can never pass for a real VQGAN's."""

    fast = False
    code_grid = FFHQ_F16

    def __init__(self):
        self.identity = {"name": "null-encoder", "config_sha256": "null", "checkpoint_sha256": "null",
                         **FFHQ_F16.as_dict()}

    @property
    def device(self):
        import torch

        return torch.device("meta")

    def encode(self, x):
        import torch

        return torch.zeros((x.shape[0], *self.code_grid.shape), dtype=torch.int64)


def null_vqgan(*_args, **_kwargs) -> NullVQGAN:
    """tokenize(load_model=null_vqgan): builds the stand-in where load_vqgan would load a VQGAN."""
    return NullVQGAN()


def tokenize_in_process(manifest: Path, cache: Path, vqgan: str = "tiny-f16", batch_size: int = 32) -> dict:
    """The reference tokenizer without Ray: same plan, reading, preprocessing, cache and ledger, one
    process. Tests compare the Ray pipeline's output with it."""
    model = load_vqgan(vqgan)
    grid = model.code_grid
    cache = cache_mod.open_cache(Path(cache), model.identity, POLICY)
    done = cache_mod.cached_ids(cache)
    todo = plan(Path(manifest))
    todo = todo[~todo["image_id"].isin(done)]
    ok_ids, pixels, failed = [], [], []
    for image_id, path, root, bbox in todo.itertuples(index=False):
        read = read_one(path, root, bbox, grid.resolution)
        if read.pixels is None:
            failed.append({"image_id": image_id, "path": path, "stage": read.stage, "message": read.message})
        else:
            ok_ids.append(image_id)
            pixels.append(read.pixels)
    codes = [model.encode(to_model_input(np.stack(pixels[i:i + batch_size]))).reshape(-1, grid.count).numpy()
             for i in range(0, len(pixels), batch_size)]
    if ok_ids:
        cache_mod.write_part(cache / "codes", cache_mod.codes_table(ok_ids, np.concatenate(codes), model.identity))
    ledger.append(cache, failed)
    return {"encoded": len(ok_ids), "ledgered": len(failed)}


def _ship_by_value() -> None:
    """Ray pickles classes by reference unless told otherwise; its workers could not import this
    module (it is on the tests' sys.path only), so they receive its code instead. Without Ray (a lent
    GPU machine, `--engine local`) nothing ships them anywhere."""
    try:
        from ray import cloudpickle
    except ImportError:
        return

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


_ship_by_value()
