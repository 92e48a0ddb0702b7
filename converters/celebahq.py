"""CelebA-HQ -> CelebA: the mapping file that ties the CelebA-HQ caption sets to CelebA photos.

Not a dataset. MM-CelebA-HQ, CelebAText-HQ and CelebA-Dialog HQ key their images by the CelebA-HQ
index (`CelebA-HQ-img/<idx>.jpg`, 0..29999, no padding); split harmonization needs the CelebA photo
behind each, and CelebAMask-HQ ships `CelebA-HQ-to-CelebA-mapping.txt` at its top level:

    idx        orig_idx   orig_file
    0          119613     119614.jpg

- one header line, then one row per CelebA-HQ image in idx order; runs of spaces between columns
  (fixed width 11/11/10), LF line endings (we accept CRLF and a BOM too);
- `orig_idx` is the 0-based index into CelebA's 202,599 images, `orig_file` the CelebA file name,
  i.e. `orig_idx + 1` zero-padded to 6 digits; rows are not sorted by CelebA id;
- the CelebA-HQ image is cropped and super-resolved from the in-the-wild `img_celeba` file, so it is
  a different *image* (`celebahq/<idx>`) of the same *photo* (`celeba/<6-digit id>`).

A bad row here cannot be skipped like a dataset row: every split decision downstream depends on the
file, so any problem raises RawFormatError naming the line.
"""

from __future__ import annotations

from pathlib import Path

from facecorpus.converters.base import Overlong, RawFormatError, Where, text_lines
from facecorpus.excerpt import quote

MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"
DOWNLOAD = "https://github.com/switchablenorms/CelebAMask-HQ"
HEADER = ("idx", "orig_idx", "orig_file")
HQ_IMAGES = 30_000       # CelebA-HQ indices 0..29999
CELEBA_IMAGES = 202_599  # CelebA orig_idx 0..202598


def read_mapping(path: Path) -> dict[str, str]:
    """{"celebahq/<idx>": "celeba/<6-digit id>"} for every row of the mapping file at `path`."""
    if not path.is_file():
        raise RawFormatError(MAPPING, f"missing: expected {path} (it ships at the top of CelebAMask-HQ)", DOWNLOAD)
    numbered = text_lines(path, path.name, DOWNLOAD)
    _, header = next(numbered, (1, ""))
    if tuple(header.split()) != HEADER:
        raise RawFormatError(Where(path.name, 1), f"expected the header {quote(' '.join(HEADER))}, found "
                             f"{quote(header)}", DOWNLOAD)
    mapping: dict[str, str] = {}
    for n, line in numbered:
        if isinstance(line, Overlong):
            raise RawFormatError(Where(path.name, n), line.problem, DOWNLOAD)
        if not line.strip():
            continue
        hq, photo = _row(line, Where(path.name, n))
        if hq in mapping:
            raise RawFormatError(Where(path.name, n), f"{hq} is mapped twice", DOWNLOAD)
        mapping[hq] = photo
    if not mapping:
        raise RawFormatError(path.name, "has a header but no rows", DOWNLOAD)
    return mapping


def _row(line: str, where: Where) -> tuple[str, str]:
    """One row `idx orig_idx orig_file` -> ("celebahq/<idx>", "celeba/<6-digit id>"), checked."""
    fields = line.split()
    if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
        raise RawFormatError(where, f"expected 'idx orig_idx orig_file', found {quote(line.strip())}", DOWNLOAD)
    idx, orig_idx, orig_file = int(fields[0]), int(fields[1]), fields[2]
    if not (idx < HQ_IMAGES and orig_idx < CELEBA_IMAGES):
        raise RawFormatError(where, f"idx {idx} or orig_idx {orig_idx} is out of range "
                             f"(0..{HQ_IMAGES - 1}, 0..{CELEBA_IMAGES - 1})", DOWNLOAD)
    # orig_idx is 0-based, the CelebA file number 1-based: a mismatch means a shifted or edited file.
    if orig_file != f"{orig_idx + 1:06d}.jpg":
        raise RawFormatError(where, f"orig_file {quote(orig_file)} is not orig_idx + 1 ({orig_idx + 1:06d}.jpg)", DOWNLOAD)
    return f"celebahq/{idx}", f"celeba/{orig_idx + 1:06d}"
