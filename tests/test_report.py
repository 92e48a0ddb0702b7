"""`facecorpus report`: the JSON numbers on a small manifest whose counts are known by construction."""

from __future__ import annotations

import json
import re
import shutil

import pyarrow as pa
import pytest
from click.testing import CliRunner
from rich.console import Console

from facecorpus import summary as run_summary
from facecorpus import vocab
from facecorpus.cli import main
from facecorpus.converters.samples import rafdb as rafdb_sample
from facecorpus.manifest import to_table, write_partition
from facecorpus.reports import demo, labelstats, render, stats, table1
from facecorpus.reports.cli import report as report_cmd
from manifestkit import LONG_CAPTION, build_manifest
from shardkit import stream_shards


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    return stats.compute(build_manifest(tmp_path_factory.mktemp("m")))


def test_records_splits_and_table1(report):
    assert report["totals"] == {"records": 15, "images": 13, "photos": 11, "datasets": 8}
    assert report["records"]["mmcelebahq"] == {"caption": 3}
    assert report["records"]["cacd"] == {"attributes": 3}
    assert report["splits"]["records"] == {"train": 8, "val": 1, "test": 6}
    assert report["splits"]["images"] == {"train": 8, "val": 1, "test": 4}
    assert report["splits"]["by_dataset"]["mmcelebahq"]["test"] == {"records": 2, "images": 1}
    assert report["splits"]["reassigned_by_pair"] == {"mmcelebahq <- celeba-partition": 2,
                                                      "celebadialog <- celeba-partition": 1, "cacd <- hash": 1}
    rows = {r["dataset"]: r for r in report["table1"]}
    assert len(rows) == 13 and rows["cacd"]["paper"] == 163_000 and rows["cacd"]["difference"] == 3 - 163_000
    assert not rows["cacd"]["matches_paper"]
    assert rows["cacd"]["reasons"][0] == "filtered here: no face 2"
    assert rows["expw"]["reasons"] == ["not converted in this manifest"]
    assert "part of the download" in rows["celeba"]["reasons"][0]


def test_shared_photos(report):
    shared = report["shared_photos"]
    # celeba/000001 is in celeba, celebadialog and mmcelebahq; celeba/000002 in celeba and mmcelebahq.
    assert shared["photos_in_several"] == 2
    pairs = {tuple(p["datasets"]): p["photos"] for p in shared["pairs"]}
    assert pairs == {("celeba", "mmcelebahq"): 2, ("celeba", "celebadialog"): 1, ("mmcelebahq", "celebadialog"): 1}


def test_attribute_distributions_and_axes(report):
    age = report["attributes"]["cacd"]["age"]
    assert age == {"type": "int", "records": 3, "missing": 0, "distinct": 2, "top": [[25, 2], [61, 1]], "other": 0}
    assert report["attributes"]["fs2k"]["smile"]["top"] == [[True, 1]]
    assert report["attributes"]["rafdb"]["gender"]["records"] == 1
    ages = report["axes"]["ages"]
    assert ages["datasets"]["cacd"]["scale"] == "years"
    assert ages["datasets"]["cacd"]["binned"] == [0, 0, 0, 2, 0, 0, 0, 1, 0]
    assert ages["datasets"]["fairface"]["binned"] == [0, 0, 1, 0, 0, 0, 0, 0, 1]
    assert ages["datasets"]["celebadialog"] == {"scale": "scale", "values": [[2, 1]], "binned": None, "out_of_range": 0}
    expr = report["axes"]["expressions"]["datasets"]
    assert expr["affectnet"]["counts"] == [0, 1, 0, 0, 0, 0, 0, 1] and expr["rafdb"]["counts"][3] == 1
    assert report["axes"]["gender"]["celeba"] == [["male", 1], ["female", 1]] or \
        report["axes"]["gender"]["celeba"] == [["female", 1], ["male", 1]]
    assert report["axes"]["race"] == {"fairface": [["east asian", 1], ["white", 1]]} or \
        report["axes"]["race"] == {"fairface": [["white", 1], ["east asian", 1]]}
    assert report["axes"]["colors"]["fs2k"] == {"hair color": [["rosy brown", 1]], "lip color": [["brown", 1]]}


def test_lengths_match_the_tokenizer(report):
    lengths = report["lengths"]
    long_ids = len(vocab.encode_text(LONG_CAPTION))
    assert long_ids > stats.TEXT_BUDGET
    cap = lengths["wordpiece"]["caption"]
    assert cap["records"] == 4 and cap["over_budget"] == 1 and cap["over_budget_share"] == 0.25
    assert cap["max"] == long_ids
    assert lengths["words"]["caption"]["max"] == len(LONG_CAPTION.split())
    assert lengths["by_dataset"]["mmcelebahq"]["caption"]["wordpiece"]["hist"][-1] == [long_ids, 1]
    assert lengths["wordpiece"]["attributes"]["over_budget"] == 0


def test_word_sums_equal_encode_batch():
    texts = ["celeba 5 o clock shadow: false; wearing hat: true", "Élodie's café—naïve, 42nd!", "x" * 130 + " ok",
             "fairface age: more than 70; race: latino hispanic", "she has 大 eyes\tand\u00a0bangs."]
    words, ids = stats.wordpiece_lengths(pa.array(texts))
    assert ids.tolist() == [len(e) for e in vocab.encode_batch(texts)]
    assert words.tolist() == [len(t.split()) for t in texts]
    _, ids = stats.wordpiece_lengths(pa.array(["", *texts]).slice(2))  # a slice: offsets not from 0
    assert ids.tolist() == [len(e) for e in vocab.encode_batch(texts[1:])]


def test_filters_and_ledger(report):
    f = report["filters"]
    assert f["summary_found"] and f["datasets"]["cacd"]["records_match"]
    assert f["not_converted"] == {"mystery": "not a dataset name facecorpus knows"}
    assert f["datasets"]["cacd"]["raw_dir"] == "/raw/cacd" and not f["datasets"]["cacd"]["raw_dir_found"]
    assert f["by_reason"] == {"no face": 2, "code 10 (non-face)": 1, "code 9 (uncertain)": 1}
    assert f["ledger"]["entries"] == 2 and f["ledger"]["by_reason"] == {"age N at row N": 2}


def test_cli_writes_json_and_html(tmp_path):
    manifest = build_manifest(tmp_path)
    shards = stream_shards(tmp_path / "shards", {"caption": 3, "attributes": 2}, 2)   # real shards, by the writer
    train_bytes = sum(s["bytes"] for s in json.loads((shards / "index.json").read_text())["shards"])
    out = tmp_path / "report"
    result = CliRunner().invoke(report_cmd, [str(manifest), "--shards", str(shards), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    assert data["shards"]["by_split"]["train"] == {"shards": 3, "samples": 5, "bytes": train_bytes}
    assert data["shards"]["tokenizers"]["text_vocab"]["sha256"] == vocab.VOCAB_SHA256
    html = (out / "report.html").read_text()
    assert "<svg" in html and not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", html)  # nothing to fetch


def test_cli_names_a_bad_manifest(tmp_path):
    result = CliRunner().invoke(report_cmd, [str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "no <dataset>.parquet" in result.output


def test_mixed_value_types_fall_back_to_json():
    summaries, full = labelstats.distributions({"celebadialog": (['{"age": 2, "smiling": 1}', '{"age": "young"}'], [3, 1])})
    assert summaries["celebadialog"]["age"] == {"type": "mixed", "records": 4, "missing": 0, "distinct": 2,
                                                "top": [[2, 3], ["young", 1]], "other": 0}
    assert summaries["celebadialog"]["smiling"]["missing"] == 1 and "smiling" not in full["celebadialog"]


def test_top_values_and_other():
    strings = [json.dumps({"age": a}) for a in range(20)]
    summary = labelstats.distributions({"cacd": (strings, list(range(1, 21)))})[0]["cacd"]["age"]
    assert summary["distinct"] == 20 and len(summary["top"]) == labelstats.TOP
    assert summary["top"][0] == [19, 20] and summary["other"] == sum(range(1, 21 - labelstats.TOP))


def test_demo_stage_writes_out_report(tmp_path):
    build_manifest(tmp_path)
    result = demo.run(tmp_path, Console(quiet=True), seed=0)
    assert result["records"] == 15 and result["datasets"] == 8
    assert json.loads((tmp_path / "report" / "report.json").read_text())["totals"]["records"] == 15
    html = (tmp_path / "report" / "report.html").read_text()
    assert html == render.render(json.loads((tmp_path / "report" / "report.json").read_text()))  # from the JSON alone


def test_empty_manifest_renders_without_warnings(tmp_path):
    write_partition(to_table([]), tmp_path / "m", "cacd")
    result = CliRunner().invoke(report_cmd, [str(tmp_path / "m"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["totals"]["records"] == 0 and data["lengths"]["wordpiece"] == {}
    assert all(r["reasons"] == ["not converted in this manifest"] for r in data["table1"])


def test_table1_compares_the_kind_the_paper_counts():
    counts = run_summary.DatasetSummary(raw_dir="../raw/affectnet", rows_read=420_299, records=300_299,
                                        filtered={"non-face (code 10)": 120_000}, errors=0, notes=[])
    summary = run_summary.RunSummary({"affectnet": counts}, run_summary.SplitSummary(), {}, "raise")
    rows = {r["dataset"]: r for r in table1.compare(
        {"celebadialog": {"caption": 202_599, "attributes": 5}, "imdbwiki": {"attributes": 523_051},
         "affectnet": {"attributes": 300_299}}, summary)}
    assert rows["celebadialog"]["matches_paper"] and rows["celebadialog"]["records"] == 202_599
    assert rows["celebadialog"]["reasons"] == ["also 5 attributes records, not part of Table 1's count"]
    assert rows["imdbwiki"]["matches_paper"] and rows["imdbwiki"]["reasons"] == []
    assert rows["affectnet"]["difference"] == 300_299 - 400_000
    assert rows["affectnet"]["reasons"][0] == "filtered here: non-face (code 10) 120,000"
    assert rows["affectnet"]["reasons"][-1] == table1.PAPER["affectnet"].reason
    assert table1.PAPER_TOTAL_K == 2334  # the paper's "2.3M face-text pairs"


@pytest.mark.parametrize("bad", ['{"age": 2', '[1, 2]'])
def test_labels_that_are_not_an_object_are_named(bad):
    with pytest.raises(labelstats.LabelsError, match=r"cacd\.parquet, column labels: 1 records .*not"):
        labelstats.distributions({"cacd": (['{"age": 3}', bad], [4, 1])})


def test_report_shows_what_convert_did_not_convert(tmp_path):
    """convert --all writes the folders it did not convert into summary.json; the report reads and shows them
    (they once went under two different keys, so the report's list was always empty)."""
    raw = tmp_path / "raw"
    rafdb_sample.write(raw / "rafdb", seed=0)
    (raw / "mystery").mkdir()
    result = CliRunner().invoke(main, ["convert", "--all", str(raw), "--out", str(tmp_path / "m"), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    moved = tmp_path / "moved"
    shutil.move(raw, moved)
    result = CliRunner().invoke(report_cmd, [str(tmp_path / "m"), "--out", str(tmp_path / "r"), "--raw-root", str(moved)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["filters"]["not_converted"]["mystery"] == "not a dataset name facecorpus knows"
    assert data["filters"]["not_converted"]["celeba"].startswith("absent: no folder")
    assert data["filters"]["datasets"]["rafdb"]["raw_dir"] == str(moved / "rafdb")
    assert data["filters"]["datasets"]["rafdb"]["raw_dir_found"]
    html = (tmp_path / "r" / "report.html").read_text()
    assert "<td>mystery</td><td>not a dataset name facecorpus knows</td>" in html
