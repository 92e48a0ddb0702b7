"""`train-vqgan`: taming's VQGAN (Encoder, Decoder, VectorQuantizer2 as facecorpus/vqgan.py assembles
them) trained on a manifest's faces, alone or under torchrun DDP, resumable exactly.

It shares `train`'s pieces (trainer/train.py's process setup, autocast and JSONL logger; the
checkpoint publishing, checksums and newest-intact resume of trainer/checkpoint.py; the typed
settings of trainer/settings.py). What it adds: two networks and two Adam optimizers as taming
trains them (the autoencoder, then the patch-GAN discriminator once `loss.disc_start` is reached;
trainer/vqgan_losses.py), codebook health (trainer/vqgan_codebook.py) and a checkpoint whose
`model.pt` (VQModel's keys only) and `vqgan.json` are a VQGAN that `load_vqgan`, `tokenize` and
`generate` take as they are:

    RUN/step-XXXXXXXX/  model.pt  vqgan.json  discriminator.pt  optimizer.pt  trainer.pt  config.json
                        rng-rankR.pt  checksums.json

Differences from taming's Lightning loop, and why: one autoencoder forward per step serves both
optimizers (Lightning ran it again for the discriminator, after the autoencoder's update); the GAN
terms are not computed before they count; bf16 autocast on CUDA with the code search in fp32.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from facecorpus import atomic
from facecorpus import vqgan as vq
from facecorpus.preprocess import to_model_input

from . import checkpoint, vqgan_data
from .lpips import LPIPS
from .metrics import psnr
from .train import Logger, autocast_dtype, per_rank, run_distributed
from .vqgan_codebook import CodebookWatch, summed, usage_and_perplexity
from .vqgan_config import VQRunConfig, apply_overrides
from .vqgan_losses import autoencoder_loss, discriminator, discriminator_loss, gan_on

NO_PERCEPTUAL = ("no perceptual term: loss.vgg and loss.lpips are not given, so the reconstruction loss is "
                 "L1 alone (docs/vqgan.md); expect blurrier reconstructions than taming's")


class VQLogger(Logger):
    def line(self, record: dict) -> str | None:
        if "loss" in record:
            gan = f"  g {record['g']:.3f}  disc {record['disc']:.3f}" if "g" in record else ""
            return (f"step {record['step']:>8}  loss {record['loss']:.4f}  l1 {record['l1']:.4f}{gan}  "
                    f"usage {100 * record['usage']:.1f}%  ppl {record['perplexity']:.0f}  "
                    f"img/s {record['images_per_s']:.1f}  data wait {100 * record['data_wait']:.1f}%")
        if "val/psnr" in record:
            return f"step {record['step']:>8}  val l1 {record['val/l1']:.4f}  psnr {record['val/psnr']:.2f} dB"
        return None


class Sums:
    """Named sums of per-micro-batch figures (times its images) since the last log line, on the device."""

    def __init__(self, device: torch.device):
        self.device, self.sums, self.images, self.reseeded = device, {}, 0, 0

    def add(self, parts: dict, n: int) -> None:
        for name, value in parts.items():
            self.sums[name] = self.sums.get(name, 0) + value.detach().double() * n
        self.images += n

    def means(self) -> dict:
        """Means over all ranks (a host sync); the figures every rank computed."""
        names = sorted(self.sums)
        buf = torch.stack([self.sums[n].to(self.device) for n in names] +
                          [torch.tensor(float(self.images), dtype=torch.float64, device=self.device)])
        if dist.is_initialized():
            dist.all_reduce(buf)
        *values, images = buf.tolist()
        return {**{n: v / images for n, v in zip(names, values)}, "images": images}


def resolve_config(run: Path, manifest: str, preset: str | None, overrides: list[str]) -> tuple[VQRunConfig, Path | None]:
    """(config, the checkpoint it resumes or None); a resumed run keeps its preset and architecture."""
    last = checkpoint.newest_intact(run)
    if last is None:
        cfg = apply_overrides(VQRunConfig.from_preset(preset or "tiny-f16"), overrides)
    else:
        saved = load_config(last)
        if preset and preset != saved.preset:
            raise checkpoint.CheckpointError(f"{run} holds a {saved.preset} run ({last.name}); --preset {preset} "
                                             "would not resume it")
        cfg = apply_overrides(saved, overrides)
    cfg.data.manifest = str(manifest)
    return cfg, last


def load_config(ckpt: Path) -> VQRunConfig:
    try:
        return VQRunConfig.from_dict(json.loads((Path(ckpt) / "config.json").read_text()), f"{ckpt}/config.json")
    except (OSError, ValueError) as err:
        raise checkpoint.CheckpointError(f"{ckpt}: config.json is unreadable ({err})") from None


def accumulation_steps(cfg: VQRunConfig, world: int) -> int:
    per_step = world * cfg.data.micro_batch
    if cfg.train.batch_size % per_step:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not a multiple of world size {world} x "
                         f"data.micro_batch={cfg.data.micro_batch} = {per_step}")
    return cfg.train.batch_size // per_step


def build(cfg: VQRunConfig, device: torch.device):
    """(VQGAN, discriminator, their Adam optimizers), initialised alike on every rank."""
    torch.manual_seed(cfg.train.seed)
    ae = vq.VQGAN(cfg.vqgan).to(device).train()
    disc = discriminator(cfg.loss).to(device).train()
    betas = (cfg.train.beta1, cfg.train.beta2)
    return (ae, disc, torch.optim.Adam(ae.parameters(), lr=cfg.train.lr, betas=betas),
            torch.optim.Adam(disc.parameters(), lr=cfg.train.lr, betas=betas))


def perceptual(cfg: VQRunConfig, device: torch.device) -> LPIPS | None:
    return LPIPS.from_files(Path(cfg.loss.vgg), Path(cfg.loss.lpips)).to(device) if cfg.loss.perceptual else None


def save(run: Path, step: int, nets, watch: CodebookWatch, cfg: VQRunConfig, consumed: int) -> Path:
    """Collective: the step's checkpoint (module docstring), published by checkpoint.publish."""
    ae, disc, opt_ae, opt_disc = nets
    world = dist.get_world_size() if dist.is_initialized() else 1
    codebook = {k: summed(v) for k, v in watch.state_dict().items()}   # only their sums over ranks count

    def write(tmp: Path) -> None:
        torch.save(ae.state_dict(), tmp / "model.pt")
        vq.write_config({**cfg.vqgan, "name": cfg.preset}, tmp / "vqgan.json",
                        f"trained by facecorpus train-vqgan into {run.name}/, step {step}")
        torch.save(disc.state_dict(), tmp / "discriminator.pt")
        torch.save({"autoencoder": opt_ae.state_dict(), "discriminator": opt_disc.state_dict()}, tmp / "optimizer.pt")
        torch.save({"step": step, "images_consumed": consumed, "world": world, "codebook": codebook}, tmp / "trainer.pt")
        (tmp / "config.json").write_text(cfg.to_json())

    return checkpoint.publish(run, step, write, cfg.train.keep_checkpoints)


def resume(run: Path, rank: int, logger: VQLogger, nets, watch: CodebookWatch) -> tuple[int, int, Path | None]:
    """(step, images consumed by this rank, checkpoint) from the newest intact checkpoint; (0, 0, None) if none."""
    if rank == 0:
        atomic.sweep(run)   # a checkpoint folder a killed run left half-written
    if dist.is_initialized():
        dist.barrier()
    skipped: list[str] = []
    ckpt = checkpoint.newest_intact(run, skipped)
    for why in skipped:
        logger.note(f"skipping damaged checkpoint {why}")
    if ckpt is None:
        if skipped:
            raise checkpoint.CheckpointError(f"{run}: no intact checkpoint to resume from ({'; '.join(skipped)}); "
                                             "remove the damaged step folders to start afresh")
        return 0, 0, None
    ae, disc, opt_ae, opt_disc = nets
    state = checkpoint.trainer_state(ckpt)
    ae.load_state_dict(checkpoint.torch_load(ckpt / "model.pt"))
    disc.load_state_dict(checkpoint.torch_load(ckpt / "discriminator.pt"))
    optimizers = checkpoint.torch_load(ckpt / "optimizer.pt")
    opt_ae.load_state_dict(optimizers["autoencoder"])
    opt_disc.load_state_dict(optimizers["discriminator"])
    if rank == 0:   # the counts were saved summed over ranks
        watch.load_state_dict(state["codebook"])
    checkpoint.restore_rng(ckpt)
    if rank == 0 and logger.console is not None:
        logger.console.print(f"resumed from {ckpt} at step {state['step']}")
    return state["step"], state["images_consumed"], ckpt


def train_vqgan(cfg: VQRunConfig, run: Path, console=None) -> dict:
    """Train (or resume, when `run` holds a checkpoint) until cfg.train.max_steps; returns a summary."""
    return run_distributed(_train, cfg, run, console)


def _train(cfg: VQRunConfig, run: Path, rank: int, world: int, device: torch.device, console) -> dict:
    accum = accumulation_steps(cfg, world)
    raw_root = Path(cfg.data.raw_root) if cfg.data.raw_root else None
    table = vqgan_data.split_images(Path(cfg.data.manifest), cfg.data.split, raw_root)
    if table.empty:
        raise vqgan_data.ImageError(f"{cfg.data.manifest}: no images in split {cfg.data.split!r}")
    run.mkdir(parents=True, exist_ok=True)
    nets = build(cfg, device)
    lpips = perceptual(cfg, device)
    logger = VQLogger(run, cfg, rank, console)
    watch = CodebookWatch(cfg.grid.codebook_size, device)
    step, consumed, resumed = resume(run, rank, logger, nets, watch)
    if lpips is None:
        logger.note(NO_PERCEPTUAL)
    ae = nets[0]
    _say(rank, console, f"VQGAN {cfg.preset}: {sum(p.numel() for p in ae.parameters()):,} parameters, "
                        f"{cfg.grid.as_dict()}; {len(table):,} {cfg.data.split} images; {world} process(es) x "
                        f"{cfg.data.micro_batch} images x {accum} micro-steps = {cfg.train.batch_size} per step")
    val = _held_out(cfg, raw_root, rank, world, logger)
    data = vqgan_data.loader(table, cfg.grid.resolution, cfg.data.micro_batch, cfg.train.seed, rank, world, consumed,
                             cfg.data.num_workers)
    ddp = [DDP(n) if world > 1 else n for n in nets[:2]]
    amp = autocast_dtype(cfg, device)
    if resumed is None:   # an early checkpoint makes a misconfigured save path fail in seconds
        save(run, 0, nets, watch, cfg, consumed)
    sums, wait, t_window = Sums(device), 0.0, time.perf_counter()
    while step < cfg.train.max_steps:
        batches = (vqgan_data.crop(next(data), cfg.data.crop, cfg.train.seed, rank, consumed + k * cfg.data.micro_batch)
                   for k in range(accum))
        waited, z = train_step(cfg, nets, ddp, batches, lpips, watch, sums, device, amp, step, accum, world)
        wait += waited
        step, consumed = step + 1, consumed + accum * cfg.data.micro_batch
        if cfg.train.reseed_interval and step % cfg.train.reseed_interval == 0:
            sums.reseeded += watch.reseed(ae.quantize.embedding, nets[2], z, cfg.train.seed, step)
        last, stopping = step == cfg.train.max_steps, step == cfg.train.stop_at_step
        if step % cfg.train.log_interval == 0 or last:
            logger.write(_log_record(step, cfg, sums, watch, wait, t_window))
            sums, wait, t_window = Sums(device), 0.0, time.perf_counter()
        if val is not None and (last or step % cfg.train.eval_interval == 0):
            logger.write({"step": step, **held_out_figures(ae, val, cfg, device, amp)})
        if step % cfg.train.ckpt_interval == 0 or last or stopping:
            save(run, step, nets, watch, cfg, consumed)
            if stopping:
                break
    return _finish(run, logger, step, consumed, device, world)


def train_step(cfg, nets, ddp, batches, lpips, watch, sums: Sums, device, amp, step: int, accum: int, world: int):
    """One optimizer step of both networks over `accum` micro-batches -> (seconds spent waiting for
    data, the last micro-batch's encoder outputs: what dead codes are re-seeded from)."""
    ae, disc, opt_ae, opt_disc = nets
    gan, wait = gan_on(cfg.loss, step), 0.0
    cast = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
    for micro in range(accum):
        t0 = time.perf_counter()
        x = to_model_input(next(batches)).to(device, non_blocking=True)
        wait += time.perf_counter() - t0
        sync = micro == accum - 1 or world == 1
        disc.requires_grad_(False)   # the autoencoder's pass through D must leave D's gradients alone (taming)
        with (ddp[0].no_sync() if not sync else contextlib.nullcontext()):
            with cast:
                xrec, qloss, codes, z = ddp[0](x)
                loss, parts = autoencoder_loss(x, xrec, qloss, cfg.loss, step, lpips, disc, ae.last_layer)
            (loss / accum).backward()
        disc.requires_grad_(True)
        if gan:
            with (ddp[1].no_sync() if not sync else contextlib.nullcontext()):
                with cast:
                    d_loss, d_parts = discriminator_loss(x, xrec, cfg.loss, ddp[1])
                (d_loss / accum).backward()
            parts = {**parts, **d_parts}
        sums.add(parts, len(x))
        watch.add(codes)
    for optimizer in (opt_ae, opt_disc) if gan else (opt_ae,):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return wait, z


def _held_out(cfg: VQRunConfig, raw_root, rank: int, world: int, logger: VQLogger) -> torch.Tensor | None:
    if not cfg.train.eval_interval:
        return None
    table = vqgan_data.split_images(Path(cfg.data.manifest), cfg.data.eval_split, raw_root)
    images = vqgan_data.held_out(table, cfg.grid.resolution, cfg.train.eval_images, rank, world)
    if images is None:
        logger.note(f"no held-out figures: the manifest's {cfg.data.eval_split!r} split has no images for this rank")
    return images


@torch.no_grad()
def held_out_figures(ae: vq.VQGAN, images: torch.Tensor, cfg: VQRunConfig, device, amp) -> dict:
    """L1, PSNR and codebook usage of the held-out images, over all ranks. Draws no random numbers,
    so an exact resume stays exact."""
    ae.eval()
    cast = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
    totals = torch.zeros(3, dtype=torch.float64, device=device)   # l1 sum, psnr sum, images
    counts = torch.zeros(cfg.grid.codebook_size, dtype=torch.float64, device=device)
    for batch in images.split(cfg.data.micro_batch):
        x = to_model_input(batch).to(device)
        with cast:
            xrec, _, codes, _ = ae(x)
        xrec = xrec.float().clamp(-1, 1)
        totals += torch.stack([(x - xrec).abs().mean((1, 2, 3)).sum().double(),
                               psnr((x + 1) / 2, (xrec + 1) / 2).sum().double(), torch.tensor(len(x), device=device)])
        counts += torch.bincount(codes.reshape(-1), minlength=counts.numel()).double()
    ae.train()
    l1, db, n = summed(totals).tolist()
    health = usage_and_perplexity(summed(counts))
    return {"val/l1": l1 / n, "val/psnr": db / n, "val/usage": health["usage"], "val/perplexity": health["perplexity"]}


def _log_record(step: int, cfg: VQRunConfig, sums: Sums, watch: CodebookWatch, wait: float, t_window: float) -> dict:
    means = sums.means()
    seconds = time.perf_counter() - t_window
    return {"step": step, "lr": cfg.train.lr, "gan": gan_on(cfg.loss, step - 1),
            **{k: v for k, v in means.items() if k != "images"}, **watch.health(),
            "reseeded": sums.reseeded,   # the same on every rank: rank 0's choice is broadcast
            "images_per_s": means["images"] / seconds, "data_wait": wait / seconds, "seconds": seconds}


def _finish(run: Path, logger: VQLogger, step: int, consumed: int, device, world: int) -> dict:
    """Every rank reports how far it got; the result names the VQGAN files `tokenize` takes."""
    steps, images = per_rank([step, consumed], device, world)
    end = {"event": "end", "steps_per_rank": steps, "images_per_rank": images}
    logger.write(end)
    logger.close()
    ckpt = checkpoint.newest_intact(run)
    return {"steps": step, **{k: v for k, v in end.items() if k != "event"}, "checkpoint": str(ckpt),
            "vqgan": f"--vqgan {ckpt / 'vqgan.json'} --ckpt {ckpt / 'model.pt'}", "log": str(logger.path)}


def _say(rank: int, console, msg: str) -> None:
    if rank == 0 and console is not None:
        console.print(msg)
