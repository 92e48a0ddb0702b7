"""The training loop: alone or under torchrun (NCCL on GPUs, gloo on CPU), resumable exactly.

Shape follows nanoGPT's train.py: set up, build, then one loop with gradient accumulation, clipping,
logging and checkpointing. Differences from the released recipe, and why:
- bf16 autocast on GPU (the release ran fp32); fused AdamW; boolean prefix-LM mask through SDPA.
- DDP skips the all-reduce on accumulating micro-steps (the release reduced on every one).
- Checkpoints carry optimizer, scheduler, RNG and data position, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from . import checkpoint, mfu
from .batches import STAT_KEYS, StreamSpec, make_loader, training_index
from .config import RunConfig
from .model import Talk2Face, param_summary
from .sequences import TASKS


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world, device); initialises the process group when torchrun set RANK/WORLD_SIZE."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def accumulation_steps(cfg: RunConfig, world: int) -> int:
    """Micro-steps per optimizer step; checked before anything is built."""
    per_step = world * cfg.data.micro_batch
    if cfg.train.batch_size % per_step:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not a multiple of world size {world} x "
                         f"data.micro_batch={cfg.data.micro_batch} = {per_step}")
    return cfg.train.batch_size // per_step


def lr_lambda(cfg: RunConfig):
    t = cfg.train

    def factor(step: int) -> float:
        # Linear warm-up from 0, then linear decay to min_lr at max_steps.
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        frac = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
        return 1.0 - min(1.0, frac) * (1.0 - t.min_lr / t.lr)
    return factor


def build_optimizer(model: Talk2Face, cfg: RunConfig, device: torch.device) -> torch.optim.AdamW:
    # Decay matrices and embeddings only; LayerNorm gains and biases stay undecayed (nanoGPT).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2),
                             fused=device.type == "cuda")


def autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    p = cfg.train.precision
    if p == "bf16" or (p == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


class Logger:
    """One JSONL line per log interval (rank 0), optionally mirrored to TensorBoard."""

    def __init__(self, run: Path, cfg: RunConfig, rank: int):
        self.rank, self.path, self.tb = rank, run / "train.jsonl", None
        if rank == 0 and cfg.train.tensorboard:
            from torch.utils.tensorboard import (
                SummaryWriter,  # needs the `tensorboard` package
            )
            self.tb = SummaryWriter(str(run / "tb"))

    def write(self, record: dict, console=None) -> None:
        if self.rank != 0:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])
        if console is not None:
            m = record["mfu"]
            console.print(f"step {record['step']:>8}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                          f"tok/s {record['tokens_per_s']:,.0f}  mfu {m if m == 'n/a' else f'{100 * m:.1f}%'}  "
                          f"data wait {100 * record['data_wait']:.1f}%")

    def write_event(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def close(self):
        if self.tb:
            self.tb.close()


def _print(rank: int, console, msg: str) -> None:
    if rank == 0 and console is not None:
        console.print(msg)


def train(cfg: RunConfig, run: Path, console=None) -> dict:
    """Train (or resume, when `run` holds a checkpoint) until cfg.train.max_steps; returns a summary."""
    rank, world, device = setup_distributed()
    try:
        return _train(cfg, Path(run), rank, world, device, console)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: RunConfig, run: Path, rank: int, world: int, device: torch.device, console) -> dict:
    accum = accumulation_steps(cfg, world)
    identity = training_index(cfg.data.shards, cfg.data.split).identity   # refuses a foreign vocabulary before any work
    run.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.train.seed)          # same initial weights on every rank
    model = Talk2Face(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=False)   # bf16 needs no loss scaling; kept for the format
    torch.manual_seed(cfg.train.seed + 1 + rank)   # distinct dropout masks per rank

    step, batches = 0, 0
    resume_from = checkpoint.latest(run)
    if resume_from is not None:
        checkpoint.check_identity(resume_from, identity)
        state = checkpoint.restore(resume_from, model, optimizer, scheduler, scaler)
        step, batches = state["step"], state["batches_consumed"]
        _print(rank, console, f"resumed from {resume_from} at step {step}")
    _print(rank, console, f"Talk2Face {cfg.preset}: {param_summary(model)}; {world} process(es) x "
                          f"{cfg.data.micro_batch} sequences x {accum} micro-steps = {cfg.train.batch_size} per step")

    raw = model
    if cfg.train.compile:
        for block in raw.blocks:
            block.compile()
    model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    width = -(-cfg.data.seq_len // cfg.data.pad_to_multiple) * cfg.data.pad_to_multiple
    spec = StreamSpec(cfg.data.shards, cfg.data.split, cfg.data.seq_len, width, cfg.data.micro_batch,
                      cfg.data.num_workers, cfg.data.shuffle_shards, cfg.data.loss_on, cfg.train.seed,
                      rank, world, batches, cfg.data.check_sha256)
    loader = make_loader(spec)
    amp = autocast_dtype(cfg, device)
    peak = mfu.device_peak(device)
    logger = Logger(run, cfg, rank)

    if resume_from is None:   # an early checkpoint makes a misconfigured save path fail in seconds
        checkpoint.save(run, 0, raw, optimizer, scheduler, scaler, cfg, 0, identity, cfg.train.keep_checkpoints)

    window = torch.zeros(4 + 4 + 2 + len(STAT_KEYS), dtype=torch.float64, device=device)
    flops, wait, t_window = 0.0, 0.0, time.perf_counter()
    model.train()
    while step < cfg.train.max_steps:
        for micro in range(accum):
            t0 = time.perf_counter()
            batch = next(loader)
            wait += time.perf_counter() - t0
            # Only the last micro-step all-reduces gradients; the others accumulate locally.
            flops += _micro_step(model, batch, device, amp, micro == accum - 1 or world == 1, accum, window, cfg)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or float("inf"))
        lr = scheduler.get_last_lr()[0]   # the rate this step used
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step, batches = step + 1, batches + accum

        if step % cfg.train.log_interval == 0 or step == cfg.train.max_steps:
            logger.write(_log_record(step, window, flops, wait, t_window, grad_norm, lr, peak, world), console)
            window.zero_()
            flops, wait, t_window = 0.0, 0.0, time.perf_counter()
        stopping = step == cfg.train.stop_at_step
        if step % cfg.train.ckpt_interval == 0 or step == cfg.train.max_steps or stopping:
            checkpoint.save(run, step, raw, optimizer, scheduler, scaler, cfg, batches, identity, cfg.train.keep_checkpoints)
            if step == cfg.train.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)   # tests: an abrupt death right after a checkpoint
            if stopping:
                break
    return _finish(run, logger, step, batches, cfg, device, world)


def _micro_step(model, batch: dict, device, amp, sync: bool, accum: int, window: torch.Tensor, cfg) -> float:
    """Forward and backward of one micro-batch; adds its per-task sums to `window`; returns its FLOPs."""
    ids, seg, targets, index, task = (batch[k].to(device, non_blocking=True)
                                      for k in ("ids", "seg", "targets", "target_index", "task"))
    ctx = model.no_sync() if not sync else contextlib.nullcontext()
    cast = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
    with ctx:   # backward inside too: DDP decides whether to reduce when gradients are ready
        with cast:
            losses = model(ids, seg, targets=targets, target_index=index)
            loss = losses.sum() / losses.numel() / accum
        loss.backward()
    # Per-task sums stay on the device (scatter_add, not bincount: no host sync).
    row_task = task.index_select(0, index // ids.shape[1])
    window[0:4].scatter_add_(0, row_task, losses.detach().double())
    window[4:8].scatter_add_(0, row_task, torch.ones_like(row_task, dtype=torch.float64))
    window[8] += (seg != 0).sum()
    window[9] += ids.shape[0]
    window[10:] += batch["stats"].to(device)
    return mfu.batch_flops(cfg.model, batch["seg"], batch["target_index"].numel())   # CPU tensors


def _finish(run: Path, logger, step: int, batches: int, cfg: RunConfig, device, world: int) -> dict:
    """Every rank reports how far it got: uneven shards must not leave one rank behind."""
    mine = torch.tensor([step, batches * cfg.data.micro_batch], device=device)
    every = [mine]
    if world > 1:
        every = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(every, mine)
    end = {"event": "end", "steps_per_rank": [int(t[0]) for t in every], "sequences_per_rank": [int(t[1]) for t in every]}
    logger.write_event(end)
    logger.close()
    return {"steps": step, **{k: v for k, v in end.items() if k != "event"},
            "checkpoint": str(checkpoint.latest(run)), "log": str(logger.path)}


def _log_record(step, window, flops, wait, t_window, grad_norm, lr, peak, world) -> dict:
    """All-reduce the window's sums (the only host sync besides checkpoints) and derive the figures."""
    if dist.is_initialized():
        dist.all_reduce(window)
        f = torch.tensor([flops], dtype=torch.float64, device=window.device)
        dist.all_reduce(f)
        flops = float(f)
    w = window.tolist()
    seconds = time.perf_counter() - t_window
    sums, counts = w[0:4], w[4:8]
    value = mfu.mfu(flops, seconds, peak, world)
    record = {
        "step": step,
        "lr": lr,
        "loss": sum(sums) / max(1.0, sum(counts)),
        **{f"loss/{name}": s / c if c else None for name, s, c in zip(TASKS, sums, counts)},
        "grad_norm": float(grad_norm),
        "tokens_per_s": w[8] / seconds,        # non-pad tokens, all ranks
        "seq_per_s": w[9] / seconds,
        "mfu": "n/a" if value is None else value,
        "data_wait": wait / seconds,            # rank 0's share of time blocked on the loader
        "seconds": seconds,
        **{f"data/{k.replace(' ', '_')}": v for k, v in zip(STAT_KEYS, w[10:])},
    }
    return record
