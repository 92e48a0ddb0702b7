"""A small web set as img2dataset 1.47.0 leaves it (`webdataset` output format), generated without network.

What this writes is what
    img2dataset --url_list urls.parquet --input_format parquet --url_col url --caption_col caption
      --save_additional_columns '["face_box"]' --output_format webdataset --image_size 128
      --resize_mode border --number_sample_per_shard 20
leaves for URLs of face pictures (tests/data/img2dataset has real outputs of the same layout): per
shard NNNNN.tar (KEY.jpg, KEY.json, KEY.txt per success, members sorted per sample), NNNNN.parquet
(one row per URL, failures included, img2dataset's columns and types) and NNNNN_stats.json; keys are
img2dataset's (shard id * 10^ceil(log10 N) + index). Each "downloaded" picture is drawn by the demo's
face drawer from a look its caption states, at a face box given relative to the picture (as
FaceCaption-15M gives one), then resized and padded into 128 x 128 the way `border` does. A few URLs
fail as web URLs do (404, 403, a timeout, an undecodable body) and one row has no detected face.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from facecorpus import rawtar
from facecorpus.atomic import atomic_write
from facecorpus.converters.samples.faces import BALD, HAIR, MOUTHS, Look, draw
from facecorpus.summary import nest

IMAGE_SIZE = 128
SIZES = ((160, 120), (120, 160), (200, 200), (180, 140), (96, 128))  # the "downloaded" pictures
FAILURES = {3: ("failed_to_download", "HTTP Error 404: Not Found"), 11: ("failed_to_download", "timed out"),
            17: ("failed_to_resize", "Image decoding error"), 26: ("failed_to_download", "HTTP Error 403: Forbidden")}
NO_FACE = 8  # a row whose face box column is null (no face detected)
# What `convert img2dataset` is told for this set: img2dataset records neither the resize mode nor the terms.
OPTIONS = {"licence": "CC-BY-4.0 (generated sample data)", "bbox_column": "face_box", "bbox_format": "relative",
           "resize_mode": "border"}
SCHEMA = pa.schema([("face_box", pa.list_(pa.float64())), ("caption", pa.string()), ("url", pa.string()),
                    ("key", pa.string()), ("status", pa.string()), ("error_message", pa.string()),
                    ("width", pa.int32()), ("height", pa.int32()), ("original_width", pa.int32()),
                    ("original_height", pa.int32()), ("exif", pa.string()), ("sha256", pa.string())])


def key(shard: int, index: int, per_shard: int) -> str:
    digits = math.ceil(math.log10(per_shard))
    return f"{shard * 10 ** digits + index:0{digits + 5}d}"


def caption(look: Look, female: bool) -> str:
    """A caption that states the look (faces.look_from_captions reads it back)."""
    who = "A woman" if female else "A man"
    parts = [f"{who} who is bald" if look.hair == BALD else
             f"{who} with {'long' if look.long_hair else 'short'} {'grey' if look.hair == 'gray' else look.hair} hair"]
    parts += [text for on, text in ((look.mouth == "smile", "smiling"), (look.mouth == "open", "the mouth wide open"),
                                    (look.eyeglasses, "wearing glasses"), (look.beard, "with a beard"),
                                    (look.mustache, "a moustache"), (look.hat, "a hat")) if on]
    return ", ".join(parts) + "."


def some_look(rng: np.random.Generator) -> tuple[Look, bool]:
    female = bool(rng.random() < 0.5)
    hair = str(rng.choice([*HAIR, BALD] if not female else list(HAIR)))
    mouth = str(rng.choice([m for m in MOUTHS if m != "frown"]))
    return Look(hair=hair, long_hair=hair != BALD and bool(rng.random() < (0.7 if female else 0.2)), mouth=mouth,
                eyeglasses=bool(rng.random() < 0.3), beard=not female and bool(rng.random() < 0.3),
                mustache=not female and bool(rng.random() < 0.2), hat=bool(rng.random() < 0.2)), female


def border(img: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """img2dataset's `border` resize: longer side to `size`, then centred on white."""
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = Image.new("RGB", (size, size), (255, 255, 255))
    resample = Image.Resampling.LANCZOS if scale > 1 else Image.Resampling.BOX
    out.paste(img.resize((nw, nh), resample), (int((size - nw) / 2), int((size - nh) / 2)))
    return out


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)  # img2dataset's quality
    return buf.getvalue()


def sample(i: int, rng: np.random.Generator, image: bytes | None) -> tuple[dict, bytes | None]:
    """The parquet row of URL `i` and its stored JPEG (None for a failure); `image` stands in for every
    picture when given (benchmarks: no drawing)."""
    size = SIZES[i % len(SIZES)]
    look, female = some_look(rng)
    w, h = size
    box = (round(w * rng.uniform(0.15, 0.3)), round(h * rng.uniform(0.1, 0.25)),
           round(w * rng.uniform(0.7, 0.85)), round(h * rng.uniform(0.75, 0.9)))
    row = {"face_box": None if i == NO_FACE else [box[0] / w, box[1] / h, box[2] / w, box[3] / h],
           "caption": caption(look, female), "url": f"https://faces.example/{i:06d}.jpg"}
    if i in FAILURES:
        return {**row, "status": FAILURES[i][0], "error_message": FAILURES[i][1]}, None
    downloaded = image or jpeg(draw(size, [(look, box)], int(rng.integers(2**32))))
    stored = image or jpeg(border(Image.open(io.BytesIO(downloaded))))
    return {**row, "status": "success", "error_message": None, "width": IMAGE_SIZE, "height": IMAGE_SIZE,
            "original_width": w, "original_height": h, "exif": "{}",
            "sha256": hashlib.sha256(downloaded).hexdigest()}, stored


def write_shard(root: Path, shard: int, rows: list[dict], images: list[bytes | None]) -> None:
    name = f"{shard:05d}"
    members = []
    for row, data in zip(rows, images):
        if data is not None:  # webdataset's TarWriter sorts a sample's members: jpg, json, txt
            members += [(f"{row['key']}.jpg", data), (f"{row['key']}.json", json.dumps(row, indent=4).encode()),
                        (f"{row['key']}.txt", str(row["caption"]).encode())]
    rawtar.write(root / f"{name}.tar", members)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), root / f"{name}.parquet")
    status = [r["status"] for r in rows]
    stats = {"count": len(rows), "successes": status.count("success"),
             "failed_to_download": status.count("failed_to_download"),
             "failed_to_resize": status.count("failed_to_resize"), "duration": 0.0, "start_time": 0.0, "end_time": 0.0,
             "status_dict": dict(sorted({m: [r["error_message"] or "success" for r in rows].count(m)
                                         for m in {r["error_message"] or "success" for r in rows}}.items()))}
    atomic_write(root / f"{name}_stats.json", json.dumps(stats, indent=4))


def write(root: Path, seed: int = 0, n: int = 40, per_shard: int = 20, image: bytes | None = None) -> dict:
    """Write the output folder under `root`; return what a correct conversion with OPTIONS gives."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for shard in range(math.ceil(n / per_shard)):
        rows, images = [], []
        for index in range(min(per_shard, n - shard * per_shard)):
            row, data = sample(shard * per_shard + index, rng, image)
            rows.append({**row, "key": key(shard, index, per_shard)})
            images.append(data)
        write_shard(root, shard, rows, images)
    lost = Counter((status, message.split(":")[0] if message.startswith("HTTP") else message)
                   for i, (status, message) in FAILURES.items() if i < n)
    no_face = int(NO_FACE < n and NO_FACE not in FAILURES)
    return {"rows": n, "records": n - sum(lost.values()) - no_face,
            "filtered": {"face box missing": no_face} if no_face else {}, "unavailable": nest(lost)}
