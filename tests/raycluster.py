"""Ray nodes started as a user starts them, `ray start ... --block`, as children of a test: a head with
its own ports, temp folder and HOME (holding a token, as ~/.ray/auth_token does after any local
`ray.init()`, so Ray turns token authentication on), and worker nodes joining it with their own
resources and temp folders. Each node is ended by its own PID (its --block process stops the rest),
and whatever it left behind by the PIDs recorded; never `ray stop`, which ends every Ray process on
the machine, other people's included.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

RAY = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--node-ip-address=127.0.0.1",
       "--disable-usage-stats"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def end(processes: list[psutil.Process]) -> None:
    """SIGKILL what a node or a failed test left behind, by the PIDs recorded."""
    for p in processes:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=10)


def token_home() -> dict:
    """An environment whose HOME holds a fresh Ray token and no RAY_* settings of the caller's."""
    home = Path(tempfile.mkdtemp(prefix="fc-home-"))
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {**os.environ, "HOME": str(home)}
    for name in ("RAY_AUTH_MODE", "RAY_ADDRESS"):
        env.pop(name, None)
    return env


@contextlib.contextmanager
def node(env: dict, head: str | None = None, cpus: int = 1, resources: dict | None = None) -> Iterator[dict]:
    """One node: the head (`head` None; yields its address) or a worker joining the head at `head`."""
    temp = Path(tempfile.mkdtemp(prefix="fcr-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    ports = [f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp}", f"--num-cpus={cpus}"]
    if resources:
        ports.append(f"--resources={json.dumps(resources)}")
    port = free_port()
    where = (["--head", f"--port={port}", "--include-dashboard=false", f"--dashboard-port={free_port()}"]
             if head is None else [f"--address={head}"])
    proc = subprocess.Popen(RAY + where + ports, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    left: list[psutil.Process] = []
    try:
        end_at = time.monotonic() + 120
        while not _started(temp, head is None) and proc.poll() is None and time.monotonic() < end_at:
            time.sleep(0.2)
        assert proc.poll() is None and _started(temp, head is None), proc.stderr.read().decode()[-2000:]
        left = tree(proc.pid)
        yield {"address": f"127.0.0.1:{port}" if head is None else head, "env": env, "pid": proc.pid}
    finally:
        left = list({p.pid: p for p in left + tree(proc.pid)}.values())
        proc.terminate()  # `ray start --block` stops its processes, but waits long on agents that ignore SIGTERM
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        end(left)


def _started(temp: Path, head: bool) -> bool:
    if head:
        return (temp / "ray_current_cluster").exists()
    return any(temp.glob("session_*/logs/raylet.out"))


def wait_for_nodes(address: str, env: dict, count: int, timeout: float = 60) -> None:
    """Until the cluster at `address` has `count` alive nodes (a worker registers after it starts)."""
    script = ("import ray, sys, time\nray.init(address=sys.argv[1], log_to_driver=False)\n"
              "end = time.monotonic() + float(sys.argv[3])\n"
              "while sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]) and time.monotonic() < end:\n"
              "    time.sleep(0.3)\nprint(sum(n['Alive'] for n in ray.nodes()))\n")
    out = subprocess.run([sys.executable, "-c", script, address, str(count), str(timeout)],
                         env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=timeout + 60)
    assert out.stdout.strip() == str(count), (out.stdout, out.stderr[-2000:])
