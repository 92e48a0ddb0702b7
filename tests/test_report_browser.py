"""report.html in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium).

The page must load from file:// with no console errors (it is self-contained, so nothing may fail to
load), every plot must show its data (as many visible bars or histograms as report.json has values
for it: a plot can draw axes, ticks and a legend and still show nothing), and it leaves a screenshot
at test-artifacts/report.png for a person to look at.
Skips when Chromium is absent, except under CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from facecorpus.reports.cli import report as report_cmd
from manifestkit import build_manifest
from shardkit import stream_shards

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths) -> str | None:
    return next((p for p in paths if Path(p).exists()), None)


def _browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; skip locally, fail under CI, when something is missing."""
    chromium, driver = _first(CHROMIUM), _first(CHROMEDRIVER)
    missing = [what for what, ok in (("chromium", chromium), ("chromium-driver", driver)) if not ok]
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium (pip)")
    if not missing:
        return chromium, driver
    why = (f"{', '.join(missing)} absent: install with `apt-get install -y chromium chromium-driver` "
           "and `pip install selenium`")
    if os.environ.get("CI") == "true":
        pytest.fail(why + " (CI must run the browser test)")
    pytest.skip(why)


def expected_marks(report: dict) -> dict[str, int]:
    """How many value marks (bars; one histogram per panel) each plot must show, from report.json alone:
    one per non-zero value it plots."""
    ax, lengths, shards = report["axes"], report["lengths"], report["shards"]

    def nonzero(values) -> int:
        return sum(1 for v in values if v)

    return {
        "records": nonzero(r["records"] for r in report["table1"]) + nonzero(r["paper"] for r in report["table1"]),
        "splits": nonzero(v["records"] for d in report["splits"]["by_dataset"].values() for v in d.values()),
        "ages": sum(nonzero(e["binned"] or [n for _, n in e["values"]]) for e in ax["ages"]["datasets"].values()),
        "expressions": sum(nonzero(e["counts"]) for e in ax["expressions"]["datasets"].values()),
        "gender": sum(nonzero(n for _, n in pairs) for pairs in ax["gender"].values()),
        "race": sum(nonzero(n for _, n in pairs) for pairs in ax["race"].values()),
        "colors": sum(nonzero(n for _, n in pairs) for attrs in ax["colors"].values() for pairs in attrs.values()),
        "lengths": 2 * len(lengths["wordpiece"]),  # words and WordPiece ids, one histogram each per kind
        "shards": sum(nonzero((v["samples"], v["bytes"])) for v in shards["by_split_kind"].values()),
    }


# Per figure, the marks with a drawn body: a bar whose corner was masked away has a zero-height box.
VISIBLE_MARKS = """
return Object.fromEntries([...document.querySelectorAll('figure[data-plot]')].map(f => [f.dataset.plot,
    [...f.querySelectorAll('[id*="-mark-"]')].filter(m => {
        const box = m.getBoundingClientRect(); return box.width > 0 && box.height > 0; }).length]));
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_report_html_in_headless_chromium(tmp_path):
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out = tmp_path / "report"
    shards = stream_shards(tmp_path / "shards", {"caption": 3, "attributes": 2}, 2)
    result = CliRunner().invoke(report_cmd, [str(build_manifest(tmp_path)), "--shards", str(shards), "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = expected_marks(json.loads((out / "report.json").read_text()))
    assert min(expected.values()) > 0  # the manifest has something for every plot

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,2000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager must never try to download a driver (no network in CI).
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        browser.get((out / "report.html").as_uri())
        assert browser.title == "facecorpus report"
        assert browser.execute_script("return document.readyState") == "complete"
        svgs = browser.execute_script("return document.querySelectorAll('figure svg').length")
        assert svgs == len(expected)
        assert browser.execute_script(VISIBLE_MARKS) == expected
        # Every plot has a real size on the page (an SVG that failed to parse renders as 0x0 or an error).
        sizes = browser.execute_script(
            "return [...document.querySelectorAll('figure svg')].map(s => s.getBoundingClientRect().width)")
        assert min(sizes) > 100
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        ARTIFACTS.mkdir(exist_ok=True)
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1200, min(int(height) + 100, 12000))
        assert browser.save_screenshot(str(ARTIFACTS / "report.png"))
    finally:
        browser.quit()
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    shutil.copy(out / "report.html", ARTIFACTS / "report.html")
