"""The report beside a web set: its records counted like any dataset's, and its link rot (the URLs
img2dataset was given, how many arrived, why the others did not) in report.json and report.html."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from facecorpus.converters import pipeline
from facecorpus.converters.samples import rafdb as rafdb_sample
from facecorpus.reports import render, stats
from facecorpus.reports.cli import report as report_cmd

DATA = Path(__file__).parent / "data" / "img2dataset" / "webdataset"


def test_link_rot_in_the_report_json_and_html(tmp_path):
    rafdb_sample.write(tmp_path / "rafdb", seed=0)
    manifest = tmp_path / "m"
    pipeline.convert({"rafdb": tmp_path / "rafdb", "faces": DATA}, manifest, converters={"faces": "img2dataset"},
                     overrides={"faces": {"licence": "CC-BY-4.0", "bbox_column": "face_box", "resize_mode": "border"}},
                     jobs=1)
    report = stats.compute(manifest)
    assert report["records"]["faces"] == {"caption": 16} and "rafdb" in report["records"]
    assert report["splits"]["by_dataset"]["faces"] and report["lengths"]["by_dataset"]["faces"]["caption"]
    assert report["filters"]["datasets"]["faces"]["unavailable"]["failed_to_download"]["HTTP Error 404"] == 3
    rot = report["link_rot"]
    assert list(rot) == ["faces"]                                   # rafdb has no URLs to lose
    assert {k: rot["faces"][k] for k in ("urls", "arrived", "unavailable")} == {"urls": 31, "arrived": 20, "unavailable": 11}
    assert rot["faces"]["by_status"] == {"failed_to_download": 7, "failed_to_resize": 4}
    assert rot["faces"]["by_reason"][0] == {"status": "failed_to_download", "reason": "HTTP Error 404", "urls": 3}
    assert sum(x["urls"] for x in rot["faces"]["by_reason"]) == 11
    out = tmp_path / "r"
    result = CliRunner().invoke(report_cmd, [str(manifest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert html == render.render(json.loads((out / "report.json").read_text()))
    assert "Link rot (web sets)" in html and "faces: why URLs did not arrive" in html and "35.5%" in html
