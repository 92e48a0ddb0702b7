"""CelebA: 40 binary attributes per aligned face, the person's identity and the official partition.

Raw layout (docs/datasets.md, CelebA): the official Google-Drive folder has `Anno/list_attr_celeba.txt`,
`Anno/identity_CelebA.txt`, `Eval/list_eval_partition.txt` and `Img/img_align_celeba.zip`;
torchvision flattens the same files into one folder beside `img_align_celeba/`. Both are accepted.

Quirks:
- all label files are ASCII with CRLF line endings; read with universal newlines.
- `list_attr_celeba.txt`: line 1 the image count, line 2 the 40 names with a trailing space, then
  `000001.jpg -1  1  1 ...` with values right-aligned in 3-character fields: split on runs of
  whitespace, never on single spaces. Values are -1 / 1 (negative / positive), never 0.
- a failed Google-Drive download leaves an HTML page under the label file's name: refused, as is
  any file whose first line is not the integer count (docs/datasets.md, CelebA).
- `list_bbox_celeba.txt` boxes are in the in-the-wild `img_celeba/` images, not the aligned ones we
  use (torchvision docstring, pytorch/vision#9008), so `bbox` is null.
- identities are consistent with the partition (no person spans two splits); the partition maps
  0/1/2 to train/val/test.
- `Male` becomes `gender: male|female` to share the label name with the other datasets; the other
  39 keep CelebA's names as words (`Wearing_Hat` -> `wearing hat`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from facecorpus.converters.base import (
    BadRow,
    Context,
    Failure,
    Filtered,
    Overlong,
    RawFormatError,
    Where,
    find,
    guard,
    lines,
    text_lines,
)
from facecorpus.excerpt import quote
from facecorpus.records import Record, make_key, validate
from facecorpus.textproto import attribute_name, to_text

NAME = "celeba"
DOWNLOAD = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
ATTR_PATHS = ("Anno/list_attr_celeba.txt", "list_attr_celeba.txt")
IDENTITY_PATHS = ("Anno/identity_CelebA.txt", "identity_CelebA.txt")
PARTITION_PATHS = ("Eval/list_eval_partition.txt", "list_eval_partition.txt")
# Unzipped aligned images: torchvision's flat layout, then the official Img/ folder; PNG variant last.
IMAGE_DIRS = (("img_align_celeba", ".jpg"), ("Img/img_align_celeba", ".jpg"),
              ("img_align_celeba_png", ".png"), ("Img/img_align_celeba_png", ".png"))
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
PARTITIONS = {"0": "train", "1": "val", "2": "test"}
VALUES = frozenset(("-1", "1"))
IMAGE_RE = re.compile(r"\d{6}\.jpg")  # every label file names the aligned JPEGs, even for the PNG variant
PAIR_RE = re.compile(r"[ \t]*(\d{6}\.jpg)[ \t]+(\S+)[ \t]*")
MALE = ATTRIBUTES.index("Male")  # becomes the first label, `gender: male|female`
OTHERS = tuple(attribute_name(a) for a in ATTRIBUTES if a != "Male")


def read_partition(path: Path) -> dict[str, str]:
    """{"celeba/000001": "train" | "val" | "test"} from `list_eval_partition.txt` (`<file> <0|1|2>`)."""
    table = _read_pairs(path, set(PARTITIONS))
    return {f"celeba/{name[:6]}": PARTITIONS[code] for name, code in table.items()}


def read_identity(path: Path) -> dict[str, str]:
    """{"000001.jpg": "2880"} from `identity_CelebA.txt` (`<file> <identity>`, identities 1..10,177)."""
    return _read_pairs(path, None)


def _read_pairs(path: Path, allowed: set[str] | None) -> dict[str, str]:
    """A two-column CelebA list `<NNNNNN.jpg> <value>`; a lookup table, so any bad line raises."""
    out: dict[str, str] = {}
    for n, line in text_lines(path, path.name, DOWNLOAD):  # no Where per line: 202,599 lines, errors are rare
        if not line and not isinstance(line, Overlong):
            continue
        m = None if isinstance(line, Overlong) else PAIR_RE.fullmatch(line)
        if m is None:
            problem = getattr(line, "problem", f"expected '<NNNNNN.jpg> <value>', found {quote(line.strip())}")
        elif not _ok(m[2], allowed):
            problem = f"unknown value {quote(m[2])} for {m[1]}"
        elif m[1] in out:
            problem = f"{m[1]} is listed twice"
        else:
            out[m[1]] = m[2]
            continue
        raise RawFormatError(Where(path.name, n), problem, DOWNLOAD)
    if not out:
        raise RawFormatError(path.name, "is empty: a failed or truncated download?", DOWNLOAD)
    return out


def _ok(value: str, allowed: set[str] | None) -> bool:
    return value in allowed if allowed is not None else value.isdigit() and int(value) > 0


def read_attributes(path: Path, raw: Path) -> tuple[int, list[tuple[Where, str]]]:
    """The announced image count and (where, line) of every data row of `list_attr_celeba.txt`."""
    numbered = lines(path, raw, DOWNLOAD)
    where, count = next(numbered)
    if where.line != 1 or not count.strip().isdigit():
        raise RawFormatError(Where(where.file, 1), f"first line {quote(count.strip())} is not the image count; not a "
                             "CelebA attribute file (a failed or different download?)", DOWNLOAD)
    where, header = next(numbered, (Where(where.file, 2), ""))
    if where.line != 2 or tuple(header.split()) != ATTRIBUTES:
        names = header.split() if where.line == 2 else []
        raise RawFormatError(Where(where.file, 2), f"expected CelebA's 40 attribute names, found {len(names)} names "
                             f"starting {quote(' '.join(names[:3]))}", DOWNLOAD)
    return int(count), list(numbered)


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    attr_path = find(raw, ATTR_PATHS, DOWNLOAD)
    identity = read_identity(find(raw, IDENTITY_PATHS, DOWNLOAD))
    partition = read_partition(find(raw, PARTITION_PATHS, DOWNLOAD))
    count, data = read_attributes(attr_path, raw)
    image_dir, suffix = _image_dir(raw, official=attr_path.parent.name == "Anno")
    first: dict[str, int] = {}  # image name -> the line that lists it first
    for where, line in data:
        if not isinstance(line, Overlong):
            first.setdefault(line.split(None, 1)[0], where.line)
    _note_gaps(ctx, attr_path.name, count, len(data), first.keys(), identity, partition)
    template = _template()
    for where, line in data:
        name = line.split(None, 1)[0] if line else None
        if name is not None and first[name] != where.line:  # a repeated image would be a duplicate record key
            yield Failure(where, f"{name} is listed again (first on line {first[name]})")
        else:
            yield guard(where, lambda: _build(line, identity, partition, image_dir, suffix, template), line)


def _build(line: str, identity: dict, partition: dict, image_dir: str, suffix: str, template: tuple) -> Record:
    fields = line.split()
    name, values = fields[0], fields[1:]
    if not IMAGE_RE.fullmatch(name):
        raise BadRow(f"image name {quote(name)} is not NNNNNN.jpg")
    if len(values) != len(ATTRIBUTES):
        raise BadRow(f"{name}: expected {len(ATTRIBUTES)} values, found {len(values)} (a truncated line?)")
    if not VALUES.issuperset(values):
        i = next(i for i, v in enumerate(values) if v not in VALUES)
        raise BadRow(f"{name}: {ATTRIBUTES[i]} is {quote(values[i])}, expected -1 or 1")
    local = name[:6]
    if name not in identity or f"celeba/{local}" not in partition:
        raise BadRow(f"{name} is missing from identity_CelebA.txt or list_eval_partition.txt")
    # CelebA writes -1 for negative and 1 for positive: map to False/True, never cast to 0/1.
    flags = [v == "1" for v in values]
    male, others = flags[MALE], flags[:MALE] + flags[MALE + 1:]
    prefix, pieces = template
    labels = {"gender": "male" if male else "female"}
    labels.update(zip(OTHERS, others))
    # Per-row textproto.to_text + validate's parse-back of 40 pairs would cost ~40 s on 202k rows; the
    # names and values are fixed, so the text is joined from pieces proven once in _template. The key,
    # image and ids are built from the checked 6-digit name, valid by construction.
    text = prefix[male] + "; ".join([piece[flag] for piece, flag in zip(pieces, others)])
    return Record(key=f"{NAME}/{local}/attributes/0", dataset=NAME, image=f"{image_dir}/{local}{suffix}",
                  image_id=f"celeba/{local}", photo_id=f"celeba/{local}", kind="attributes", text=text,
                  labels=labels, subject_id=f"celeba-id/{identity[name]}", bbox=None,
                  source_split=partition[f"celeba/{local}"])


def _template() -> tuple[tuple[str, str], list[tuple[str, str]]]:
    """("celeba gender: female; ", "celeba gender: male; ") and each other attribute's ("x: false", "x: true"),
    checked once against the protocol and the record rules."""
    def piece(label: str, value) -> str:
        return to_text(NAME, {label: value})[len(NAME) + 1:]
    prefix = tuple(f"{NAME} {piece('gender', g)}; " for g in ("female", "male"))
    pieces = [(piece(label, False), piece(label, True)) for label in OTHERS]
    for male, flag in ((False, True), (True, False)):
        labels = {"gender": "male" if male else "female", **dict.fromkeys(OTHERS, flag)}
        probe = Record(key=make_key(NAME, "000001", "attributes"), dataset=NAME, image="img_align_celeba/000001.jpg",
                       image_id="celeba/000001", photo_id="celeba/000001", kind="attributes", labels=labels,
                       text=prefix[male] + "; ".join(p[flag] for p in pieces))
        validate(probe)  # the joined text parses back to the labels: the template is the protocol
    return prefix, pieces


def _image_dir(raw: Path, official: bool) -> tuple[str, str]:
    for rel, suffix in IMAGE_DIRS:
        if (raw / rel).is_dir():
            return rel, suffix
    return ("Img/img_align_celeba" if official else "img_align_celeba"), ".jpg"


def _note_gaps(ctx: Context, attr_name: str, count: int, rows_: int, names, identity: dict, partition: dict):
    """Report, by file and count, where the three files disagree (e.g. an attribute-file excerpt)."""
    if count != rows_:
        ctx.note(f"{attr_name} announces {count:,} images on line 1 but has {rows_:,} rows (an excerpt?)")
    for other, listed in (("identity_CelebA.txt", identity.keys()),
                          ("list_eval_partition.txt", (f"{p[7:]}.jpg" for p in partition))):
        missing = sum(1 for n in listed if n not in names)
        if missing:
            ctx.note(f"{other} lists {missing:,} images missing from {attr_name}")
