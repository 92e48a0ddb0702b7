"""CelebAText-HQ (SEA-T2F, Sun et al., ACM MM 2021): 15,010 CelebA-HQ images x 10 manual captions.

Quirks (docs/datasets.md, CelebAText-HQ; no real file is public, the layout is read from the SEA-T2F
loader `code/datasets.py` and configs):
- The Google-Drive folder is extracted into `data/CelebAText-HQ/`; the raw root may be that folder or a
  folder holding it. It has `captions/<stem>.txt` (one per image) and the split lists
  `data_flist/train.flist` (13,710) and `data_flist/test.flist` (1,300). The images are not in it: the
  user copies CelebAMask-HQ's `CelebA-HQ-img/<idx>.jpg` into `CelebAimg/`.
- A `.flist` line is a path from the authors' machine (`.../.../123.jpg`); only its base name counts.
  Names are CelebA-HQ names (keys of CelebAMask-HQ-attribute-anno.txt), so image_id = celebahq/<idx>.
  A line that is no such name is a failed row of the list.
- Captions are manual: typos, mixed case. The loader skips blank lines (filtered here as
  "empty caption line") and warns below 10 captions; files with fewer or more than 10 are noted.
- Encoding: the loader turns U+FFFD pairs into a space, so files hold mangled GBK punctuation; such
  runs become a space and other non-ASCII is NFKC-normalised, and every file that needed it is noted.
- The key's n is the caption's 0-based line number in its file (blank lines count), so keys are stable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from facecorpus.converters import captionfiles
from facecorpus.converters.base import BadRow, Context, Failure, Filtered, Overlong, RawFormatError, find, lines
from facecorpus.excerpt import quote
from facecorpus.records import Record, caption

NAME = "celebatexthq"
DOWNLOAD = "https://github.com/cripac-sjx/SEA-T2F"
ROOTS = ("", "CelebAText-HQ/", "data/CelebAText-HQ/")  # the raw root, or a folder the archive went into
FLISTS = {"train": "data_flist/train.flist", "test": "data_flist/test.flist"}
CAPTIONS = "captions"
IMAGES = "CelebAimg"  # the user's copy of CelebAMask-HQ's CelebA-HQ-img/
CAPTIONS_PER_IMAGE = 10  # CAPTIONS_PER_IMAGE in SEA-T2F's cfg/*.yml
HQ_IMAGES = 30_000


def dataset_root(raw: Path) -> str:
    """The prefix (relative to raw) under which data_flist/ and captions/ sit."""
    path = find(raw, tuple(f"{r}{FLISTS['train']}" for r in ROOTS), DOWNLOAD)
    return path.relative_to(raw).as_posix()[: -len(FLISTS["train"])]


def hq_name(line: str) -> tuple[str, str]:
    """A list line -> (stem, image file name); ValueError unless it names a CelebA-HQ image."""
    name = PurePosixPath(line.strip().replace("\\", "/")).name
    stem = captionfiles.stem_of(name)
    if isinstance(line, Overlong):
        raise ValueError(line.problem)
    if not (stem.isdigit() and str(int(stem)) == stem and int(stem) < HQ_IMAGES):
        raise ValueError(f"{quote(line.strip())} does not name a CelebA-HQ image <idx>.jpg (0..{HQ_IMAGES - 1})")
    return stem, name if name != stem else f"{stem}.jpg"


def read_flists(raw: Path, root: str, ctx: Context) -> tuple[dict[str, tuple[str, str]], list[Failure]]:
    """{stem: (image name, split)} in list order, and the list lines naming no CelebA-HQ image."""
    entries: dict[str, tuple[str, str]] = {}
    failures: list[Failure] = []
    twice, both = [], []
    for split, rel in FLISTS.items():
        path = find(raw, (f"{root}{rel}",), DOWNLOAD)
        for where, line in lines(path, raw, DOWNLOAD):
            try:
                stem, name = hq_name(line)  # an Overlong line is empty: names no image, and says why
            except ValueError as exc:
                failures.append(Failure(where, str(exc)))
                continue
            if stem in entries:
                (twice if entries[stem][1] == split else both).append(stem)
            # An image in both lists is held out: test wins, as split harmonization would decide.
            entries[stem] = (name, "test" if stem in both else split)
    if twice:
        ctx.note(f"{len(twice):,} images are listed twice in one .flist (converted once): "
                 f"{captionfiles.examples(twice)}")
    if both:
        ctx.note(f"{len(both):,} images are in both train.flist and test.flist (taken as test): "
                 f"{captionfiles.examples(both)}")
    return entries, failures


def file_rows(rel: str, path: Path, stem: str, image: str, split: str | None, ctx: Context, fixed: dict,
              counts: Counter) -> Iterator[Record | Filtered | Failure]:
    """One outcome per line of one caption file (the image's photo is looked up once)."""
    image_id = f"celebahq/{stem}"
    try:
        photo, problem = ctx.celeba_photo(image_id), None
    except BadRow as exc:
        photo, problem = None, str(exc)
    yield from captionfiles.file_outcomes(
        path, rel, DOWNLOAD, fixed, problem,
        lambda n, words: caption(NAME, stem, image, words, n, image_id=image_id, photo_id=photo, source_split=split),
        expected=CAPTIONS_PER_IMAGE, counts=counts)


def note_coverage(ctx: Context, root: str, entries: dict, found: dict[str, Path], missing: list[str]) -> None:
    if missing:
        ctx.note(f"the .flist files list {len(missing):,} images with no caption file in {root}{CAPTIONS}/: "
                 f"{captionfiles.examples([f'{s}.txt' for s in missing])}")
    unlisted = [s for s in found if s not in entries]
    if unlisted:
        ctx.note(f"{len(unlisted):,} caption files in {root}{CAPTIONS}/ are in neither .flist (converted with no "
                 f"source split): {captionfiles.examples([f'{s}.txt' for s in unlisted])}")


def note_images(ctx: Context, raw: Path, root: str, stems: list[str]) -> None:
    folder = raw / f"{root}{IMAGES}"
    if not folder.is_dir():
        ctx.note(f"no {root}{IMAGES}/ folder: the images are CelebAMask-HQ's CelebA-HQ-img/<idx>.jpg, to be "
                 "copied there (they are not in the download)")
        return
    on_disk = {p.stem for p in folder.iterdir()}
    lacking = [s for s in stems if s not in on_disk]
    if lacking:
        ctx.note(f"{root}{IMAGES}/ lacks {len(lacking):,} captioned images: "
                 f"{captionfiles.examples([f'{s}.jpg' for s in lacking])}")


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    root = dataset_root(raw)
    entries, failures = read_flists(raw, root, ctx)
    folder = raw / f"{root}{CAPTIONS}"
    if not folder.is_dir():
        raise RawFormatError(f"{root}{CAPTIONS}/", f"missing under {raw}: no caption folder", DOWNLOAD)
    found = captionfiles.text_files(folder)
    missing = [s for s in entries if s not in found]
    note_coverage(ctx, root, entries, found, missing)
    yield from failures
    todo = [(s, *entries[s]) for s in entries if s in found]
    todo += [(s, f"{s}.jpg", None) for s in found if s not in entries]
    note_images(ctx, raw, root, [s for s, _, _ in todo])
    fixed: dict[str, list[str]] = {}
    counts: Counter = Counter()
    for stem, name, split in todo:
        path = found[stem]
        yield from file_rows(f"{root}{CAPTIONS}/{path.name}", path, stem, f"{root}{IMAGES}/{name}", split, ctx,
                             fixed, counts)
    captionfiles.note_fixes(ctx, f"{root}{CAPTIONS}/", fixed)
    for side, n in sorted(counts.items()):
        ctx.note(f"{root}{CAPTIONS}/: {n:,} files have {side} than {CAPTIONS_PER_IMAGE} captions (all kept)")
