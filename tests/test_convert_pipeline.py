"""The convert driver with a stand-in converter: counts add up, errors name file and line, skips are ledgered."""

import json
import shutil
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from facecorpus import manifest, records, summary
from facecorpus.cli import main
from facecorpus.converters import base, pipeline, registry
from facecorpus.converters.base import MAX_LINE_CHARS
from facecorpus.converters.samples import rafdb as rafdb_sample
from facecorpus.excerpt import QUOTE_CHARS
from facecorpus.records import MAX_CAPTION_CHARS


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
    written = pipeline.convert({"rafdb": fake}, out, on_error="skip")
    d = written.datasets["rafdb"]
    assert (d.rows_read, d.records, d.filtered, d.errors) == (6, 4, {"code 9: uncertain": 1}, 1)
    assert d.rows_read == d.records + sum(d.filtered.values()) + d.errors
    assert d.notes == ["labels.txt: 1 row beyond the excerpt"]
    ledger = [json.loads(x) for x in (out / "ledger.jsonl").read_text().splitlines()]
    assert ledger == [{"dataset": "rafdb", "file": "labels.txt", "line": 6, "problem": "unknown expression code 12"}]
    table = manifest.read_table(out)
    assert sorted(table.column("split").to_pylist()) == ["test", "train", "train", "train"]
    assert summary.read(out) == written
    # The raw folder is recorded relative to the manifest: both can move together.
    assert d.raw_dir == "../raw/rafdb" and manifest.image_root(out, "rafdb").resolve() == fake.resolve()


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


# --- the run summary: one schema, written by convert, read back through the same module --------------------------

def test_summary_is_checked_on_read(fake, tmp_path):
    out = tmp_path / "m"
    pipeline.convert({"rafdb": fake}, out, on_error="skip")
    data = json.loads((out / summary.FILE).read_text())
    assert data["format"] == summary.FORMAT and set(data) == {"format", "datasets", "splits", "not_converted", "on_error"}
    data["datasets"]["rafdb"]["records"] += 1  # the counts no longer add up
    (out / summary.FILE).write_text(json.dumps(data))
    with pytest.raises(summary.SummaryError, match=r"summary.json: datasets.rafdb: rows read \(6\) != records \(5\)"):
        summary.read(out)
    del data["datasets"]["rafdb"]["errors"]
    (out / summary.FILE).write_text(json.dumps(data))
    with pytest.raises(summary.SummaryError, match=r"datasets.rafdb: missing \['errors'\]"):
        summary.read(out)


def test_summary_written_before_the_format_still_reads(tmp_path):
    legacy = {"datasets": {"cacd": {"raw_dir": "/raw/cacd", "rows_read": 3, "records": 2, "filtered": {"x": 1},
                                    "errors": 0, "notes": []}},
              "splits": {"seed": 0, "holdout": {}, "reassigned": [], "celeba_partition_photos": 0, "records": {}},
              "unusable": {"mystery": "not a dataset name facecorpus knows"}, "on_error": "raise"}
    (tmp_path / summary.FILE).write_text(json.dumps(legacy))
    old = summary.read(tmp_path)
    assert old.not_converted == {"mystery": "not a dataset name facecorpus knows"} and old.datasets["cacd"].records == 2
    assert manifest.image_root(tmp_path, "cacd") == Path("/raw/cacd")
    assert manifest.image_root(tmp_path, "cacd", raw_root=Path("/moved")) == Path("/moved/cacd")


def test_moved_raw_data_is_found_under_a_raw_root(fake, tmp_path):
    out = tmp_path / "m"
    pipeline.convert({"rafdb": fake}, out, on_error="skip")
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "raw", moved)
    assert not manifest.image_root(out, "rafdb").is_dir()
    assert manifest.image_root(out, "rafdb", raw_root=moved) == moved / "rafdb"
    together = tmp_path / "together"  # manifest and raw data moved together: the relative path holds
    together.mkdir()
    shutil.move(moved, together / "raw")
    shutil.move(out, together / "m")
    assert manifest.image_root(together / "m", "rafdb").resolve() == (together / "raw" / "rafdb").resolve()


# --- an empty source never replaces records ---------------------------------------------------------------------

def test_a_conversion_without_records_never_silently_empties_a_partition(fake, tmp_path, monkeypatch):
    out = tmp_path / "m"
    pipeline.convert({"rafdb": fake}, out, on_error="skip")
    before = manifest.read_table(out).to_pylist()
    mod = registry.module("rafdb")

    def every_row_fails(raw, ctx):
        for i in range(3):
            yield base.Failure(base.Where("labels.txt", i + 1), "unknown expression code 12")

    monkeypatch.setattr(mod, "rows", every_row_fails)
    with pytest.raises(pipeline.ConvertError, match=r"rafdb: this conversion has no records \(3 rows read: 3 errors.*"
                                                    r"would replace the 4 records of .*rafdb.parquet.*--allow-empty"):
        pipeline.convert({"rafdb": fake}, out, on_error="skip")
    assert manifest.read_table(out).to_pylist() == before and summary.read(out).datasets["rafdb"].records == 4
    emptied = pipeline.convert({"rafdb": fake}, out, on_error="skip", allow_empty=True)
    assert emptied.datasets["rafdb"].errors == 3 and manifest.partition_rows(out, "rafdb") == 0
    assert len((out / "ledger.jsonl").read_text().splitlines()) == 3


def test_a_source_without_rows_is_an_error_naming_the_dataset(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(registry.module("rafdb"), "rows", lambda raw, ctx: iter(()))
    with pytest.raises(base.RawFormatError, match=r"rafdb: the raw files under .*rafdb hold no rows"):
        pipeline.convert({"rafdb": fake}, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_partitions_are_replaced_together_or_not_at_all(tmp_path, monkeypatch):
    recs = {d: [records.attributes(d, "a", "a.jpg", {"age": 3}, image_id=f"{d}/a")] for d in ("cacd", "afad")}
    tables = {d: manifest.to_table(r) for d, r in recs.items()}
    manifest.write_partitions(tables, tmp_path)
    new = {d: manifest.to_table([records.attributes(d, "b", "b.jpg", {"age": 4}, image_id=f"{d}/b")]) for d in tables}
    real_write = pq.write_table

    def fail_on_the_second(table, where, **kw):
        if "afad" in str(where):
            raise OSError("disk full")
        return real_write(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", fail_on_the_second)
    with pytest.raises(OSError, match="disk full"):
        manifest.write_partitions(new, tmp_path)
    assert sorted(manifest.read_table(tmp_path).column("key").to_pylist()) == ["afad/a/attributes/0", "cacd/a/attributes/0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afad.parquet", "cacd.parquet"]  # no temporary left


def test_tokenize_plans_images_under_a_raw_root(tmp_path):
    """The raw data moved after convert: tokenize --raw-root finds every image again."""
    from facecorpus.shards.plan import plan

    rafdb_sample.write(tmp_path / "raw" / "rafdb", seed=0)
    pipeline.convert({"rafdb": tmp_path / "raw" / "rafdb"}, tmp_path / "m")
    shutil.move(tmp_path / "raw", tmp_path / "moved")
    assert not any(Path(p).is_file() for p in plan(tmp_path / "m")["path"])
    moved = plan(tmp_path / "m", raw_root=tmp_path / "moved")["path"]
    assert len(moved) and all(Path(p).is_file() for p in moved)
    res = CliRunner().invoke(main, ["tokenize", "--help"])
    assert "--raw-root" in res.output


def test_a_huge_line_neither_floods_the_terminal_nor_the_ledger(tmp_path):
    raw = tmp_path / "raw" / "rafdb"
    rafdb_sample.write(raw, seed=0)
    listing = raw / "basic" / "EmoLabel" / "list_patition_label.txt"
    listing.write_bytes(listing.read_bytes() + b"\n" + b"train_99999.jpg" + b"9" * 5_000_000)  # echoed whole once
    out = tmp_path / "m"
    res = CliRunner().invoke(main, ["convert", "rafdb", str(raw), "--out", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and len(res.output) < 1_000
    assert f"over the {MAX_LINE_CHARS:,}-character limit" in res.output and "--on-error skip" in res.output
    res = CliRunner().invoke(main, ["convert", "rafdb", str(raw), "--out", str(out), "--on-error", "skip"])
    assert res.exit_code == 0, res.output
    [row] = (out / "ledger.jsonl").read_text().splitlines()
    assert len(row) < 300 and json.loads(row)["problem"].startswith("line of 5,000,015 characters")


def test_convert_help_states_the_limits_it_enforces():
    res = CliRunner().invoke(main, ["convert", "--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    assert f"{MAX_LINE_CHARS:,} characters" in text and f"{MAX_CAPTION_CHARS:,} characters" in text
    assert f"{QUOTE_CHARS} characters" in text and "--allow-empty" in text
