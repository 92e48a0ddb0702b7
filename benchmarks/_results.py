"""What every benchmark does first (import this module before anything else) and last (`append`).

First: a bare checkout without facecorpus installed (the lent GPU machines) gets the top-level
folders mapped into the `facecorpus.*` namespace as pyproject's package-dir does, and the tests'
helper modules (tests/tokenkit.py: generated manifests, stand-in encoders) become importable.
Last: `append` prints a result block with machine and date and adds it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path += [str(ROOT), str(ROOT / "tests")]  # last: an installed facecorpus wins

try:
    import facecorpus.trainer  # noqa: F401 - any mapped subpackage tells an installed package apart
except ImportError:
    import facecorpus

    facecorpus.__path__.append(str(ROOT))

import datetime as _dt  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402

# FACECORPUS_RESULTS: another file to append to (benchmarks/gpu.sh --cpu-smoke writes a scratch one).
RESULTS = Path(os.environ.get("FACECORPUS_RESULTS") or HERE / "RESULTS.md")


def machine() -> str:
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{platform.node() or 'host'}: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}{gpu}"


def append(title: str, lines: list[str], record: bool = True) -> None:
    """Print `## title` + machine, date, command and `lines`; with `record`, add them to RESULTS.md."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = [f"## {title}", "", f"- date: {stamp}", f"- machine: {machine()}",
             f"- command: `{' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`", "", *lines, ""]
    text = "\n".join(block) + "\n"
    print(text)
    if record:
        with open(RESULTS, "a", encoding="utf-8") as fh:
            fh.write(text)


def profile(path: str | None, title: str, run, sync=lambda: None) -> None:
    """Append to `path` (if given) torch.profiler's operator table of `run()`: where the time went,
    self time first (the device's when there is one)."""
    if not path:
        return
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with torch_profile(activities=activities) as prof:
        run()
        sync()
    table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=25)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"## {title}\n\n{table}\n\n")
