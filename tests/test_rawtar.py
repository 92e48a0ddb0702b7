"""facecorpus/rawtar.py: the header walk finds what tarfile finds on every header flavour, damage is
named, a member's bytes come back by their range only while its header still vouches for them."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from facecorpus import rawtar

LONG = "a-folder-name-long-enough/" * 5 + "image.jpg"  # 139 characters: beyond a header's name field
SPLIT = "a-folder/" * 12 + "image.jpg"                     # 117: ustar keeps it as prefix + name


def build(path: Path, fmt: int, long_name: str = LONG) -> Path:
    with tarfile.open(path, "w", format=fmt) as tf:
        for name, data in (("000000.jpg", b"\xff\xd8jpeg"), ("000000.json", b"{}"), ("000000.txt", b""),
                           (long_name, b"x" * 1000), ("zoe-\u00eb.jpg", b"y" * 513)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.5  # a float mtime: pax writes a record for it
            tf.addfile(info, io.BytesIO(data))
        for kind in (tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE):
            info = tarfile.TarInfo(f"other-{kind.decode()}")
            info.type, info.linkname = kind, "000000.jpg"
            tf.addfile(info)
    return path


def tarfile_view(path: Path) -> list[tuple]:
    with tarfile.open(path) as tf:
        return [(m.name, m.offset_data, m.size, m.isreg()) for m in tf]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_members_agree_with_tarfile(tmp_path, fmt):
    path = build(tmp_path / "t.tar", fmt, SPLIT if fmt == tarfile.USTAR_FORMAT else LONG)
    ours = [tuple(m) for m in rawtar.members(path)]
    assert ours == tarfile_view(path) and len(ours) == 8
    assert [m[3] for m in ours] == [True] * 5 + [False] * 3      # a folder and links are no images


def test_the_fixture_tars_agree_with_tarfile():
    for path in sorted((Path(__file__).parent / "data" / "img2dataset" / "webdataset").glob("*.tar")):
        assert [tuple(m) for m in rawtar.members(path)] == tarfile_view(path), path.name


def test_a_truncated_or_compressed_tar_is_named_after_the_good_members(tmp_path):
    path = build(tmp_path / "t.tar", tarfile.PAX_FORMAT)
    data = path.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:5000])
    got = []
    with pytest.raises(rawtar.RawTarError, match="truncated"):
        for m in rawtar.members(cut):
            got.append(m.name)
    assert got == ["000000.jpg", "000000.json"]  # the cut falls in the pax header of 000000.txt
    gz = tmp_path / "t.tar.gz"
    with tarfile.open(gz, "w:gz") as tf:
        tf.add(path, "inner.tar")
    with pytest.raises(rawtar.RawTarError, match="no valid tar header at byte 0"):
        list(rawtar.members(gz))


def test_a_member_is_read_by_its_range_only_while_its_header_matches(tmp_path):
    path = build(tmp_path / "t.tar", tarfile.PAX_FORMAT)
    by_name = {m.name: m for m in rawtar.members(path)}
    with open(path, "rb") as fh:
        for name, m in by_name.items():
            if m.regular:
                assert rawtar.read_member(fh, name, m.offset, m.size) == tarfile.open(path).extractfile(name).read()
        jpg, txt = by_name["000000.jpg"], by_name["000000.json"]
        with pytest.raises(rawtar.RawTarError, match="header at offset .* is for '000000.json'"):
            rawtar.read_member(fh, "000000.jpg", txt.offset, jpg.size)
        with pytest.raises(rawtar.RawTarError, match="ends before its"):
            rawtar.read_member(fh, "000000.jpg", path.stat().st_size - 2, jpg.size)


def test_write_makes_the_same_bytes_each_time(tmp_path):
    files = [("000000.jpg", b"jpeg"), ("000000.json", b"{}"), ("000000.txt", b"caption")]
    a, b = rawtar.write(tmp_path / "a.tar", files), rawtar.write(tmp_path / "b.tar", files)
    assert a.read_bytes() == b.read_bytes()
    assert [(m.name, m.size) for m in rawtar.members(a)] == [(n, len(d)) for n, d in files]
    assert not list(tmp_path.glob("*.tmp"))
