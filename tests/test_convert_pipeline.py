"""The convert driver with a stand-in converter: counts add up, errors name file and line, skips are ledgered."""

import json
import types

import pytest
from click.testing import CliRunner

from facecorpus import manifest, records
from facecorpus.cli import main
from facecorpus.converters import base, pipeline, registry


def fake_rows(raw, ctx):
    for i in range(6):
        where = base.Where("labels.txt", i + 1)
        if i == 4:
            yield base.Filtered(where, "code 9: uncertain")
        else:
            yield base.guard(where, lambda i=i: build(i))
    ctx.note("labels.txt: 1 row beyond the excerpt")


def build(i):
    if i == 5:
        raise base.BadRow("unknown expression code 12")
    return records.attributes("rafdb", f"train_{i}", f"img/train_{i}.jpg", {"expression": "happy"},
                              image_id=f"rafdb/train_{i}", source_split="train" if i < 3 else "test")


@pytest.fixture
def fake(monkeypatch, tmp_path):
    mod = types.SimpleNamespace(NAME="rafdb", DOWNLOAD="http://example", rows=fake_rows, DEFAULTS={"min": 1})
    monkeypatch.setattr(registry, "module", lambda name: mod)
    raw = tmp_path / "raw" / "rafdb"
    raw.mkdir(parents=True)
    return raw


def test_raise_names_file_and_line(fake, tmp_path):
    with pytest.raises(pipeline.ConvertError, match="rafdb: labels.txt line 6: unknown expression code 12"):
        pipeline.convert({"rafdb": fake}, tmp_path / "m")


def test_skip_ledgers_and_counts_add_up(fake, tmp_path):
    out = tmp_path / "m"
    summary = pipeline.convert({"rafdb": fake}, out, on_error="skip")
    d = summary["datasets"]["rafdb"]
    assert (d["rows_read"], d["records"], d["filtered"], d["errors"]) == (6, 4, {"code 9: uncertain": 1}, 1)
    assert d["rows_read"] == d["records"] + sum(d["filtered"].values()) + d["errors"]
    assert d["notes"] == ["labels.txt: 1 row beyond the excerpt"]
    ledger = [json.loads(x) for x in (out / "ledger.jsonl").read_text().splitlines()]
    assert ledger == [{"dataset": "rafdb", "file": "labels.txt", "line": 6, "problem": "unknown expression code 12"}]
    table = manifest.read_table(out)
    assert sorted(table.column("split").to_pylist()) == ["test", "train", "train", "train"]
    assert json.loads((out / "summary.json").read_text()) == summary


def test_cli_convert_prints_summary_and_reports_unusable(fake, tmp_path):
    (tmp_path / "raw" / "mystery").mkdir()
    res = CliRunner().invoke(main, ["convert", "rafdb", str(fake), "--out", str(tmp_path / "m"), "--on-error", "skip",
                                    "--set", "rafdb.min=3"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "rows read == records + filtered + errors" in res.output and "code 9: uncertain: 1" in res.output
    bad = CliRunner().invoke(main, ["convert", "rafdb", str(fake), "--out", str(tmp_path / "m"), "--set", "rafdb.max=3"])
    assert bad.exit_code == 1 and "--set rafdb.max: unknown option" in bad.output
    found, skipped = pipeline.discover(tmp_path / "raw")
    assert list(found) == ["rafdb"] and skipped["mystery"] == "not a dataset name facecorpus knows"
    assert skipped["celeba"].startswith("absent")


def test_help_lists_every_stage():
    res = CliRunner().invoke(main, ["--help"])
    for name in ("convert", "report", "tokenize", "shard", "verify", "train", "generate", "evaluate", "demo"):
        assert name in res.output


def test_guard_turns_malformed_rows_into_failures_with_location():
    out = base.guard(base.Where("a.csv", 3), lambda: records.attributes(
        "cacd", "x", "../x.jpg", {"age": 3}, image_id="cacd/x"))
    assert isinstance(out, base.Failure) and str(out) == "a.csv:3: image path '../x.jpg' escapes the dataset's raw root"


def test_read_text_handles_bom_crlf_and_refuses_html(tmp_path):
    f = tmp_path / "list.txt"
    f.write_bytes(b"\xef\xbb\xbf2\r\na b\r\n")
    assert [(str(w), t) for w, t in base.lines(f, tmp_path)] == [("list.txt:1", "2"), ("list.txt:2", "a b")]
    f.write_bytes(b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title>")
    with pytest.raises(base.RawFormatError, match="list.txt: is an HTML page .*download page: http://d"):
        base.read_text(f, tmp_path, "http://d")
    with pytest.raises(base.RawFormatError, match="missing: expected .*nothere.txt \\(download page: http://d\\)"):
        base.require(tmp_path, "nothere.txt", "http://d")
