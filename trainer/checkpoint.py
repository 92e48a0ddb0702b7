"""Atomic, exactly resumable checkpoints in `RUN/step-XXXXXXXX/`.

    model.pt           model state dict (plain names, no DDP `module.` prefix); torch.load(weights_only=True)
    optimizer.pt       AdamW state
    trainer.pt         step, scheduler, scaler, data position (micro-batches consumed per rank), world size
    rng-rankR.pt       every RNG state of rank R (python, numpy, torch CPU, CUDA)
    config.json        the full RunConfig (model, data, train) plus the shard index's tokenizer identity

Everything is written into `RUN/.step-XXXXXXXX.tmp/` and renamed when complete, so a crash never
leaves a folder that looks finished. All files load with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .config import RunConfig
from .model import Talk2Face

STEP_DIR = re.compile(r"step-(\d{8})$")


def step_dirs(run: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    if not run.is_dir():
        return []
    return sorted(p for p in run.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name))


def latest(path: str | Path) -> Path | None:
    """`path` itself when it is a step folder, else the newest step folder under it (None if none)."""
    path = Path(path)
    if STEP_DIR.fullmatch(path.name) and (path / "model.pt").is_file():
        return path
    dirs = step_dirs(path)
    return dirs[-1] if dirs else None


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


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def save(run: Path, step: int, model: Talk2Face, optimizer, scheduler, scaler, cfg: RunConfig,
         batches_consumed: int, identity: dict, keep: int = 0) -> Path:
    """Collective: every rank calls it; rank 0 writes the shared files and renames."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    final, tmp = run / f"step-{step:08d}", run / f".step-{step:08d}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    if rank == 0:
        torch.save(model.state_dict(), tmp / "model.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"step": step, "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "batches_consumed": batches_consumed, "world": world}, tmp / "trainer.pt")
        (tmp / "config.json").write_text(json.dumps({**cfg.to_dict(), "shards_identity": identity}, indent=2, sort_keys=True))
    _barrier()
    if rank == 0:
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep:
            for old in step_dirs(run)[:-keep]:
                shutil.rmtree(old)
    _barrier()
    return final


def load_config(ckpt: Path) -> RunConfig:
    d = json.loads((ckpt / "config.json").read_text())
    d.pop("shards_identity", None)
    return RunConfig.from_dict(d)


def check_identity(ckpt: Path, identity: dict) -> None:
    """Refuse to continue a run on shards made with another VQGAN or text vocabulary."""
    saved = json.loads((ckpt / "config.json").read_text()).get("shards_identity", {})
    for key in ("vqgan", "text_vocab"):
        if saved.get(key) != identity.get(key):
            raise ValueError(f"{ckpt}: trained on shards with {key} {saved.get(key)}, but the shards given have "
                             f"{identity.get(key)}; the image/text ids would mean something else")


def restore(ckpt: Path, model: Talk2Face, optimizer, scheduler, scaler) -> dict:
    """Load every state saved by `save` into the given objects; returns trainer.pt's dict."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    state = torch.load(ckpt / "trainer.pt", weights_only=True)
    if state["world"] != world:
        raise ValueError(f"{ckpt}: saved with {state['world']} processes, resumed with {world}; the data "
                         "position is per rank, so resume with the same --nproc_per_node")
    model.load_state_dict(torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(torch.load(ckpt / f"rng-rank{rank}.pt", weights_only=True))
    return state


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Talk2Face, RunConfig]:
    """(model in eval mode, its RunConfig) from a step folder, or from RUN (its newest step folder).

    `cfg.model` is the ModelConfig; `cfg.data.seq_len` the training length.
    """
    ckpt = latest(path)
    if ckpt is None:
        raise FileNotFoundError(f"{path}: neither a step-XXXXXXXX checkpoint folder nor a run holding one")
    cfg = load_config(ckpt)
    model = Talk2Face(cfg.model)
    model.load_state_dict(torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval(), cfg
