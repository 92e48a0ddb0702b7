"""Ray for `tokenize`: join a running cluster, or run one inside this process that never outlives it.

Joining (`--ray-address HOST:PORT`) is Ray's own `ray.init(address=...)`, with Ray's token
authentication as Ray documents it: since Ray 2.59 a cluster started with `ray start --head` on a
machine that holds a token (~/.ray/auth_token, which any local `ray.init()` creates) requires it, and
a driver sends it only when it runs with RAY_AUTH_MODE=token and can read the token (RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). Ray deliberately never sends a token to an address it was
given explicitly unless told to, and neither does facecorpus; a join that fails is one RayJoinError
line that says what to do.

A cluster's workers must import facecorpus: install the same facecorpus on every node, or ship it
with the job through Ray's runtime environment (`--ray-runtime-env '{"py_modules": [WHEEL]}'`;
docs/cluster.md). Right after joining, one task per node imports the package there
(`check_workers`), so a node that cannot is named in one line before any image is read, instead of
an actor's traceback minutes later.

Without an address, Ray starts inside this process (`address="local"`: never a cluster that
RAY_ADDRESS or /tmp/ray/ray_current_cluster points to), watched by raywatch so that none of its
processes outlives this one, however this one ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

AUTH_HELP = ("make the cluster's token readable here (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH=FILE or "
             "RAY_AUTH_TOKEN; `ray get-auth-token` on the head prints it)")


class RayJoinError(ValueError):
    """The Ray cluster named by --ray-address could not be joined; the message says what to do."""


@contextlib.contextmanager
def ray_session(address: str | None, runtime_env: dict | None = None):
    """Ray for the duration of the block: the caller's if Ray already runs in this process (tests,
    benchmarks and notebooks end their own), else the cluster at `address` (with `runtime_env` for
    this job's workers, Ray's own dict), else an embedded one."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        join(address, runtime_env)
        try:
            check_workers(address)
            yield
        finally:
            ray.shutdown()  # disconnects this driver; the cluster runs on
        return
    watchdog = _start_watchdog()
    try:
        context = ray.init(address="local", **_QUIET)
        _tell(watchdog, context.address_info["session_dir"])
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()
        with contextlib.suppress(BrokenPipeError):
            watchdog.stdin.close()  # the watchdog ends whatever of this session is still running
        watchdog.wait()


_QUIET = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
          "configure_logging": True}


def _start_watchdog() -> subprocess.Popen:
    # By file, not module, so it runs from a bare checkout too (it needs only psutil); -I keeps the
    # script's folder off sys.path. Its own session: a kill of this process group must not take it.
    return subprocess.Popen([sys.executable, "-I", str(Path(__file__).with_name("raywatch.py")), str(os.getpid())],
                            stdin=subprocess.PIPE, start_new_session=True)


def _tell(watchdog: subprocess.Popen, session_dir: str) -> None:
    try:
        watchdog.stdin.write(f"{session_dir}\n".encode())
        watchdog.stdin.flush()
    except BrokenPipeError:  # it could not start: the run goes on, but the user hears of it
        logging.getLogger(__name__).warning(
            "the Ray watchdog exited (rc %s): if this run is killed, end Ray's processes of %s yourself",
            watchdog.poll(), session_dir)


def join(address: str, runtime_env: dict | None = None) -> None:
    """Connect this driver to the running cluster at `address`, or raise one RayJoinError line."""
    import ray

    with tempfile.TemporaryFile() as log:
        try:
            # Ray's C++ client logs each of its ~20 connection attempts to stderr: held back, and
            # shown only if the join succeeds (then they are Ray's notes, not a failure's noise).
            with _stderr_to(log):
                ray.init(address=address, runtime_env=runtime_env, **_QUIET)
        except Exception as exc:  # noqa: BLE001 - every way a join fails becomes one line for the user
            log.seek(0)
            raise _join_error(address, exc, log.read().decode(errors="replace")) from None
        log.seek(0)
        sys.stderr.write(log.read().decode(errors="replace"))


@contextlib.contextmanager
def _stderr_to(file):
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _join_error(address: str, exc: BaseException, log: str = "") -> RayJoinError:
    from ray.exceptions import AuthenticationError

    chain, e = [], exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    first = next((str(e).strip().splitlines()[0] for e in chain if str(e).strip()), type(exc).__name__)[:200]
    at = f"cannot join the Ray cluster at {address}"
    # Ray reports a refused token as an AuthenticationError, or only inside the text of the error
    # (and log lines) of its retried connection attempts.
    said = " ".join(str(e) for e in chain) + log
    if any(isinstance(e, AuthenticationError) for e in chain) or "InvalidAuthToken" in said:
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            return RayJoinError(f"{at}: it requires token authentication. Set RAY_AUTH_MODE=token and {AUTH_HELP}.")
        return RayJoinError(f"{at}: it refused the token this process sent (RAY_AUTH_MODE=token): {AUTH_HELP}.")
    if address.startswith("ray://") and "ray[client]" in first:
        return RayJoinError(f"{at}: ray:// (Ray Client) addresses need `pip install 'ray[client]'`; or give "
                            "the head's HOST:PORT (port 6379 for `ray start --head`).")
    if isinstance(exc, ConnectionError):
        return RayJoinError(f"{at}: {first}. Start one with `ray start --head` there, check HOST:PORT (port 6379 "
                            "for `ray start --head`), or leave out --ray-address to run Ray inside this process.")
    return RayJoinError(f"{at}: {type(exc).__name__}: {first}")


WORKER_HELP = ("install this facecorpus on every node (`pip install facecorpus==VERSION`, or the same "
               "checkout with `pip install -e .`), or ship it with the job: --ray-runtime-env "
               "'{\"py_modules\": [\"dist/facecorpus-VERSION-py3-none-any.whl\"]}' (docs/cluster.md)")
PROBED = "facecorpus.shards.reading"  # what a read task imports first; light: no torch


def _answer(ray, ref) -> str:
    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - a probe that cannot even run there is that node's answer
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


def check_workers(address: str) -> None:
    """Import facecorpus in a worker of every alive node; RayJoinError names each node that cannot.
    The probe is a nested function, so cloudpickle ships its code by value: a worker without
    facecorpus can run it (a module-level function would fail to unpickle there, unexplained)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def probe(module: str) -> str:
        import importlib

        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure is the answer
            return f"{type(exc).__name__}: {exc}"
        return ""

    remote = ray.remote(probe)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [remote.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(PROBED) for n in nodes]
    answers = [_answer(ray, ref) for ref in refs]
    bad = [f"{n['NodeManagerAddress']} (node {n['NodeID'][:8]}): {a[:200]}" for n, a in zip(nodes, answers) if a]
    if bad:
        from importlib.metadata import version

        raise RayJoinError(f"Ray workers of the cluster at {address} cannot import {PROBED} on "
                           f"{len(bad)} of {len(nodes)} nodes: {'; '.join(bad[:3])}. "
                           + WORKER_HELP.replace("VERSION", version("facecorpus")))
