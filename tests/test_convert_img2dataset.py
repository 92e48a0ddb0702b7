"""`convert img2dataset` on real img2dataset 1.47.0 outputs (tests/data/img2dataset, README there): every
URL accounted for by img2dataset's status and reason, face boxes in the stored image's pixels, keys
from img2dataset's own, the three output formats, and the gaps img2dataset leaves silently."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from facecorpus import imageref, manifest, summary
from facecorpus.cli import main
from facecorpus.converters import img2dataset, pipeline, webboxes
from facecorpus.records import SCHEMA

DATA = Path(__file__).parent / "data" / "img2dataset"
EXPECTED = json.loads((DATA / "expected.json").read_text())
ROWS = {r["key"]: r for r in EXPECTED["rows"]}
BOXED = {"licence": "CC-BY-4.0, research only", "bbox_column": "face_box", "resize_mode": "border"}
FORMATS = ("webdataset", "files", "parquet")


def convert(raw: Path, out: Path, on_error: str = "raise", name: str = "web", **options) -> summary.DatasetSummary:
    options = {"licence": "CC-BY-4.0, research only", **options}
    written = pipeline.convert({name: raw}, out, converters={name: "img2dataset"}, overrides={name: options},
                               on_error=on_error, jobs=1)
    return written.datasets[name]


def upstream_by_status() -> dict:
    """What expected.json says img2dataset lost, grouped as the summary groups it."""
    lost = Counter((r["status"], img2dataset.reason(r["error_message"])) for r in EXPECTED["rows"] if r["status"] != "success")
    return summary.nest(lost)


@pytest.fixture(scope="module", params=FORMATS)
def boxed(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    return request.param, convert(DATA / request.param, out, **BOXED), manifest.read_table(out).to_pylist(), out


def test_every_url_is_a_record_an_upstream_failure_or_a_counted_filter(boxed):
    _, d, recs, _ = boxed
    totals = EXPECTED["totals"]
    assert d.rows_read == totals["count"] == 31                                   # the URLs img2dataset was given
    assert d.unavailable == upstream_by_status()
    assert d.unavailable["failed_to_download"] == {"HTTP Error 404": 3, "HTTP Error 403": 1, "timed out": 1,
                                                   "Use of image disallowed by X-Robots-Tag directive": 1,
                                                   "urlopen error [Errno 111] Connection refused": 1}
    assert d.unavailable["failed_to_resize"] == {"Image decoding error": 2, "OpenCV error (-215:Assertion failed)": 1,
                                                 "image too small": 1}
    assert d.unavailable_rows == totals["failed_to_download"] + totals["failed_to_resize"] == 11
    assert d.filtered == {"face box degenerate": 1, "face box missing": 1, "face box outside the picture": 1,
                          "no caption": 1}                                        # 000026, 000030, 000028, 000023
    assert d.records == len(recs) == 16 and d.errors == 0 and not d.notes
    assert d.rows_read == d.records + sum(d.filtered.values()) + d.errors + d.unavailable_rows


def test_boxes_land_on_the_face_in_the_stored_pixels(boxed):
    fmt, _, recs, out = boxed
    raw = manifest.image_root(out, "web")
    for rec in recs:
        row = ROWS[rec["key"].split("/")[1]]
        x0, y0, x1, y1 = row["expected_box"]                     # the README's table, continuous stored pixels
        bx0, by0, bx1, by1 = rec["bbox"]
        assert bx0 <= x0 < bx0 + 1 and by0 <= y0 < by0 + 1 and bx1 - 1 < x1 <= bx1 and by1 - 1 < y1 <= by1, rec["key"]
        img = stored_image(raw, rec["image"]).convert("L")  # grey: 000017 is stored single-channel
        assert img.size == tuple(row["stored_size"])
        skin, background = grey(row["skin_rgb"]), grey(row["background_rgb"])
        if "transparent" in row["background"]:
            background = 255                                     # composited on white by img2dataset
        assert abs(img.getpixel(((bx0 + bx1) // 2, (by0 + by1) // 2)) - skin) < 25, rec["key"]
        left = (bx0 - 3, (by0 + by1) // 2)                       # just outside the face: the background
        if left[0] >= row["content"][0]:
            assert abs(img.getpixel(left) - background) < 25, rec["key"]
        assert abs(skin - background) > 25                       # the two probes can tell face from background


def grey(rgb) -> float:
    return (rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114) / 1000  # PIL's L


def stored_image(raw: Path, image: str) -> Image.Image:
    """The stored image the record names, fetched here without facecorpus's reader."""
    ref = imageref.parse(image)
    if ref.kind == "tar":
        with tarfile.open(raw / ref.path) as tf:
            data = tf.extractfile(ref.member).read()
            assert len(data) == ref.size
    elif ref.kind == "parquet":
        data = pq.read_table(raw / ref.path, columns=[ref.column]).column(0)[ref.row].as_py()
    else:
        data = (raw / ref.path).read_bytes()
    from io import BytesIO

    return Image.open(BytesIO(data))


def test_records_keep_keys_terms_and_the_sha256_photo(boxed):
    fmt, _, recs, _ = boxed
    by_key = {r["key"]: r for r in recs}
    rec = by_key["web/000000/caption/0"]
    assert rec["dataset"] == "web" and rec["kind"] == "caption" and rec["image_id"] == "web/000000"
    assert rec["text"] == ROWS["000000"]["face_caption"] and rec["licence"] == "CC-BY-4.0, research only"
    assert {r["licence"] for r in recs} == {"CC-BY-4.0, research only"}
    # rows 20 and 21 fetched the same URL: two records, one photo, so one split
    a, b = by_key["web/000020/caption/0"], by_key["web/000021/caption/0"]
    assert a["image_id"] != b["image_id"] and a["photo_id"] == b["photo_id"] and a["split"] == b["split"]
    assert a["photo_id"].startswith("sha256/")
    kind = {"webdataset": "tar", "files": "file", "parquet": "parquet"}[fmt]
    assert {imageref.parse(r["image"]).kind for r in recs} == {kind}


def test_image_ids_are_stable_across_rebuilds(tmp_path):
    first = convert(DATA / "webdataset", tmp_path / "a", **BOXED)
    second = convert(DATA / "webdataset", tmp_path / "b", **BOXED)
    cols = ["key", "image", "image_id", "photo_id", "bbox", "split"]
    assert first == second
    assert manifest.read_table(tmp_path / "a", columns=cols) == manifest.read_table(tmp_path / "b", columns=cols)


def test_without_a_box_every_captioned_success_is_a_record(tmp_path):
    d = convert(DATA / "webdataset", tmp_path / "m")
    assert (d.records, d.filtered, d.unavailable_rows) == (19, {"no caption": 1}, 11)
    assert all(b is None for b in manifest.read_table(tmp_path / "m").column("bbox").to_pylist())


def test_another_caption_column_and_absolute_boxes(tmp_path):
    d = convert(DATA / "files", tmp_path / "m", caption_column="laion_caption", bbox_column="face_box_px",
                bbox_format="absolute", resize_mode="border")
    recs = {r["key"]: r for r in manifest.read_table(tmp_path / "m").to_pylist()}
    assert recs["web/000005/caption/0"]["bbox"] == [6, 15, 26, 37]        # 6.375, 15.188, 25.625, 36.812
    assert d.rows_read == d.records + sum(d.filtered.values()) + d.unavailable_rows


def test_the_wrong_resize_mode_is_an_error_naming_the_shard_and_row(tmp_path):
    with pytest.raises(pipeline.ConvertError, match=r"web: 00000.parquet line \d+: stored size 64x64 is not what "
                                                    r"resize_mode keep_ratio makes of a \d+x\d+ picture"):
        convert(DATA / "webdataset", tmp_path / "m", **{**BOXED, "resize_mode": "keep_ratio"})


@pytest.mark.parametrize("mode, original, stored, box, expected", [
    ("no", (200, 150), (200, 150), (70, 30, 130, 112), [70, 30, 130, 112]),
    ("keep_ratio", (200, 150), (85, 64), (70, 30, 130, 112), [29, 12, 56, 48]),         # x 0.425 / 0.4267
    ("keep_ratio_largest", (90, 240), (24, 64), (14, 96, 76, 156), [3, 25, 21, 42]),
    ("center_crop", (200, 150), (64, 64), (70, 30, 130, 112), [19, 12, 46, 48]),         # 85x64, cut 10 px left
    ("border", (48, 40), (64, 64), (12, 8, 36, 32), [16, 15, 48, 48]),                    # scaled up, padded 5
    ("border", (48, 40), (48, 40), (12, 8, 36, 32), [12, 8, 36, 32]),                     # resize_only_if_bigger
])
def test_each_resize_mode_places_the_box(mode, original, stored, box, expected):
    assert webboxes.to_stored(box, "absolute", mode, original, stored) == expected


def test_a_box_the_center_crop_cuts_is_filtered():
    with pytest.raises(webboxes.BoxFilter, match="cut off by the center crop"):
        webboxes.to_stored((0, 30, 40, 112), "absolute", "center_crop", (200, 150), (64, 64))


def test_a_name_of_a_curated_dataset_or_namespace_is_refused(tmp_path):
    for name in ("celeba", "celebahq", "Web", "web-set"):
        with pytest.raises(ValueError, match=f"--name {name}"):
            convert(DATA / "webdataset", tmp_path / "m", name=name)


def test_a_success_without_its_image_is_an_error_or_a_ledgered_skip(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(DATA / "webdataset", raw)
    with tarfile.open(DATA / "webdataset" / "00000.tar") as src, tarfile.open(raw / "00000.tar", "w") as dst:
        for m in src:
            if not m.name.startswith("000003."):
                dst.addfile(m, src.extractfile(m))
    with pytest.raises(pipeline.ConvertError, match="00000.parquet line .*key 000003 a success, but its image is not"):
        convert(raw, tmp_path / "m")
    d = convert(raw, tmp_path / "m", on_error="skip")
    assert (d.records, d.errors) == (18, 1)
    [entry] = [json.loads(x) for x in (tmp_path / "m" / "ledger.jsonl").read_text().splitlines()]
    assert entry["dataset"] == "web" and entry["file"] == "00000.parquet"


def test_urls_img2dataset_lost_from_its_parquet_and_missing_shards_are_counted(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(DATA / "webdataset", raw)
    table = pq.read_table(raw / "00001.parquet")
    pq.write_table(table.filter(pa.compute.not_equal(table.column("key"), "000012")), raw / "00001.parquet")
    for f in raw.glob("00002*"):
        f.unlink()
    d = convert(raw, tmp_path / "m")
    assert d.rows_read == 21 and d.unavailable["lost"] == {img2dataset.LOST[1]: 1}
    assert d.rows_read == d.records + sum(d.filtered.values()) + d.errors + d.unavailable_rows
    assert any("image(s) without a row in 00001.parquet" in n for n in d.notes)
    assert any("1 shard(s) missing below 00003, e.g. ['00002']" in n for n in d.notes)


def test_split_by_column(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(DATA / "parquet", raw)
    for f in sorted(raw.glob("*.parquet")):
        t = pq.read_table(f)
        pq.write_table(t.append_column("part", pa.array(["validation" if k.endswith("5") else "train"
                                                         for k in t.column("key").to_pylist()])), f)
    convert(raw, tmp_path / "m", split_by="column", split_column="part")
    recs = manifest.read_table(tmp_path / "m").to_pylist()
    assert {r["key"].split("/")[1] for r in recs if r["source_split"] == "val"} == {"000005", "000015", "000025"}
    assert all(r["split"] == "val" for r in recs if r["source_split"] == "val")


def test_cli_prints_the_link_rot_and_refuses_web_options_elsewhere(tmp_path):
    out = tmp_path / "m"
    res = CliRunner().invoke(main, ["convert", "img2dataset", str(DATA / "parquet"), "--out", str(out), "--name", "faces",
                                    "--licence", "CC-BY-4.0", "--bbox-column", "face_box", "--resize-mode", "border"])
    assert res.exit_code == 0, res.output
    assert "faces: 11 of 31 URLs unavailable (35.5% link rot)" in res.output
    assert "HTTP Error 404: 3" in res.output
    assert summary.read(out).datasets["faces"].records == 16
    res = CliRunner().invoke(main, ["convert", "rafdb", str(tmp_path), "--out", str(out), "--bbox-column", "b"])
    assert res.exit_code != 0 and "--bbox-column: only for `convert img2dataset DIR`" in res.output
    res = CliRunner().invoke(main, ["convert", "img2dataset", str(DATA / "parquet"), "--out", str(out)])
    assert res.exit_code != 0 and "--licence" in res.output


def test_a_manifest_from_before_the_licence_column_still_reads(tmp_path):
    convert(DATA / "webdataset", tmp_path, name="web")
    path = tmp_path / "web.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["licence"]), path)
    table = manifest.read_table(tmp_path)
    assert table.schema == SCHEMA and table.column("licence").null_count == table.num_rows


def test_a_parquet_with_more_rows_than_its_stats_count_stops_the_run(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(DATA / "files", raw)
    (raw / "00001_stats.json").write_text(json.dumps({**json.loads((raw / "00001_stats.json").read_text()), "count": 4}))
    with pytest.raises(pipeline.RawFormatError, match="00001.parquet: holds 10 rows but its stats count 4 URLs"):
        convert(raw, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_convert_all_points_an_img2dataset_folder_to_its_converter(tmp_path):
    shutil.copytree(DATA / "webdataset", tmp_path / "faces")
    (tmp_path / "mystery").mkdir()
    _, skipped = pipeline.discover(tmp_path)
    assert "convert img2dataset DIR --name NAME --licence TERMS" in skipped["faces"]
    assert skipped["mystery"] == "not a dataset name facecorpus knows"


def test_the_summary_keeps_the_link_rot_and_checks_it(tmp_path):
    convert(DATA / "webdataset", tmp_path)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["format"] == "facecorpus-summary/2"
    assert data["datasets"]["web"]["unavailable"] == upstream_by_status()
    assert summary.read(tmp_path).datasets["web"].unavailable_rows == 11
    data["datasets"]["web"]["unavailable"]["failed_to_download"]["HTTP Error 404"] = 4   # one URL too many
    (tmp_path / "summary.json").write_text(json.dumps(data))
    with pytest.raises(summary.SummaryError, match=r"datasets.web: rows read \(31\) != .* \+ unavailable \(12\)"):
        summary.read(tmp_path)
    data["datasets"]["web"]["unavailable"] = {"failed_to_download": 3}
    (tmp_path / "summary.json").write_text(json.dumps(data))
    with pytest.raises(summary.SummaryError, match=r"datasets.web.unavailable: expected \{status: \{reason: count\}\}"):
        summary.read(tmp_path)
    data["format"] = "facecorpus-summary/1"   # a summary of before web sets: no unavailable, still reads
    del data["datasets"]["web"]
    (tmp_path / "summary.json").write_text(json.dumps(data))
    assert summary.read(tmp_path).datasets == {}
