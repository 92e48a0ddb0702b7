"""Demo stage: the report of the demo corpus, OUT/manifest (+ OUT/shards when built) -> OUT/report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from facecorpus.reports.cli import summary_table, write_with_progress


def run(out: Path, console: Console, seed: int = 0) -> dict:
    """Write OUT/report/report.json and report.html; `seed` is unused (the report is deterministic)."""
    shards = out / "shards"
    report_dir = out / "report"
    report = write_with_progress(out / "manifest", shards if (shards / "index.json").exists() else None, report_dir,
                                 console)
    console.print(summary_table(report, report_dir))
    over = report["lengths"]["wordpiece"].get("caption", {}).get("over_budget_share", 0.0)
    return {"records": report["totals"]["records"], "datasets": report["totals"]["datasets"],
            "captions over budget": f"{over:.1%}", "html": str(report_dir / "report.html")}
