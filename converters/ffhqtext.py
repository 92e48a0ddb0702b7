"""FFHQ-Text (Zhou & Shimada, 2021): 760 female FFHQ images x 9 manual descriptions (6,840 pairs).

Quirks (docs/datasets.md, FFHQ-Text; the dataset is sent on request only and no file is public,
so the layout is the README's table, read the AttnGAN/CUB way the table mirrors):
- `Text/<stem>.txt`: one file per image, one description a line (9 expected; others are noted).
- `Image/<stem>.png`: 1024 x 1024 PNG. The folder names' case is not documented: `Image`/`image`/
  `images` and `Text`/`text` are all accepted. The stems are taken to be FFHQ's 5-digit names
  (00000..69999), so image_id = photo_id = ffhq/<stem>; another name fails its rows, saying so.
- `Train` / `Test`: one pickle each with the training / test file names (500 / 260), accepted as
  `Train/filenames.pickle` (AttnGAN) or `Train.pkl`, any case. Without them the records carry no
  source split, and a note says so.
- `bounding_boxes.txt` (made with the VGG Image Annotator) and `images.txt` are not read: their
  columns are undocumented, so no bbox is guessed.
- Talk2Face counts "8k" against 760 x 9 = 6,840: the summary's record count is the number to compare.
- The key's n is the description's 0-based line number in its file (blank lines count).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from facecorpus.converters import captionfiles
from facecorpus.converters.base import Context, Failure, Filtered, RawFormatError, rel_to
from facecorpus.records import Record, caption

NAME = "ffhqtext"
DOWNLOAD = "https://github.com/Yutong-Zhou-cv/FFHQ-Text_Dataset"
TEXT_DIRS = ("Text", "text")
IMAGE_DIRS = ("Image", "image", "images", "Images")
SPLITS = {"train": ("Train", "train"), "test": ("Test", "test")}
PICKLE_NAMES = ("{d}/filenames.pickle", "{d}/filenames.pkl", "{d}.pickle", "{d}.pkl")
IMAGE_SUFFIXES = (".png", ".jpg")
CAPTIONS_PER_IMAGE = 9
FFHQ_NAME = re.compile(r"\d{5}")  # FFHQ's 00000..69999


def split_file(raw: Path, split: str) -> Path | None:
    for folder in SPLITS[split]:
        for pattern in PICKLE_NAMES:
            if (raw / pattern.format(d=folder)).is_file():
                return raw / pattern.format(d=folder)
    return None


def read_splits(raw: Path, ctx: Context) -> dict[str, str] | None:
    """{stem: split} from the two pickles; None (and a note) when neither is there."""
    paths = {split: split_file(raw, split) for split in SPLITS}
    if not any(paths.values()):
        ctx.note(f"no train/test pickles ({PICKLE_NAMES[0].format(d='Train')}, ...): records carry no source split")
        return None
    if not all(paths.values()):
        have, lack = sorted(paths, key=lambda s: paths[s] is None)
        raise RawFormatError(PICKLE_NAMES[0].format(d=SPLITS[lack][0]), f"missing beside {rel_to(paths[have], raw)}",
                             DOWNLOAD)
    listed: dict[str, str] = {}
    both = []
    for split, path in paths.items():
        for stem in captionfiles.read_names(path, raw, DOWNLOAD):
            if stem in listed and listed[stem] != split:
                both.append(stem)
            # An image in both lists is held out: test wins, as split harmonization would decide.
            listed[stem] = "test" if stem in both else split
    if both:
        ctx.note(f"{len(both):,} images are in both split pickles (taken as test): {captionfiles.examples(both)}")
    return listed


def image_files(raw: Path) -> tuple[str, dict[str, str] | None]:
    """The image folder (relative) and {stem: file name} of its images; (`Image`, None) without one."""
    for rel in IMAGE_DIRS:
        if (raw / rel).is_dir():
            return rel, {p.stem: p.name for p in sorted((raw / rel).iterdir())
                         if p.suffix.lower() in IMAGE_SUFFIXES}
    return IMAGE_DIRS[0], None


def note_coverage(ctx: Context, folder: str, found: dict, listed: dict | None, images: tuple) -> None:
    if listed is not None:
        absent = [s for s in listed if s not in found]
        if absent:
            ctx.note(f"the split pickles list {len(absent):,} images with no description file in {folder}: "
                     f"{captionfiles.examples([f'{s}.txt' for s in absent])}")
        unlisted = [s for s in found if s not in listed]
        if unlisted:
            ctx.note(f"{len(unlisted):,} description files in {folder} are in neither split pickle (converted with no "
                     f"source split): {captionfiles.examples([f'{s}.txt' for s in unlisted])}")
    rel, on_disk = images
    if on_disk is None:
        ctx.note(f"no {' or '.join(IMAGE_DIRS)} folder: image paths assume {rel}/<stem>.png")
    else:
        lacking = [s for s in found if s not in on_disk]
        if lacking:
            ctx.note(f"{rel}/ lacks the image of {len(lacking):,} description files: {captionfiles.examples(lacking)}")


def file_rows(rel: str, path: Path, stem: str, image: str, split: str | None, fixed: dict,
              counts: Counter) -> Iterator[Record | Filtered | Failure]:
    """One outcome per line of one description file."""
    problem = None
    if not FFHQ_NAME.fullmatch(stem):
        problem = f"file name {stem}.txt is not a 5-digit FFHQ image name (00000..69999)"
    yield from captionfiles.file_outcomes(
        path, rel, DOWNLOAD, fixed, problem,
        lambda n, words: caption(NAME, stem, image, words, n, image_id=f"ffhq/{stem}", source_split=split),
        expected=CAPTIONS_PER_IMAGE, counts=counts)


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    folder = captionfiles.first_dir(raw, TEXT_DIRS, "description (Text)", DOWNLOAD)
    found = captionfiles.text_files(folder)
    listed = read_splits(raw, ctx)
    images = image_files(raw)
    rel = f"{rel_to(folder, raw)}/"
    note_coverage(ctx, rel, found, listed, images)
    fixed: dict[str, list[str]] = {}
    counts: Counter = Counter()
    for stem, path in found.items():
        name = (images[1] or {}).get(stem, f"{stem}.png")
        split = listed.get(stem) if listed is not None else None
        yield from file_rows(f"{rel}{path.name}", path, stem, f"{images[0]}/{name}", split, fixed, counts)
    captionfiles.note_fixes(ctx, rel, fixed)
    for side, n in sorted(counts.items()):
        ctx.note(f"{rel}: {n:,} files have {side} than {CAPTIONS_PER_IMAGE} descriptions (all kept)")
