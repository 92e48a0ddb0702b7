"""`tokenize --ray-address` on a real two-node Ray cluster on loopback: both nodes read, the cache is
the one-process tokenizer's; and a node whose workers cannot import facecorpus is named in one line.

The nodes are `ray start --block` children of the test (tests/raycluster.py), each with its own
resources and temp folder, with Ray's token authentication on (its default once a token exists);
each is ended by its own PID, never by `ray stop`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import raycluster
from facecorpus.shards import cache as cache_mod
from tokenkit import make_manifest, tokenize_in_process

CLI = [sys.executable, "-c", "from facecorpus.cli import main; main()"]
HIDE = """import sys


class _Hidden:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "facecorpus" or name.startswith("facecorpus."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, _Hidden)
"""


def _tokenize(manifest: Path, cache: Path, address: str, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["tokenize", str(manifest), "--cache", str(cache), "--ray-address", address, *extra],
                          env={**env, "RAY_AUTH_MODE": "token", "COLUMNS": "200"}, capture_output=True, text=True,
                          timeout=300)


def _summary(stderr: str) -> dict[str, str]:
    """The command's summary table (rich draws `│ what │ value │` rows)."""
    return {m[1]: m[2] for m in re.finditer(r"^│ (\w+) +│ +(.*?) │$", stderr, re.M)}


def _codes(cache: Path) -> dict[str, bytes]:
    table = cache_mod.read_codes(cache, ["image_id", "codes"])
    flat = np.asarray(table.column("codes").combine_chunks().flatten()).reshape(len(table), -1)
    return dict(zip(table.column("image_id").to_pylist(), (row.tobytes() for row in flat)))


@pytest.mark.slow
def test_two_nodes_both_read_and_the_cache_is_the_one_process_one(tmp_path):
    manifest = make_manifest(tmp_path, 96, seed=11, captions=False)
    env = raycluster.token_home()
    with raycluster.node(env, cpus=1) as head, \
            raycluster.node({**env, "RAY_AUTH_MODE": "token"}, head=head["address"], cpus=1,
                            resources={"second_node": 1}):
        raycluster.wait_for_nodes(head["address"], env, 2)
        # --part-rows 8: several cache parts, the sink's part by part writing on a cluster too; --batch-size 8:
    # 13 read blocks to share.
        run = _tokenize(manifest, tmp_path / "cache", head["address"], env, "--part-rows", "8", "--batch-size", "8")
    assert run.returncode == 0, run.stderr[-3000:]
    s = _summary(run.stderr)
    # main: one actor asking for both CPUs (min(4, cluster CPUs)) fits on neither 1-CPU node: a hang.
    assert s["read_nodes"] == "2", run.stderr[-3000:]  # nodes that read at least one image
    assert s["accounted"] == "True" and s["unique_images"] == "100"  # 96 faces + 4 broken files
    # The encoder in the same shape as each actor's (batches of 8, one thread): a float32 CPU convolution
    # may round its last bit differently in other shapes, and a near tie between two codes can flip.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tokenize_in_process(manifest, tmp_path / "reference", batch_size=8)
    finally:
        torch.set_num_threads(threads)
    assert _codes(tmp_path / "cache") == _codes(tmp_path / "reference")
    assert len(_codes(tmp_path / "cache")) == int(s["cached"]) == 96


@pytest.mark.slow
def test_a_node_whose_workers_cannot_import_facecorpus_is_named_in_one_line(tmp_path):
    # The node's Python has no facecorpus: its workers run a sitecustomize that hides the package this
    # machine has installed, as a node where it was never installed.
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "sitecustomize.py").write_text(HIDE)
    manifest = make_manifest(tmp_path, 4, seed=12, broken=False, captions=False)
    env = raycluster.token_home()
    with raycluster.node({**env, "PYTHONPATH": str(stale)}, cpus=1) as head:
        run = _tokenize(manifest, tmp_path / "cache", head["address"], env)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]  # main: a Ray traceback
    error = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, run.stderr[-3000:]
    named = r"cannot import facecorpus\.shards\.reading on 1 of 1 nodes: \S+ \(node [0-9a-f]{8}\): "
    assert re.search(named + "ModuleNotFoundError: No module named 'facecorpus'", error[0]), error[0]
    assert "pip install facecorpus==0.1.0" in error[0] and "--ray-runtime-env" in error[0]
    assert not list((tmp_path / "cache" / "codes").glob("*.parquet"))  # stopped before reading any image
