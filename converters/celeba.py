"""CelebA: 40 binary attributes per aligned face, the person's identity and the official partition.

Raw layout (FORMATS.md part 1 section 1): the official Google-Drive folder has `Anno/list_attr_celeba.txt`,
`Anno/identity_CelebA.txt`, `Eval/list_eval_partition.txt` and `Img/img_align_celeba.zip`;
torchvision flattens the same files into one folder beside `img_align_celeba/`. Both are accepted.

Quirks:
- all label files are ASCII with CRLF line endings; read with universal newlines.
- `list_attr_celeba.txt`: line 1 the image count, line 2 the 40 names with a trailing space, then
  `000001.jpg -1  1  1 ...` with values right-aligned in 3-character fields: split on runs of
  whitespace, never on single spaces. Values are -1 / 1 (negative / positive), never 0.
- a failed Google-Drive download leaves an HTML page under the label file's name: refused, as is
  any file whose first line is not the integer count (FORMATS.md 1.4).
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

from facecorpus.converters.base import (BadRow, Context, Failure, Filtered, RawFormatError, Where, find, guard,
                                        read_text, rel_to)
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
PAIR_RE = re.compile(r"^[ \t]*(\d{6}\.jpg)[ \t]+(\S+)[ \t]*$", re.MULTILINE)
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
    text = read_text(path, path.parent, DOWNLOAD)
    pairs = PAIR_RE.findall(text)  # one regex pass: 202k lines in well under a second
    out = dict(pairs)
    values = set(out.values())
    if (len(out) != len(pairs) or not all(_ok(v, allowed) for v in values)
            or len(pairs) != sum(1 for line in text.split("\n") if line.strip())):
        _raise_first_bad_pair(path, text, allowed)  # the slow pass, only to name the line
    if not out:
        raise RawFormatError(path.name, "is empty", DOWNLOAD)
    return out


def _ok(value: str, allowed: set[str] | None) -> bool:
    return value in allowed if allowed is not None else value.isdigit() and int(value) > 0


def _raise_first_bad_pair(path: Path, text: str, allowed: set[str] | None):
    seen: set[str] = set()
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        m = PAIR_RE.fullmatch(line)
        problem = (f"expected '<NNNNNN.jpg> <value>', found {line.strip()[:60]!r}" if not m
                   else f"unknown value {m[2]!r} for {m[1]}" if not _ok(m[2], allowed)
                   else f"{m[1]} is listed twice" if m[1] in seen else None)
        if problem:
            raise RawFormatError(Where(path.name, n), problem, DOWNLOAD)
        seen.add(m[1])


def read_attributes(path: Path, raw: Path) -> tuple[int, list[tuple[Where, str]]]:
    """The announced image count and (where, line) of every data row of `list_attr_celeba.txt`."""
    rel = rel_to(path, raw)
    text = read_text(path, raw, DOWNLOAD).split("\n")
    count = text[0].strip()
    if not count.isdigit():
        raise RawFormatError(Where(rel, 1), f"first line {count[:60]!r} is not the image count; not a CelebA "
                             "attribute file (a failed or different download?)", DOWNLOAD)
    header = tuple(text[1].split()) if len(text) > 1 else ()
    if header != ATTRIBUTES:
        raise RawFormatError(Where(rel, 2), f"expected CelebA's 40 attribute names, found {len(header)} names "
                             f"starting {' '.join(header[:3])!r}", DOWNLOAD)
    return int(count), [(Where(rel, n), line) for n, line in enumerate(text[2:], start=3) if line.strip()]


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    attr_path = find(raw, ATTR_PATHS, DOWNLOAD)
    identity = read_identity(find(raw, IDENTITY_PATHS, DOWNLOAD))
    partition = read_partition(find(raw, PARTITION_PATHS, DOWNLOAD))
    count, data = read_attributes(attr_path, raw)
    image_dir, suffix = _image_dir(raw, official=attr_path.parent.name == "Anno")
    first: dict[str, int] = {}  # image name -> the line that lists it first
    for where, line in data:
        first.setdefault(line.split(None, 1)[0], where.line)
    _note_gaps(ctx, attr_path.name, count, len(data), first.keys(), identity, partition)
    template = _template()
    for where, line in data:
        name = line.split(None, 1)[0]
        if first[name] != where.line:  # a repeated image would be a duplicate record key
            yield Failure(where, f"{name} is listed again (first on line {first[name]})")
        else:
            yield guard(where, lambda: _build(line, identity, partition, image_dir, suffix, template))


def _build(line: str, identity: dict, partition: dict, image_dir: str, suffix: str, template: tuple) -> Record:
    fields = line.split()
    name, values = fields[0], fields[1:]
    if not IMAGE_RE.fullmatch(name):
        raise BadRow(f"image name {name!r} is not NNNNNN.jpg")
    if len(values) != len(ATTRIBUTES):
        raise BadRow(f"{name}: expected {len(ATTRIBUTES)} values, found {len(values)} (a truncated line?)")
    if not VALUES.issuperset(values):
        i = next(i for i, v in enumerate(values) if v not in VALUES)
        raise BadRow(f"{name}: {ATTRIBUTES[i]} is {values[i]!r}, expected -1 or 1")
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
