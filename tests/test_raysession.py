"""Ray for `tokenize`: the embedded Ray never outlives its driver (kill -9 included), and joining a
cluster started with plain `ray start --head` works as Ray documents it, or fails in one clear line.

Every process these tests start is ended by its own PID; nothing here runs `ray stop` or kills by
name, because other Ray instances run on the same machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import raycluster
from tokenkit import make_manifest

CLI = [sys.executable, "-c", "from facecorpus.cli import main; main()"]

# A stand-in driver: starts the watchdog and two "Ray" children that name a session folder on their
# command line (one ignores SIGTERM, one has a child of its own, like the raylet and its agents), plus
# one unrelated child, then prints their PIDs and waits to be killed.
FAKE_DRIVER = r"""
import json, subprocess, sys, time
from facecorpus.shards.raysession import _start_watchdog
session = sys.argv[1]
watchdog = _start_watchdog()
ray_like = [subprocess.Popen(["sh", "-c", script, f"{session}/logs"])
            for script in ("trap '' TERM; sleep 600", "sleep 600 & wait")]
other = subprocess.Popen(["sleep", "600"])
watchdog.stdin.write(f"{session}\n".encode()); watchdog.stdin.flush()
time.sleep(1.2)  # the watchdog looks twice a second
print(json.dumps({"ray": [p.pid for p in ray_like], "other": other.pid, "watchdog": watchdog.pid}), flush=True)
time.sleep(600)
"""


def test_watchdog_ends_a_killed_drivers_session_processes_and_only_those(tmp_path):
    session = str(tmp_path / "session_2026-01-01_00-00-00_000000_1")
    driver = subprocess.Popen([sys.executable, "-c", FAKE_DRIVER, session], stdout=subprocess.PIPE)
    left = []
    try:
        pids = json.loads(driver.stdout.readline())
        ray_like = [psutil.Process(p) for p in pids["ray"]]
        grandchild = [c for p in ray_like for c in p.children()]
        left = [*ray_like, *grandchild, psutil.Process(pids["other"]), psutil.Process(pids["watchdog"])]
        assert len(grandchild) == 2
        driver.kill()  # kill -9: no atexit, no finally
        driver.wait()
        gone, alive = psutil.wait_procs([*ray_like, *grandchild], timeout=15)
        assert not alive, [p.cmdline() for p in alive]  # main: no watchdog, all three run on
        assert psutil.Process(pids["other"]).is_running()  # not Ray's: not the watchdog's to end
        psutil.Process(pids["watchdog"]).wait(timeout=10)  # its work done, it exits
    finally:
        driver.kill()
        raycluster.end(left)


@pytest.mark.slow
def test_kill_9_of_tokenize_leaves_no_ray_process_of_that_run(tmp_path):
    manifest = make_manifest(tmp_path, 200, seed=5, broken=False, captions=False)
    cache = tmp_path / "cache"
    proc = subprocess.Popen(CLI + ["tokenize", str(manifest), "--cache", str(cache), "--part-rows", "4",
                                   "--batch-size", "4"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tree = []
    try:
        end = time.monotonic() + 180
        while not list((cache / "codes").glob("*.parquet")) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        tree = raycluster.tree(proc.pid)  # THAT run's processes, by PID: Ray's head, agents, workers, the watchdog
        names = " ".join(p.name() for p in tree)
        assert "raylet" in names and "gcs_server" in names, names
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as a user's `kill -9 PID` does
        proc.wait()
        gone, alive = psutil.wait_procs(tree, timeout=30)
        # main: ray::DashboardAgent and ray::RuntimeEnvAgent outlive it by about a minute
        assert not alive, [(p.pid, p.name()) for p in alive]
    finally:
        proc.kill()
        proc.wait()
        raycluster.end(tree)


@pytest.fixture
def token_head():
    """A Ray head started as a user does, `ray start --head --block`, on this machine (tests/raycluster.py)."""
    with raycluster.node(raycluster.token_home()) as head:
        yield head


def _tokenize(manifest: Path, cache: Path, address: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["tokenize", str(manifest), "--cache", str(cache), "--ray-address", address],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_join_a_token_auth_cluster_as_ray_documents_or_fail_in_one_line(token_head, tmp_path):
    manifest = make_manifest(tmp_path, 6, seed=6, captions=False)
    failed = _tokenize(manifest, tmp_path / "c1", token_head["address"], token_head["env"])
    assert failed.returncode == 1 and "Traceback" not in failed.stderr  # main: a 40-line traceback
    error = [line for line in failed.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "requires token authentication" in error[0], failed.stderr[-2000:]
    assert "RAY_AUTH_MODE=token" in error[0] and "ray get-auth-token" in error[0]
    joined = _tokenize(manifest, tmp_path / "c2", token_head["address"], {**token_head["env"], "RAY_AUTH_MODE": "token"})
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert "accounted" in joined.stderr and "True" in joined.stderr


def test_a_join_with_nobody_there_is_one_line(tmp_path):
    from click.testing import CliRunner

    from facecorpus.shards.cli import tokenize as tokenize_cmd

    manifest = make_manifest(tmp_path, 1, broken=False, captions=False)
    r = CliRunner().invoke(tokenize_cmd, [str(manifest), "--cache", str(tmp_path / "c"),
                                          "--ray-address", "ray://127.0.0.1:1"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output  # main: a traceback
    assert lines[0].startswith("Error: cannot join the Ray cluster at ray://127.0.0.1:1: ray:// (Ray Client)")


def test_a_runtime_environment_is_a_json_object_for_a_joined_cluster(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from facecorpus.shards.cli import tokenize as tokenize_cmd

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    manifest = make_manifest(tmp_path, 1, broken=False, captions=False)
    args = [str(manifest), "--cache", str(tmp_path / "c"), "--ray-runtime-env"]
    r = CliRunner().invoke(tokenize_cmd, args + ['["dist/facecorpus.whl"]'])
    assert r.exit_code == 2 and "must be a JSON object" in r.output  # main: no such option
    r = CliRunner().invoke(tokenize_cmd, args + ['{"py_modules": ["dist/facecorpus.whl"]}'])
    assert r.exit_code == 1 and "it needs --ray-address" in r.output
