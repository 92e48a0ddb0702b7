"""FS2K (Fan et al., 2022): 2,104 photo-sketch pairs with facial attributes; one record per photo.

Quirks (docs/datasets.md, FS2K):
- Each split is one JSON array on a single line: `anno_train.json` (1,058) and `anno_test.json` (1,046);
  the file an entry sits in is its split.
- Several booleans are inverted relative to their names: `hair`, `earring`, `smile` and `frontal_face`
  use 0 for "present" (with hair, with earring, smiling, head within 30 degrees of frontal).
- `lip_color` / `eye_color` are float mean RGB values; they become the nearest CSS3 name as words,
  computed on the unrounded floats (rounding first would add error: it changes 43 of the 4,208 names).
- `skin_color` is a point [x, y] in the face, not a colour (the README calls it `skin_patch`): unused.
- `style` is the sketch's drawing style; the record describes the photo, so it stays out of the text.
- `image_name` has no extension and photos are `.jpg` except `photo3/image0449.JPG`: the extension is
  resolved on disk. Without a `photo/` folder (annotations only) `.jpg` is assumed and a note says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from facecorpus import colors
from facecorpus.converters.base import (
    BadRow,
    Context,
    Failure,
    Filtered,
    RawFormatError,
    Where,
    guard,
    image_path,
    read_text,
    require,
)
from facecorpus.excerpt import quote
from facecorpus.records import Record, attributes, local_id

NAME = "fs2k"
DOWNLOAD = "https://github.com/DengPingFan/FS2K"
SPLIT_FILES = {"anno_train.json": "train", "anno_test.json": "test"}
PHOTO_DIR = "photo"
KEYS = ("image_name", "skin_color", "lip_color", "eye_color", "hair", "hair_color", "gender", "earring", "smile",
        "frontal_face", "style")
IMAGE_NAME = re.compile(r"photo[123]/image\d{4}")
EXTENSIONS = (".jpg", ".png", ".jpeg")  # tried case-insensitively, in this order (as tools/vis.py does)

# Code tables as the README gives them. Inverted booleans (with `hair`): 0 means the attribute is present.
PRESENT_IF_ZERO = {"earring": "earring", "smile": "smile", "frontal_face": "frontal face"}
HAIR_COLOR = {0: "brown", 1: "black", 2: "red", 3: "no hair", 4: "golden"}
GENDER = {0: "male", 1: "female"}
STYLES = (0, 1, 2)


def read_entries(path: Path, raw: Path) -> list:
    """The JSON array of one annotation file (an HTML page or broken JSON is refused as a whole)."""
    text = read_text(path, raw, DOWNLOAD)
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RawFormatError(Where(path.name, exc.lineno), f"not valid JSON ({exc.msg} at column {exc.colno}); "
                             "a truncated download?", DOWNLOAD) from None
    if not isinstance(entries, list):
        raise RawFormatError(path.name, f"expected a JSON array of entries, got {type(entries).__name__}", DOWNLOAD)
    if not entries:
        raise RawFormatError(path.name, "holds no entries: a failed or truncated download?", DOWNLOAD)
    return entries


def photo_index(raw: Path) -> dict[str, str] | None:
    """`photo1/image0110` -> `photo/photo1/image0110.jpg` for every photo on disk; None without `photo/`."""
    root = raw / PHOTO_DIR
    if not root.is_dir():
        return None
    found = [p for p in root.glob("photo*/*") if p.suffix.lower() in EXTENSIONS]
    index: dict[str, str] = {}
    # Should one name exist with two extensions, the first in EXTENSIONS wins (as the official tools try them).
    for path in sorted(found, key=lambda p: (p.parent.name, p.stem, EXTENSIONS.index(p.suffix.lower()), p.name)):
        index.setdefault(f"{path.parent.name}/{path.stem}", path.relative_to(raw).as_posix())
    return index


def code(entry: dict, key: str, table) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int) or value not in table:
        raise BadRow(f"{key} = {quote(value)} is not one of the codes {sorted(table)}")
    return value


def color(entry: dict, key: str) -> str:
    """The entry's [R, G, B] floats as the nearest CSS3 colour name, in words."""
    value = entry[key]
    if not isinstance(value, list) or len(value) != 3 or \
            not all(isinstance(c, int | float) and not isinstance(c, bool) and 0 <= c <= 255 for c in value):
        raise BadRow(f"{key} = {quote(value)} is not an [R, G, B] list of numbers in 0..255")
    return colors.nearest_color(value)


def build(raw: Path, entry, split: str, photos: dict[str, str] | None) -> Record:
    if not isinstance(entry, dict) or set(entry) != set(KEYS):
        raise BadRow(f"expected an object with the keys {', '.join(KEYS)}")
    name = entry["image_name"]
    if not isinstance(name, str) or not IMAGE_NAME.fullmatch(image_path(raw, name)):
        raise BadRow(f"image_name {quote(name)} is not photoK/imageNNNN")
    hair, hair_color = code(entry, "hair", (0, 1)), code(entry, "hair_color", HAIR_COLOR)
    if (hair == 1) != (hair_color == 3):
        raise BadRow(f"hair = {hair} (0 = with hair) contradicts hair_color = {hair_color} (3 = no hair)")
    code(entry, "style", STYLES)
    if photos is None:
        image = f"{PHOTO_DIR}/{name}.jpg"
    elif name in photos:
        image = photos[name]
    else:
        raise BadRow(f"no image {PHOTO_DIR}/{name}.{{jpg,png,jpeg}} (any case) under the raw root")
    labels = {"gender": GENDER[code(entry, "gender", GENDER)], "hair": hair == 0,  # 0 = with hair
              "hair color": HAIR_COLOR[hair_color],
              "lip color": color(entry, "lip_color"), "eye color": color(entry, "eye_color")}
    for key, words in PRESENT_IF_ZERO.items():
        labels[words] = code(entry, key, (0, 1)) == 0  # 0 = with earring / smiling / within 30 degrees
    return attributes(NAME, name, image_path(raw, image), labels, image_id=f"{NAME}/{local_id(name)}",
                      source_split=split)


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    files = [(require(raw, name, DOWNLOAD), split) for name, split in SPLIT_FILES.items()]
    photos = photo_index(raw)
    if photos is None:
        ctx.note(f"no {PHOTO_DIR}/ folder: image paths assume .jpg (the download has photo3/image0449.JPG)")
    for path, split in files:
        for n, entry in enumerate(read_entries(path, raw), start=1):  # the array is one line: "line" = entry n
            yield guard(Where(path.name, n), lambda: build(raw, entry, split, photos))
