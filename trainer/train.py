"""The training loop: alone or under torchrun (NCCL on GPUs, gloo on CPU), resumable exactly.

Shape follows nanoGPT's train.py: set up, build, then one loop with gradient accumulation, clipping,
logging and checkpointing. Both model families run this loop; what differs between them (the model,
its batches, its loss and the figures it logs) sits behind `family.Family`. Differences from the
released Talk2Face recipe, and why:
- bf16 autocast on GPU (the release ran fp32); fused AdamW; boolean prefix-LM mask through SDPA.
- DDP skips the all-reduce on accumulating micro-steps (the release reduced on every one).
- Checkpoints carry optimizer, scheduler, RNG and data position, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from facecorpus import atomic
from facecorpus.shards.format import ShardIndex

from . import checkpoint, mfu
from .batches import StreamSpec, make_loader, training_index
from .config import RunConfig
from .family import Family, family_of


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
        # Linear warm-up from warmup_from (GPTFace: 2e-4; Talk2Face: 0) to lr, then linear decay to
        # min_lr at max_steps. The first step already takes one warmup_steps-th of the rise, so with a
        # start of 0 no step has a zero rate.
        if step < t.warmup_steps:
            return (t.warmup_from + (t.lr - t.warmup_from) * (step + 1) / t.warmup_steps) / t.lr
        frac = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
        return 1.0 - min(1.0, frac) * (1.0 - t.min_lr / t.lr)
    return factor


def build(cfg: RunConfig, device: torch.device, rank: int):
    """(model, optimizer, scheduler, scaler), the model initialised alike on every rank."""
    torch.manual_seed(cfg.train.seed)          # same initial weights on every rank
    model = family_of(cfg).build_model(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=False)   # bf16 needs no loss scaling; kept for the format
    torch.manual_seed(cfg.train.seed + 1 + rank)   # distinct dropout masks per rank
    return model, optimizer, scheduler, scaler


def build_optimizer(model: torch.nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.AdamW:
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

    def __init__(self, run: Path, cfg: RunConfig, rank: int, console=None):
        self.rank, self.path, self.tb, self.console = rank, run / "train.jsonl", None, console
        if rank == 0 and cfg.train.tensorboard:
            from torch.utils.tensorboard import (
                SummaryWriter,  # needs the `tensorboard` package
            )
            self.tb = SummaryWriter(str(run / "tb"))

    def write(self, record: dict) -> None:
        if self.rank != 0:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb and "step" in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])
        if self.console is not None and (line := self.line(record)):
            self.console.print(line)

    def line(self, record: dict) -> str | None:
        """The console's line for a log record (None: the record is not shown); other commands' loggers
        override it."""
        if "loss" in record:
            m = record["mfu"]
            return (f"step {record['step']:>8}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                    f"tok/s {record['tokens_per_s']:,.0f}  mfu {m if m == 'n/a' else f'{100 * m:.1f}%'}  "
                    f"data wait {100 * record['data_wait']:.1f}%")
        if "val/loss" in record:
            return f"step {record['step']:>8}  val loss {record['val/loss']:.4f}"
        return None

    def note(self, text: str) -> None:
        """A line for the reader of the console and of the log (what was skipped, and why)."""
        self.write({"event": "note", "note": text})
        if self.rank == 0 and self.console is not None:
            self.console.print(text)

    def close(self):
        if self.tb:
            self.tb.close()


class Window:
    """Sums since the last log line, kept on the device (adding to them needs no host sync), as named
    views of one buffer so that a single all-reduce sums them over ranks: the family's fields, plus
    non-pad tokens and sequences."""

    def __init__(self, family: Family, device: torch.device):
        self.fields = (*family.fields, ("tokens", 1), ("sequences", 1))
        self.buf = torch.zeros(sum(n for _, n in self.fields), dtype=torch.float64, device=device)
        start, self.views = 0, {}
        for name, n in self.fields:
            self.views[name] = self.buf[start:start + n]
            start += n

    def add(self, sums: dict) -> None:
        for name, value in sums.items():
            view = self.views[name]
            view.add_(value.to(view.device, non_blocking=True) if isinstance(value, torch.Tensor) else value)

    def reduce(self) -> dict[str, list[float]]:
        """All-reduce over ranks (a host sync), then each field as a list."""
        if dist.is_initialized():
            dist.all_reduce(self.buf)
        values, out = self.buf.tolist(), {}
        for name, n in self.fields:
            out[name], values = values[:n], values[n:]
        return out

    def zero(self) -> None:
        self.buf.zero_()


def _print(rank: int, console, msg: str) -> None:
    if rank == 0 and console is not None:
        console.print(msg)


def train(cfg: RunConfig, run: Path, console=None, on_step=None) -> dict:
    """Train (or resume, when `run` holds a checkpoint) until cfg.train.max_steps; returns a summary.
    `on_step(step)`, when given, is called after every optimizer step (a progress bar)."""
    return run_distributed(functools.partial(_train, on_step=on_step), cfg, run, console)


def run_distributed(loop, cfg, run: Path, console) -> dict:
    """`loop(cfg, run, rank, world, device, console)` in this process's place in the torchrun group
    (or alone), the group torn down however it ends: every training command's entry."""
    rank, world, device = setup_distributed()
    try:
        return loop(cfg, Path(run), rank, world, device, console)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _resume(run: Path, rank: int, console, identity: dict, model, optimizer, scheduler, scaler) -> tuple[int, int, Path | None]:
    """(step, batches consumed, checkpoint) from the newest intact checkpoint of `run`, saying which
    damaged ones it skipped and why; (0, 0, None) for a new run."""
    if rank == 0:
        atomic.sweep(run)   # a checkpoint folder a killed run left half-written
    _barrier()
    skipped: list[str] = []
    ckpt = checkpoint.newest_intact(run, skipped)
    for why in skipped:
        _print(rank, console, f"skipping damaged checkpoint {why}")
    if ckpt is None:
        if skipped:
            raise checkpoint.CheckpointError(f"{run}: no intact checkpoint to resume from ({'; '.join(skipped)}); "
                                             "remove the damaged step folders to start afresh")
        return 0, 0, None
    checkpoint.check_identity(ckpt, identity)
    state = checkpoint.restore(ckpt, model, optimizer, scheduler, scaler)
    _print(rank, console, f"resumed from {ckpt} at step {state['step']}")
    return state["step"], state["batches_consumed"], ckpt


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _train(cfg: RunConfig, run: Path, rank: int, world: int, device: torch.device, console, on_step=None) -> dict:
    accum = accumulation_steps(cfg, world)
    family = family_of(cfg)
    kinds = family.kinds(cfg)
    why = f"a {family.title} run trains on {' and '.join(kinds)} samples"
    index = training_index(cfg.data.shards, cfg.data.split, kinds, why)   # refused before any work
    identity = index.identity
    cfg = cfg.sized(index.grid)   # vocabulary, grid and sequence length follow the shards' codes
    run.mkdir(parents=True, exist_ok=True)
    model, optimizer, scheduler, scaler = build(cfg, device, rank)
    logger = Logger(run, cfg, rank, console)
    step, batches, resumed = _resume(run, rank, console, identity, model, optimizer, scheduler, scaler)
    _print(rank, console, f"{family.title} {cfg.preset}: {family.summary(model)}; {world} process(es) x "
                          f"{cfg.data.micro_batch} sequences x {accum} micro-steps = {cfg.train.batch_size} per step; "
                          f"{cfg.data.seq_len} ids per sequence ({cfg.grid.count} image codes)")

    raw, model = model, _wrapped(model, cfg, world, device)
    spec = StreamSpec(cfg.data.shards, cfg.data.split, cfg.data.seq_len, batch_width(cfg), cfg.data.micro_batch,
                      cfg.data.num_workers, cfg.data.shuffle_shards, cfg.data.loss_on, cfg.train.seed,
                      rank, world, batches, cfg.data.check_sha256, cfg.data.task_names)
    loader = make_loader(family.dataset(spec, cfg, accum))
    held_out = val_batches(family, cfg, index, spec, accum, logger)
    amp = autocast_dtype(cfg, device)
    peak = mfu.device_peak(device)

    def save(at: int) -> None:
        checkpoint.save(run, at, raw, optimizer, scheduler, scaler, cfg, batches, identity, cfg.train.keep_checkpoints)

    if resumed is None:   # an early checkpoint makes a misconfigured save path fail in seconds
        save(0)
    window = Window(family, device)
    flops, wait, t_window = 0.0, 0.0, time.perf_counter()
    model.train()
    while step < cfg.train.max_steps:
        for micro in range(accum):
            t0 = time.perf_counter()
            batch = next(loader)
            wait += time.perf_counter() - t0
            # Only the last micro-step all-reduces gradients; the others accumulate locally.
            _micro_step(family, model, batch, device, amp, micro == accum - 1 or world == 1, accum, window)
            flops += family.flops(cfg, batch)   # from the batch's CPU tensors: no sync
        grad_norm, lr = _optimizer_step(model, optimizer, scheduler, cfg.train.grad_clip)
        step, batches = step + 1, batches + accum
        if on_step is not None:
            on_step(step)

        last = step == cfg.train.max_steps
        if step % cfg.train.log_interval == 0 or last:
            figures = {"lr": lr, **family.extras(cfg, step), "grad_norm": float(grad_norm)}
            logger.write(_log_record(step, family, window, figures, flops, wait, t_window, peak, world))
            window.zero()
            flops, wait, t_window = 0.0, 0.0, time.perf_counter()
        if held_out and (last or step % cfg.train.eval_interval == 0):
            logger.write({"step": step, **estimate_loss(family, raw, held_out, device, amp)})
        stopping = step == cfg.train.stop_at_step
        if step % cfg.train.ckpt_interval == 0 or last or stopping:
            save(step)
            if stopping:
                break
    return _finish(run, logger, step, batches, cfg, device, world)


def _wrapped(model: torch.nn.Module, cfg: RunConfig, world: int, device: torch.device) -> torch.nn.Module:
    """The module the loop calls: its blocks compiled when asked, under DDP with more than one process."""
    if cfg.train.compile:
        for block in model.blocks:
            block.compile()
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model


def _optimizer_step(model, optimizer, scheduler, grad_clip: float) -> tuple[torch.Tensor, float]:
    """Clip, step and zero the gradients -> (the gradient norm before clipping, the rate this step used)."""
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, lr


def batch_width(cfg: RunConfig) -> int:
    """Batches are padded to seq_len rounded up to data.pad_to_multiple (aligned attention kernels)."""
    return -(-cfg.data.seq_len // cfg.data.pad_to_multiple) * cfg.data.pad_to_multiple


def val_batches(family: Family, cfg: RunConfig, index: ShardIndex, spec: StreamSpec, accum: int,
                logger: Logger) -> list:
    """The held-out micro-batches of this rank: the first `train.eval_batches` of the val split,
    read once and reused, so every held-out loss of a run is measured on the same sequences (for
    GPTFace: the same masks and ITM pairs, drawn once). Empty (with a note) when evaluation is off
    or the shards hold no val samples of a kind the model trains on."""
    if not cfg.train.eval_interval:
        return []
    counts = {kind: sum(e.count for e in index.select("val", kind)) for kind in family.kinds(cfg)}
    if not all(counts.values()):
        missing = " and ".join(k for k, n in counts.items() if not n)
        logger.note(f"no held-out loss: the shards' val split has no {missing} samples")
        return []
    stream = iter(family.dataset(replace(spec, split="val", num_workers=0, start_batch=0), cfg, accum))
    return [next(stream) for _ in range(cfg.train.eval_batches)]


@torch.no_grad()
def estimate_loss(family: Family, model: torch.nn.Module, batches: list, device, amp) -> dict:
    """Mean held-out loss over `batches` (the family's figures, as `val/...`), summed over ranks
    (nanoGPT's estimate_loss). Eval mode draws no random numbers, so an exact resume stays exact."""
    window = Window(family, device)
    model.eval()
    cast = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
    for batch in batches:
        with cast:
            _, sums = family.forward(model, batch, device)
        window.add(sums)
    model.train()
    return family.means(window.reduce(), "val/")


def _micro_step(family: Family, model, batch, device, amp, sync: bool, accum: int, window: Window) -> None:
    """Forward and backward of one micro-batch; adds its sums to `window`."""
    ctx = model.no_sync() if not sync else contextlib.nullcontext()
    cast = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
    with ctx:   # backward inside too: DDP decides whether to reduce when gradients are ready
        with cast:
            loss, sums = family.forward(model, batch, device)
        (loss / accum).backward()
    window.add(sums)


def per_rank(values: list[int], device, world: int) -> list[list[int]]:
    """Each of `values` as every rank holds it (rank order): one all_gather, or this rank's alone."""
    mine = torch.tensor(values, device=device)
    every = [mine]
    if world > 1:
        every = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(every, mine)
    return [[int(t[i]) for t in every] for i in range(len(values))]


def _finish(run: Path, logger, step: int, batches: int, cfg: RunConfig, device, world: int) -> dict:
    """Every rank reports how far it got: uneven shards must not leave one rank behind."""
    steps, sequences = per_rank([step, batches * cfg.data.micro_batch], device, world)
    end = {"event": "end", "steps_per_rank": steps, "sequences_per_rank": sequences}
    logger.write(end)
    logger.close()
    return {"steps": step, **{k: v for k, v in end.items() if k != "event"},
            "checkpoint": str(checkpoint.newest_intact(run)), "log": str(logger.path)}


def _log_record(step, family: Family, window: Window, figures: dict, flops, wait, t_window, peak, world) -> dict:
    """All-reduce the window's sums (the only host sync besides checkpoints) and derive the figures."""
    if dist.is_initialized():
        f = torch.tensor([flops], dtype=torch.float64, device=window.buf.device)
        dist.all_reduce(f)
        flops = float(f)
    w = window.reduce()
    seconds = time.perf_counter() - t_window
    value = mfu.mfu(flops, seconds, peak, world)
    return {
        "step": step,
        **family.means(w, ""),
        **figures,                              # lr, grad_norm and the family's schedule (GPTFace: mask_budget)
        "tokens_per_s": w["tokens"][0] / seconds,        # non-pad tokens, all ranks
        "seq_per_s": w["sequences"][0] / seconds,
        "mfu": "n/a" if value is None else value,
        "data_wait": wait / seconds,            # rank 0's share of time blocked on the loader
        "seconds": seconds,
        **{f"data/{k.replace(' ', '_')}": v for k, v in zip(family.data_stats, w["data"])},
    }
