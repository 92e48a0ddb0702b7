"""Atomic, checked, exactly resumable checkpoints in `RUN/step-XXXXXXXX/`.

    model.pt           model state dict (plain names, no DDP `module.` prefix); torch.load(weights_only=True)
    optimizer.pt       AdamW state
    trainer.pt         step, scheduler, scaler, data position (micro-batches consumed per rank), world size
    rng-rankR.pt       every RNG state of rank R (python, numpy, torch CPU, CUDA)
    config.json        the full RunConfig (model family, its sections, code grid) plus the shards' tokenizer identity
    checksums.json     bytes and sha256 of every file above; written last

Everything is written into `RUN/step-XXXXXXXX.tmp/` and published by facecorpus.atomic (fsync, then
rename), so a crash never leaves a folder that looks finished. A folder can still be damaged later
(a truncated copy, a flipped bit): `problem` compares it with its checksums, resume takes the newest
intact checkpoint and says which ones it skipped and why, and generation refuses a damaged one. A
folder from before checksums were recorded is still loaded, and any unreadable file in it is an
error naming the folder and the file. All files load with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from facecorpus import atomic, storage
from facecorpus.codes import FFHQ_F16

from .config import ConfigError, RunConfig, apply_overrides
from .family import build_model

STEP_DIR = re.compile(r"step-(\d{8})$")
CHECKSUMS = "checksums.json"
SHARED_FILES = ("model.pt", "optimizer.pt", "trainer.pt", "config.json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (damaged, unreadable, made for other shards or processes);
    the message names the step folder and the problem."""


def step_dirs(run: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    run = Path(run)
    if not run.is_dir():
        return []
    return sorted(p for p in run.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name))


def is_step_dir(path: Path) -> bool:
    return bool(STEP_DIR.fullmatch(Path(path).name)) and Path(path).is_dir()


def _barrier():
    if dist.is_initialized():
        dist.barrier()


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- checksums

def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_checksums(folder: Path) -> None:
    """Record every file's size and sha256 (read back from the page cache the save just filled)."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != CHECKSUMS}
    (folder / CHECKSUMS).write_text(json.dumps({"files": files}, indent=2, sort_keys=True))


def problem(ckpt: Path) -> str | None:
    """Why the step folder `ckpt` is damaged (a file missing, of another size or hash), or None when
    every file matches checksums.json. A folder without checksums.json predates them: None."""
    path = Path(ckpt) / CHECKSUMS
    if not path.is_file():
        return None if (Path(ckpt) / "model.pt").is_file() else "model.pt is missing"
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as err:
        return f"{CHECKSUMS} is unreadable ({err})"
    for name in (*SHARED_FILES, "rng-rank0.pt"):
        if name not in files:
            return f"{CHECKSUMS} does not list {name}"
    for name, want in sorted(files.items()):
        f = Path(ckpt) / name
        if not f.is_file():
            return f"{name} is missing"
        size = f.stat().st_size
        if size != want["bytes"]:
            return f"{name} has {size:,} bytes, {CHECKSUMS} says {want['bytes']:,} (truncated or replaced)"
        if _sha256(f) != want["sha256"]:
            return f"{name} has another sha256 than {CHECKSUMS} records (the file changed after it was saved)"
    return None


def verified(ckpt: Path) -> Path:
    """`ckpt` when it is intact; else a CheckpointError naming it and the problem."""
    why = problem(ckpt)
    if why:
        raise CheckpointError(f"{ckpt}: damaged checkpoint: {why}")
    return Path(ckpt)


def newest_intact(run: Path, skipped: list[str] | None = None) -> Path | None:
    """The newest step folder of `run` that is intact; each newer, damaged one is added to `skipped`
    as `step-XXXXXXXX: why`."""
    for ckpt in reversed(step_dirs(run)):
        why = problem(ckpt)
        if why is None:
            return ckpt
        if skipped is not None:
            skipped.append(f"{ckpt.name}: {why}")
    return None


def resolve(path: str | Path, skipped: list[str] | None = None) -> Path:
    """What a user names as a checkpoint -> an intact step folder: a step folder itself (refused when
    damaged), or a run (its newest intact step folder; damaged newer ones go to `skipped`)."""
    path = Path(path)
    if is_step_dir(path):
        return verified(path)
    ckpt = newest_intact(path, skipped)
    if ckpt is None:
        damaged = f"; damaged: {'; '.join(skipped)}" if skipped else ""
        raise CheckpointError(f"{path}: neither a step-XXXXXXXX checkpoint folder nor a run holding an intact one{damaged}")
    return ckpt


# ---------------------------------------------------------------- save

def publish(run: Path, step: int, write, keep: int = 0) -> Path:
    """Collective: every rank calls it. Each rank saves its RNG states; rank 0 calls `write(folder)`
    to save the shared files, records the checksums, publishes `RUN/step-XXXXXXXX/` atomically and
    keeps the newest `keep` step folders (0: all). Any training command's checkpoints go through here."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    final = Path(run) / f"step-{step:08d}"
    if rank != 0:
        _barrier()   # rank 0 has made the temporary folder
        torch.save(rng_state(), atomic.tmp_path(final) / f"rng-rank{rank}.pt")
        _barrier()   # rank 0 may hash and publish
        _barrier()   # published
        return final
    with atomic.publishing(final) as tmp:
        tmp.mkdir(parents=True)
        _barrier()
        torch.save(rng_state(), tmp / "rng-rank0.pt")
        write(tmp)
        _barrier()
        write_checksums(tmp)   # last: its presence says every other file is complete
    if keep:
        # Only folders up to this step count: a damaged newer one that resume skipped is replaced
        # when training reaches its step, never counted in place of an intact older one.
        for old in [p for p in step_dirs(run) if p.name < final.name][:-(keep - 1) or None]:
            shutil.rmtree(old)
    storage.publish(final)   # a run in object storage: the step's objects, checksums.json last
    _barrier()
    return final


def save(run: Path, step: int, model: torch.nn.Module, optimizer, scheduler, scaler, cfg: RunConfig,
         batches_consumed: int, identity: dict, keep: int = 0) -> Path:
    """Collective: a `train` step's checkpoint, of either family (`publish`)."""
    world = dist.get_world_size() if dist.is_initialized() else 1

    def write(tmp: Path) -> None:
        torch.save(model.state_dict(), tmp / "model.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"step": step, "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "batches_consumed": batches_consumed, "world": world}, tmp / "trainer.pt")
        (tmp / "config.json").write_text(json.dumps({**cfg.to_dict(), "shards_identity": identity}, indent=2, sort_keys=True))

    return publish(run, step, write, keep)


# ---------------------------------------------------------------- load

def torch_load(path: Path):
    """torch.load(weights_only=True) to the CPU; a truncated or garbled file is a CheckpointError
    naming it (an empty file would otherwise end in EOFError, which click prints as `Aborted!`)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        first = (str(err).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: unreadable ({type(err).__name__}: {first})") from None


def _load(ckpt: Path, name: str):
    return torch_load(Path(ckpt) / name)


def _config_dict(ckpt: Path) -> dict:
    try:
        return json.loads((Path(ckpt) / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{ckpt}: config.json is unreadable ({err})") from None


def load_config(ckpt: Path) -> RunConfig:
    """The run's config; one saved before code grids were recorded ran on FFHQ f16 codes."""
    d = _config_dict(ckpt)
    d.pop("shards_identity", None)
    try:
        cfg = RunConfig.from_dict(d, f"{ckpt}/config.json")
    except (ConfigError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{ckpt}: config.json does not hold a run config ({err})") from None
    if cfg.grid is None:
        cfg = cfg.sized(FFHQ_F16)
    return cfg


def resolve_config(run: Path, shards: str, preset: str | None, overrides: list[str]) -> tuple[RunConfig, Path | None]:
    """(config, the checkpoint it resumes or None). A run holding a checkpoint resumes from its saved
    config plus `overrides`; the model and the preset cannot change under a resume."""
    last = newest_intact(run)
    if last is None:
        cfg = apply_overrides(RunConfig.from_preset(preset or "tiny"), overrides)
    else:
        saved = load_config(last)
        if preset and preset != saved.preset:
            raise ConfigError(f"{run} holds a {saved.preset} run ({last.name}); --preset {preset} would not resume it")
        cfg = apply_overrides(saved, overrides)
        if cfg.model != saved.model:
            raise ConfigError(f"{run}: model overrides cannot change a run being resumed ({last.name})")
    cfg.data.shards = str(shards)
    return cfg, last


def shards_identity(ckpt: Path) -> dict:
    """The tokenizer identity of the shards the run trained on ({} when none was recorded)."""
    return _config_dict(ckpt).get("shards_identity") or {}


def check_identity(ckpt: Path, identity: dict) -> None:
    """Refuse to continue a run on shards made with another VQGAN or text vocabulary (compared as
    the shard format compares identities: what both record)."""
    from facecorpus.shards.format import identity_mismatch

    if diff := identity_mismatch(shards_identity(ckpt), identity):
        raise CheckpointError(f"{ckpt}: trained on shards made with other tokenizers than the shards given ("
                              + "; ".join(diff) + "): the image/text ids would mean something else")


def restore(ckpt: Path, model: torch.nn.Module, optimizer, scheduler, scaler) -> dict:
    """Load every state saved by `save` into the given objects; returns trainer.pt's dict."""
    state = trainer_state(ckpt)
    model.load_state_dict(_load(ckpt, "model.pt"))
    optimizer.load_state_dict(_load(ckpt, "optimizer.pt"))
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    restore_rng(ckpt)
    return state


def trainer_state(ckpt: Path) -> dict:
    """trainer.pt, refused when it was saved by another number of processes (the data position is per rank)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    state = _load(ckpt, "trainer.pt")
    if state["world"] != world:
        raise CheckpointError(f"{ckpt}: saved with {state['world']} processes, resumed with {world}; the data "
                              "position is per rank, so resume with the same --nproc_per_node")
    return state


def restore_rng(ckpt: Path) -> None:
    """This rank's RNG states as `publish` saved them (python, numpy, torch CPU, CUDA)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    set_rng_state(_load(ckpt, f"rng-rank{rank}.pt"))


def load_model(path: str | Path, device: str | torch.device = "cpu",
               skipped: list[str] | None = None) -> tuple[torch.nn.Module, RunConfig]:
    """(model in eval mode, its RunConfig) from an intact step folder, or from RUN (its newest intact
    step folder; damaged newer ones are listed in `skipped`).

    The model is of the run's family (`cfg.family`: a Talk2Face or a GPTFace); `cfg.model` its shape,
    `cfg.data.seq_len` the training length, `cfg.grid` the code grid.
    """
    return load_step(resolve(path, skipped), device)


def load_step(ckpt: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, RunConfig]:
    """`load_model` of a step folder `resolve` has already checked."""
    cfg = load_config(ckpt)
    with torch.device("meta"):   # shapes only: the saved weights replace every value
        model = build_model(cfg)
    model.load_state_dict(_load(ckpt, "model.pt"), assign=True)
    return model.to(device).eval(), cfg
