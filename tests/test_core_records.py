"""Record schema, manifest validation on write and read, split harmonization."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facecorpus import imageref, manifest, records, summary
from facecorpus.converters import splits


def rec(i=1, dataset="cacd", image=None, image_id=None, **kw):
    return records.attributes(dataset, f"img{i}", image or f"x/{i}.jpg", {"age": 20 + i},
                              image_id=image_id or f"{dataset}/{i}", **kw)


def test_attribute_record_fields():
    r = rec(3, subject_id="person/bob", bbox=[1, 2, 30, 40], source_split="test")
    assert r.key == "cacd/img3/attributes/0" and r.text == "cacd age: 23" and r.photo_id == "cacd/3"
    [row] = manifest.to_table([r]).to_pylist()
    assert json.loads(row["labels"]) == {"age": 23} and row["bbox"] == [1, 2, 30, 40]


@pytest.mark.parametrize("change, message", [
    (dict(image="../etc/passwd"), "escapes the dataset's raw root"),
    (dict(image="/abs/x.jpg"), "escapes"),
    (dict(bbox=[5, 5, 1, 9]), "bbox"),
    (dict(source_split="training"), "split"),
    (dict(image_id="noslash"), "image_id"),
])
def test_record_rules(change, message):
    with pytest.raises(records.RecordError, match=message):
        rec(1, **change)


def test_local_id_removes_dots_and_slashes():
    assert records.make_key("afad", "15/111/638-0.jpg", "attributes") == "afad/15-111-638-0-jpg/attributes/0"
    assert records.local_id("Zoë Saldaña") == "Zoë_Saldaña"


def test_manifest_round_trip_and_checks(tmp_path):
    table = manifest.to_table([rec(i) for i in range(5)])
    manifest.write_partition(table, tmp_path, "cacd")
    counts = summary.DatasetSummary(raw_dir="../raw/cacd", rows_read=5, records=5, filtered={}, errors=0, notes=[])
    summary.write(tmp_path, summary.RunSummary({"cacd": counts}, summary.SplitSummary(), {}, "raise"))
    back = manifest.read_table(tmp_path)
    assert back.num_rows == 5 and back.schema == records.SCHEMA
    assert manifest.image_root(tmp_path, "cacd") == tmp_path / "../raw/cacd"


def test_manifest_refuses_duplicate_keys(tmp_path):
    table = manifest.to_table([rec(1), rec(1)])
    with pytest.raises(manifest.ManifestError, match="1 duplicate keys, e.g. \\['cacd/img1/attributes/0'\\]"):
        manifest.write_partition(table, tmp_path, "cacd")


def test_manifest_refuses_dots_wrong_types_and_duplicates_across_partitions(tmp_path):
    bad = manifest.to_table([rec(1)]).to_pylist()
    bad[0]["key"] = "cacd/a.b/attributes/0"
    with pytest.raises(manifest.ManifestError, match="keys contain '.'"):
        manifest.check_table(pa.Table.from_pylist(bad, schema=records.SCHEMA), "t")
    t = manifest.to_table([rec(1)])
    pq.write_table(t.set_column(t.schema.get_field_index("bbox"), "bbox", pa.array([[1.5, 2, 3, 4]])), tmp_path / "cacd.parquet")
    with pytest.raises(manifest.ManifestError, match="cacd.parquet: schema differs"):
        manifest.read_table(tmp_path)
    manifest.write_partition(t, tmp_path, "cacd")
    other = manifest.to_table([rec(1)]).to_pylist()
    other[0]["dataset"] = "afad"
    pq.write_table(pa.Table.from_pylist(other, schema=records.SCHEMA), tmp_path / "afad.parquet")
    with pytest.raises(manifest.ManifestError, match="duplicate keys"):
        manifest.read_table(tmp_path)


def frame(rows):
    return pd.DataFrame(rows, columns=["dataset", "photo_id", "subject_id", "source_split"])


def test_most_held_out_split_wins_and_is_counted():
    df = frame([("celeba", "celeba/1", "celeba-id/7", "train"), ("mmcelebahq", "celeba/1", None, "test"),
                ("celeba", "celeba/2", "celeba-id/7", "train")])
    split, moves = splits.harmonize(df, {"celeba/1": "val", "celeba/2": "train"})
    assert list(split) == ["test", "test", "test"]   # celeba/2 follows its person (celeba-id/7) into test
    assert moves == [{"dataset": "celeba", "from": "train", "to": "test", "decided_by": "mmcelebahq", "count": 1},
                     {"dataset": "celeba", "from": "train", "to": "test", "decided_by": "same-person", "count": 1}]


def test_unsplit_photos_follow_their_person_then_a_seeded_hash():
    people = [f"person/p{i}" for i in range(400)]
    df = frame([("cacd", f"cacd/{p}-{k}", p, None) for p in people for k in range(3)]
               + [("imdbwiki", "imdbwiki/x", "person/p0", None), ("fairface", "fairface/1", None, "test"),
                  ("cacd", "cacd/extra", "person/held", None), ("fairface", "fairface/2", "person/held", "test")])
    split, moves = splits.harmonize(df, None, seed=3)
    by_person = pd.DataFrame({"s": df["subject_id"], "split": split}).dropna().groupby("s")["split"].nunique()
    assert (by_person == 1).all()                      # no person spans two splits
    assert split[-2] == "test"                         # follows the person's held-out photo
    shares = pd.Series(split[:1200]).value_counts(normalize=True)
    assert 0.85 < shares["train"] < 0.95 and shares["test"] > 0.02
    assert splits.harmonize(df, None, seed=3)[0].tolist() == split.tolist()   # deterministic
    assert splits.harmonize(df, None, seed=4)[0].tolist() != split.tolist()
    assert sum(m["count"] for m in moves) == len(df) - 2  # all but the two fairface test photos were assigned


def test_manifest_refuses_a_bbox_of_other_than_four_values(tmp_path):
    rows = manifest.to_table([rec(1, bbox=[1, 2, 3, 4]), rec(2)]).to_pylist()
    rows[0]["bbox"] = [1, 2, 3]
    with pytest.raises(manifest.ManifestError, match="bbox must be 4 ints .*cacd/img1/attributes/0"):
        manifest.check_table(pa.Table.from_pylist(rows, schema=records.SCHEMA), "t")
    good = manifest.to_table([rec(1, bbox=[1, 2, 3, 4]), rec(2)])
    manifest.write_partition(good, tmp_path, "cacd")
    assert manifest.read_table(tmp_path).column("bbox").to_pylist() == [[1, 2, 3, 4], None]


def test_a_web_set_takes_a_free_name_but_never_a_curated_one_or_a_namespace():
    assert records.is_dataset("faces15m") and records.is_dataset("celeba")
    assert records.make_key("faces15m", "000001", "caption") == "faces15m/000001/caption/0"
    for name in ("celeba", "celebahq", "person", "sha256", "Faces", "face-caption", "1web", "x" * 33):
        assert records.web_name_problem(name), name
        if name not in records.DATASETS:
            with pytest.raises(records.RecordError):
                records.make_key(name, "000001", "caption")


def test_a_converter_may_not_write_another_datasets_records(monkeypatch, tmp_path):
    import types

    from facecorpus.converters import pipeline, registry

    def rows(raw, ctx):
        yield records.caption("celebadialog", "1", "1.jpg", "a face", 0, image_id="celeba/000001")

    monkeypatch.setattr(registry, "module", lambda name: types.SimpleNamespace(NAME="celeba", DOWNLOAD="", rows=rows))
    with pytest.raises(TypeError, match="celeba converter yielded a record of dataset 'celebadialog'"):
        pipeline.convert({"celeba": tmp_path}, tmp_path / "m")


@pytest.mark.parametrize("image, kind, path", [
    ("img/a.jpg", "file", "img/a.jpg"),
    ("img/a#b.jpg", "file", "img/a#b.jpg"),                          # a `#` alone is part of a name
    ("00000.tar#member=000001.jpg&offset=1536&size=3019", "tar", "00000.tar"),
    ("sub/00000.tar#member=a%26b%23c.jpg&offset=2048&size=7", "tar", "sub/00000.tar"),
    ("00003.parquet#column=jpg&row=12", "parquet", "00003.parquet"),
    ("x.tar#member=a.jpg&offset=1536", "file", "x.tar#member=a.jpg&offset=1536"),  # no size: not a reference
])
def test_image_references_parse_and_print_back(image, kind, path):
    ref = imageref.parse(image)
    assert (ref.kind, ref.path, str(ref)) == (kind, path, image)


def test_an_image_reference_is_checked_on_its_file_part():
    assert records.check_image_path("a//x.tar#member=..%2Fb.jpg&offset=1536&size=3") == \
        "a/x.tar#member=..%2Fb.jpg&offset=1536&size=3"
    for bad in ("../x.tar#member=a.jpg&offset=1536&size=3", "/x.parquet#column=jpg&row=1"):
        with pytest.raises(records.RecordError, match="escapes"):
            records.check_image_path(bad)
    assert imageref.parse(imageref.tar_member("x.tar", "a&b#c=d.jpg", 1536, 9)).member == "a&b#c=d.jpg"
