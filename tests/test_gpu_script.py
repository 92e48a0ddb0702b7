"""benchmarks/gpu.sh, the one script a lent GPU runs (issue 14), kept working by CI: every step at toy
sizes on CPU (`--cpu-smoke`), its figures in a scratch file, benchmarks/RESULTS.md left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # every GPU benchmark at toy sizes on CPU: 1-4 minutes
def test_the_gpu_script_runs_every_benchmark_at_toy_sizes_on_cpu(tmp_path):
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_bytes()
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--cpu-smoke"], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    got = (tmp_path / "RESULTS-gpu.md").read_text()
    for title in ("tokenize: pipeline vs bare encoder variants vs one at a time",
                  "tokenize: pipeline overhead with a no-op encoder vs a bare decode loop",
                  "train: Talk2Face step, tiny on cpu", "generate: KV-cache decoding vs cache-less, tiny on cpu"):
        assert f"## {title}" in got
    assert "| flex-packed |" in got and "data wait" in got and "engine local" in got
    assert "== gpu-tests: exit 0" in (tmp_path / "gpu.log").read_text()
    # The device tool brings back at most 8 files from $OUT.
    assert {p.name for p in tmp_path.iterdir()} <= {"RESULTS-gpu.md", "RESULTS-smoke.md", "gpu.log", "profiles.txt"}
    assert results.read_bytes() == before
