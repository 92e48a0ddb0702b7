"""Multi-Modal CelebA-HQ (TediGAN, Xia et al. 2021): 30,000 CelebA-HQ images x 10 generated captions.

Quirks (docs/datasets.md, MM-CelebA-HQ; checked on 1,801 real files):
- One caption file per image, `<idx>.txt` with the unpadded CelebA-HQ index 0..29999, one caption a
  line. Where the folder sits varies between sources (`text/celeba-caption/`, `celeba-caption/`, one
  letter more in `celeba-captions`): the candidates below are tried in order.
- The captions are PCFG templates over CelebA attributes. 17% of lines end in a space (collapsed).
- The generator sometimes listed no attribute: 1,466 of the 300,000 lines hold `has .` and 151 `has  and`
  (docs/datasets.md). The empty clause is removed and the rest kept: `He is young and has .` ->
  `He is young.`, `This woman has  and wears lipstick.` -> `This woman wears lipstick.`, `He has . He is
  young.` -> `He is young.` (counted in a note). A sentence left with only its subject is dropped when
  the subject says nothing (`He`, `The person`), kept when it names an attribute (`This young man.`);
  a caption with nothing left (`92.txt`: "He has ." ten times) is filtered. keep_degenerate=true keeps
  every line as written.
- Captions repeat inside a file (`49.txt` has one four times) although the README promises ten unique
  ones; they are kept by default (Talk2Face counts 300k = 30,000 x 10) and noted, or filtered with
  keep_duplicates=false. The repeat is judged on the repaired text.
- Split: the maintainer says train is 0..23999 and test 24000..29999, and that the uploaded
  `train/filenames.pickle` and `test/filenames.pickle` may sit in each other's folder
  (IIGROUP/MM-CelebA-HQ-Dataset#6). So the split comes from the index; the pickles, when present, say
  which images the download should hold, and every disagreement with the index range is noted.
- Images are `image.zip` -> `images/<idx>.jpg` (512 x 512); the path assumes `image/images/` when no
  image folder is there.
- The key's n is the caption's 0-based line number in its file, so keys stay stable when a line is filtered.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from facecorpus.converters import captionfiles
from facecorpus.converters.base import BadRow, Context, Failure, Filtered, RawFormatError, rel_to
from facecorpus.records import Record, caption

NAME = "mmcelebahq"
DOWNLOAD = "https://github.com/IIGROUP/MM-CelebA-HQ-Dataset"
CAPTION_DIRS = ("text/celeba-caption", "text/celeba-captions", "celeba-caption", "celeba-captions", "text")
IMAGE_DIRS = ("image/images", "images", "image")
SPLIT_FILES = {"train": "train/filenames.pickle", "test": "test/filenames.pickle"}
HQ_IMAGES = 30_000
TEST_FROM = 24_000  # train = 0..23999, test = 24000..29999 (maintainer, IIGROUP/MM-CelebA-HQ-Dataset#6)
DEFAULTS = {"keep_degenerate": False, "keep_duplicates": True}
# The generator's empty attribute list, on whitespace-collapsed text: "has" right before the period
# ("He is young and has .") or before "and" ("This woman has and wears lipstick.").
EMPTY_LIST = re.compile(r"\bhas (?:\.|and )")
EMPTY_AT_END = re.compile(r"(?: and)? has \.$")  # "He is young and has ." -> "He is young."
EMPTY_BEFORE_AND = re.compile(r"\bhas and ")     # "This woman has and wears lipstick." -> "This woman wears lipstick."
SENTENCE_END = re.compile(r"(?<=\.) ")
# What the generator opens every caption with: a sentence reduced to one of these says nothing.
BARE_SUBJECT = re.compile(r"(?:(?:this|the|a) (?:person|man|woman)|he|she)\.", re.IGNORECASE)
SAYS_NOTHING = "empty attribute list, nothing else said ('He has .')"


def caption_dir(raw: Path) -> Path:
    """The first candidate folder holding `*.txt` files."""
    for rel in CAPTION_DIRS:
        if (raw / rel).is_dir() and any(p.suffix == ".txt" for p in (raw / rel).iterdir()):
            return raw / rel
    raise RawFormatError(" or ".join(f"{c}/" for c in CAPTION_DIRS), f"no caption files <idx>.txt under {raw} "
                         "(unpack text.zip into text/)", DOWNLOAD)


def hq_index(stem: str) -> int:
    if not stem.isdigit() or str(int(stem)) != stem or int(stem) >= HQ_IMAGES:
        raise BadRow(f"file name {stem}.txt is not an unpadded CelebA-HQ index 0..{HQ_IMAGES - 1}")
    return int(stem)


def split_of(idx: int) -> str:
    return "train" if idx < TEST_FROM else "test"


def read_splits(raw: Path, ctx: Context) -> set[str] | None:
    """The stems both pickles list (None without them), noting where they contradict the index range."""
    present = {split: (raw / rel).is_file() for split, rel in SPLIT_FILES.items()}
    if not any(present.values()):
        ctx.note(f"no {' or '.join(SPLIT_FILES.values())}: source split from the index range "
                 f"(train 0..{TEST_FROM - 1}, test {TEST_FROM}..{HQ_IMAGES - 1})")
        return None
    if not all(present.values()):
        (have, _), (lack, _) = sorted(present.items(), key=lambda item: not item[1])
        raise RawFormatError(SPLIT_FILES[lack], f"missing beside {SPLIT_FILES[have]}", DOWNLOAD)
    listed: set[str] = set()
    for split, rel in SPLIT_FILES.items():
        stems = captionfiles.read_names(raw / rel, raw, DOWNLOAD)
        bad = [s for s in stems if not (s.isdigit() and str(int(s)) == s and int(s) < HQ_IMAGES)]
        if bad:
            raise RawFormatError(rel, f"{len(bad):,} entries are not CelebA-HQ indices: {captionfiles.examples(bad)}",
                                 DOWNLOAD)
        other = [s for s in stems if split_of(int(s)) != split]
        if other:
            ctx.note(f"{rel} lists {len(other):,} of its {len(stems):,} images in the {split_of(int(other[0]))} "
                     f"index range (e.g. {other[0]}): split taken from the index (the pickles may be swapped, #6)")
        twice = [s for s in stems if s in listed]
        if twice:
            ctx.note(f"{len(twice):,} images are listed more than once in the split pickles: "
                     f"{captionfiles.examples(twice)}")
        listed.update(stems)
    return listed


def image_dir(raw: Path) -> tuple[str, set[str] | None]:
    """The images folder (relative) and the stems of its `.jpg` files; (`image/images`, None) without one."""
    for rel in IMAGE_DIRS:
        if (raw / rel).is_dir():
            return rel, {p.stem for p in (raw / rel).iterdir() if p.suffix.lower() == ".jpg"}
    return IMAGE_DIRS[0], None


def note_coverage(ctx: Context, folder: str, found: dict[str, Path], listed: set[str] | None,
                  images: tuple[str, set[str] | None]) -> None:
    """Report caption files the split pickles (or the 0..29999 range) expect but the folder lacks, and back."""
    if listed is None:
        expected = {str(i) for i in range(HQ_IMAGES)}
        absent = sorted(expected - set(found), key=int)
        if absent:
            ctx.note(f"{folder} holds {HQ_IMAGES - len(absent):,} of the {HQ_IMAGES:,} caption files "
                     f"0.txt..{HQ_IMAGES - 1}.txt: {len(absent):,} missing (an excerpt?), "
                     f"e.g. {captionfiles.examples([f'{s}.txt' for s in absent])}")
    else:
        absent = sorted(listed - set(found), key=int)
        if absent:
            ctx.note(f"the split pickles list {len(absent):,} images with no caption file in {folder}: "
                     f"{captionfiles.examples([f'{s}.txt' for s in absent])}")
        unlisted = [s for s in found if s not in listed]
        if unlisted:
            ctx.note(f"{len(unlisted):,} caption files in {folder} are in neither split pickle (converted, split "
                     f"from the index): {captionfiles.examples([f'{s}.txt' for s in unlisted])}")
    rel, stems = images
    if stems is not None:
        lacking = [s for s in found if s not in stems]
        if lacking:
            ctx.note(f"{rel}/ lacks the image of {len(lacking):,} caption files: "
                     f"{captionfiles.examples([f'{s}.jpg' for s in lacking])}")


def file_rows(rel: str, path: Path, stem: str, image: str, ctx: Context, fixed: dict,
              tally: Counter) -> Iterator[Record | Filtered | Failure]:
    """One outcome per line of one caption file (what depends on the image only is looked up once)."""
    photo = split = image_id = None
    try:
        idx = hq_index(stem)
        image_id = f"celebahq/{idx}"
        photo, split, problem = ctx.celeba_photo(image_id), split_of(idx), None
    except BadRow as exc:
        problem = str(exc)
    keep_degenerate, keep_duplicates = ctx.options["keep_degenerate"], ctx.options["keep_duplicates"]
    seen: set[str] = set()

    def clean(words: str) -> tuple[str, str | None]:
        if not keep_degenerate and "has " in words and EMPTY_LIST.search(words):
            words = without_empty_lists(words)
            tally["repaired" if words else "says nothing"] += 1
            if not words:
                return words, SAYS_NOTHING
        repeat = words in seen
        seen.add(words)
        tally["duplicates"] += repeat
        return words, "duplicate caption in the same file" if repeat and not keep_duplicates else None

    yield from captionfiles.file_outcomes(
        path, rel, DOWNLOAD, fixed, problem,
        lambda n, words: caption(NAME, stem, image, words, n, image_id=image_id, photo_id=photo, source_split=split),
        clean=clean)


def without_empty_lists(words: str) -> str:
    """The caption with its empty attribute clauses removed, sentence by sentence; "" when nothing is left.

    Only the clause goes: the generator's other sentences are kept as written (docs/datasets.md says
    not to regenerate MM-CelebA-HQ text from attributes).
    """
    kept = []
    for sentence in SENTENCE_END.split(words):
        sentence = EMPTY_AT_END.sub(".", EMPTY_BEFORE_AND.sub("", sentence))
        if not BARE_SUBJECT.fullmatch(sentence):
            kept.append(sentence)
    return " ".join(kept)


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    folder = caption_dir(raw)
    found = captionfiles.text_files(folder)
    listed = read_splits(raw, ctx)
    images = image_dir(raw)
    rel = rel_to(folder, raw)
    note_coverage(ctx, f"{rel}/", found, listed, images)
    fixed: dict[str, list[str]] = {}
    tally: Counter = Counter()
    for stem, path in found.items():
        yield from file_rows(f"{rel}/{path.name}", path, stem, f"{images[0]}/{stem}.jpg", ctx, fixed, tally)
    captionfiles.note_fixes(ctx, f"{rel}/", fixed)
    if tally["repaired"] or tally["says nothing"]:
        ctx.note(f"{rel}/: {tally['repaired'] + tally['says nothing']:,} captions had an empty attribute list "
                 f"('has .', 'has  and'): the empty clause removed from {tally['repaired']:,} (the rest kept), "
                 f"{tally['says nothing']:,} said nothing else (filtered)")
    if tally["duplicates"]:
        kept = "kept" if ctx.options["keep_duplicates"] else "filtered"
        ctx.note(f"{rel}/: {tally['duplicates']:,} captions repeat an earlier line of their file ({kept}; the README "
                 "promises ten unique captions)")
