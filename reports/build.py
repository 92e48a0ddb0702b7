"""The report folder: compute the numbers, write report.json, render report.html from the written JSON.

`facecorpus report` and the demo's report stage call `write_report`; both files are written atomically,
and the page is rendered from the JSON as written, so the numbers on the page are the numbers in the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from facecorpus.atomic import atomic_write
from facecorpus.reports import render, stats

STEPS = 6  # stats.compute's steps + rendering


def write_report(manifest: Path, shards: Path | None, out: Path, step: Callable[[str], None] = lambda name: None,
                 raw_root: Path | None = None) -> dict:
    """Write `out/report.json` and `out/report.html`; returns the report. `step(name)` is called before each
    of the STEPS stages (for a progress display)."""
    out.mkdir(parents=True, exist_ok=True)
    report = stats.compute(manifest, shards, step=step, raw_root=raw_root)
    text = json.dumps(report, indent=1, ensure_ascii=False)
    atomic_write(out / "report.json", text)
    step("rendering report.html")
    atomic_write(out / "report.html", render.render(json.loads(text)))
    return report
