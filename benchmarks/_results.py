"""Append a benchmark result block, with machine and date, to benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{platform.node() or 'host'}: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}{gpu}"


def append(title: str, lines: list[str]) -> None:
    """Write `## title` + machine, date, command and `lines` at the end of RESULTS.md (and print it)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = [f"## {title}", "", f"- date: {stamp}", f"- machine: {machine()}",
             f"- command: `{' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`", "", *lines, ""]
    text = "\n".join(block) + "\n"
    print(text)
    with open(RESULTS, "a", encoding="utf-8") as fh:
        fh.write(text)
