"""`facecorpus evaluate VQGAN_RUN --task reconstruction --manifest M`: how well a trained VQGAN
reconstructs the faces of a held-out split it never trained on.

Every unique image of the split is read as `tokenize` reads it (trainer/vqgan_data.py), encoded to
codes and decoded back, exactly what the corpus keeps of a face. Scores, over the split's images:
  psnr        dB, per image on [0, 1] pixels, averaged (trainer/metrics.py)
  ssim        torchmetrics' StructuralSimilarityIndexMeasure (11x11 Gaussian window, data range 1)
  lpips       the VGG LPIPS of trainer/lpips.py, when its two weight files are given (else null)
  rfid        FID of the reconstructions against the originals, torchmetrics on the TorchScript
              Inception given by path (else null), as trainer/evaluate.py's text2face FID
  usage       share of the codebook the split's codes use, and their perplexity (trainer/vqgan_codebook.py)
Writes OUT/eval.json, OUT/eval.md and OUT/reconstructions.png (originals above their reconstructions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from facecorpus import vqgan as vq
from facecorpus.preprocess import to_model_input

from . import checkpoint, metrics, vqgan_data
from .lpips import LPIPS
from .vqgan_codebook import usage_and_perplexity

GRID_IMAGES = 8


@dataclass
class Settings:
    manifest: Path
    split: str = "test"
    raw_root: Path | None = None
    vgg: Path | None = None             # torchvision vgg16 weights, for LPIPS
    lpips: Path | None = None           # LPIPS linear layers
    inception: Path | None = None       # TorchScript FID Inception, for rFID
    limit: int | None = None
    batch_size: int = 16


def load(path: Path, device: str = "cpu", skipped: list[str] | None = None) -> tuple[vq.VQGAN, Path]:
    """The VQGAN of a train-vqgan step folder, or of a run's newest intact one (checksums checked)."""
    step = checkpoint.resolve(path, skipped)
    if not (step / "vqgan.json").is_file():
        raise checkpoint.CheckpointError(f"{step}: no vqgan.json: not a train-vqgan checkpoint")
    return vq.load_vqgan(step / "vqgan.json", step / "model.pt", device), step


def evaluate(path: Path, s: Settings, device: str = "cpu", advance=None, out: Path | None = None) -> dict:
    """Reconstruction scores of the VQGAN at `path` on the split's images (module docstring)."""
    model, step = load(path, device)
    table = vqgan_data.split_images(s.manifest, s.split, s.raw_root)
    if s.limit:
        table = table.head(s.limit)
    if len(table) < 2:
        raise vqgan_data.ImageError(f"{s.manifest}: split {s.split!r} holds {len(table)} image(s); "
                                    "reconstruction scores need at least 2")
    perceptual = LPIPS.from_files(s.vgg, s.lpips).to(device) if s.vgg and s.lpips else None
    scores = _scores(model, table, s, perceptual, device, advance)
    result = {"task": "reconstruction", "checkpoint": str(step), "vqgan": model.identity, "manifest": str(s.manifest),
              "split": s.split, "images": len(table), **scores["means"], **scores["codes"]}
    result["lpips_note"] = None if perceptual else "no LPIPS weights given (--lpips-vgg, --lpips)"
    if s.inception is not None:
        net = metrics.load_inception(s.inception, device)
        result["rfid"] = metrics.fid(net, scores["real"], scores["fake"])
    else:
        result["rfid"], result["rfid_note"] = None, "no Inception given (--inception)"
    if out is not None:
        _grid(scores["real"][0][:GRID_IMAGES], scores["fake"][0][:GRID_IMAGES]).save(out / "reconstructions.png")
    return result


@torch.no_grad()
def _scores(model: vq.VQGAN, table, s: Settings, perceptual, device, advance) -> dict:
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(device)
    loader = torch.utils.data.DataLoader(vqgan_data.Faces(table, model.code_grid.resolution), batch_size=s.batch_size)
    sums, real, fake = {"psnr": 0.0, "lpips": 0.0}, [], []
    counts = torch.zeros(model.code_grid.codebook_size, dtype=torch.float64)
    for pixels in loader:
        x = to_model_input(pixels).to(device)
        codes = model.encode(x)
        rec = model.decode(codes)                       # [0, 1]
        orig = (x + 1) / 2
        sums["psnr"] += float(metrics.psnr(orig, rec).sum())
        ssim.update(rec, orig)
        if perceptual is not None:
            sums["lpips"] += float(perceptual(x, rec * 2 - 1).sum())
        counts += torch.bincount(codes.reshape(-1).cpu(), minlength=counts.numel()).double()
        real.append(pixels.permute(0, 3, 1, 2).contiguous())
        fake.append((rec * 255).round().to(torch.uint8).cpu())
        if advance:
            advance(len(pixels))
    n = len(table)
    means = {"psnr": sums["psnr"] / n, "ssim": float(ssim.compute()),
             "lpips": sums["lpips"] / n if perceptual is not None else None}
    health = usage_and_perplexity(counts)
    codes = {"usage": health["usage"], "perplexity": health["perplexity"], "codes_used": int((counts > 0).sum())}
    return {"means": means, "codes": codes, "real": real, "fake": fake}


def _grid(real: torch.Tensor, fake: torch.Tensor):
    from PIL import Image

    row = lambda t: torch.cat(list(t.permute(0, 2, 3, 1)), dim=1)  # noqa: E731 - (B,3,H,W) -> (H, B*W, 3)
    return Image.fromarray(torch.cat([row(real), row(fake)], dim=0).numpy(), "RGB")


def markdown(r: dict) -> str:
    """The scores as a markdown table, with what was not measured and why."""
    def fmt(v, digits=2):
        return "–" if v is None else f"{v:.{digits}f}"

    lines = [f"# VQGAN reconstruction: {r['checkpoint']}", "",
             f"{r['images']:,} images of split `{r['split']}` of `{r['manifest']}`; VQGAN "
             f"{r['vqgan']['name']} ({r['vqgan']['codebook_size']:,} codes, {r['vqgan']['grid'][0]}x"
             f"{r['vqgan']['grid'][1]} of {r['vqgan']['resolution']}px), checkpoint sha256 "
             f"{r['vqgan']['checkpoint_sha256'][:12]}…", "",
             "| PSNR (dB) ↑ | SSIM ↑ | LPIPS ↓ | rFID ↓ | codebook usage | perplexity |", "|---|---|---|---|---|---|",
             f"| {fmt(r['psnr'])} | {fmt(r['ssim'], 4)} | {fmt(r['lpips'], 4)} | {fmt(r['rfid'])} | "
             f"{100 * r['usage']:.1f}% ({r['codes_used']:,}) | {r['perplexity']:.1f} |", ""]
    notes = [f"- {k.replace('_note', '')}: {v}" for k, v in r.items() if k.endswith("_note") and v]
    return "\n".join(lines + notes) + "\n"
