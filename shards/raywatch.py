"""The embedded Ray's watchdog: ends the Ray processes a driver started once the driver is gone.

raysession starts it before `ray.init`, in a session of its own (so a kill of the driver's process
group leaves it running), reading a pipe from the driver. The driver writes its Ray session folder
to the pipe once Ray runs. Meanwhile the watchdog keeps a list of that session's processes: the
driver's children whose command line names the session folder (before the driver says which: any
`session_` folder), with all their descendants, refreshed twice a second. When the pipe closes —
the driver said it is done, or it died however it died — the watchdog ends each listed process that
is still the same process (psutil checks its start time, so a reused PID is never signalled):
SIGTERM, then SIGKILL for those still there after a grace period. Ray's own fate sharing takes the
head processes down with the driver, but its dashboard and runtime-env agents outlived a `kill -9`
of the driver by about a minute, ignoring SIGTERM.

    python -I shards/raywatch.py DRIVER_PID
"""

from __future__ import annotations

import os
import select
import sys

import psutil

POLL_S = 0.5
GRACE_S = 1.0
ANY_SESSION = os.sep + "session_"


def session_processes(driver: psutil.Process, session: str) -> list[psutil.Process]:
    """The driver's children that name `session` on their command line, and all their descendants."""
    found = []
    for child in driver.children():
        try:
            if any(session in arg for arg in child.cmdline()):
                found += [child, *child.children(recursive=True)]
        except psutil.Error:  # gone, or a zombie: nothing to end
            continue
    return found


def end(processes: list[psutil.Process], grace: float = GRACE_S) -> None:
    """SIGTERM each process still running, then SIGKILL the ones that outlive `grace` seconds."""
    for signal_them in (psutil.Process.terminate, psutil.Process.kill):
        alive = []
        for p in processes:
            try:
                signal_them(p)
                alive.append(p)
            except psutil.Error:  # already gone (or its PID now belongs to another process)
                continue
        processes = psutil.wait_procs(alive, timeout=grace)[1]
        if not processes:
            return


def watch(driver_pid: int, pipe: int) -> None:
    """List the driver's Ray processes until `pipe` closes, then end those still running."""
    known: dict[int, psutil.Process] = {}
    session, received = ANY_SESSION, b""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    while True:
        if select.select([pipe], [], [], POLL_S)[0]:
            chunk = os.read(pipe, 4096)
            if not chunk:  # the driver is done or dead
                break
            received += chunk
            session = received.split(b"\n")[0].decode() if b"\n" in received else session
        try:
            for p in session_processes(driver, session):
                known[p.pid] = p  # a PID seen again is the same process or a newer one of the session
        except psutil.NoSuchProcess:  # the driver died before its pipe closed
            break
    for p in list(known.values()):  # what the listed processes started since the last look
        try:
            known.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            continue
    end(list(known.values()))


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.stdin.fileno())
