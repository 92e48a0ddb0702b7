"""Click command `generate`: faces, captions or attribute values from a checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from . import generate as gen

if TYPE_CHECKING:
    import torch


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_vqgan(ckpt: Path, vqgan: str | None, vqgan_ckpt: Path | None, device: str):
    """The VQGAN the user names, else the bundled one the run's shards were made with."""
    from facecorpus.vqgan import PRESETS, load_vqgan

    from .released import recorded_vqgan

    recorded = recorded_vqgan(ckpt)
    if vqgan is None:
        name = recorded.get("name")
        if name not in PRESETS or PRESETS[name][1] is None:
            raise click.UsageError(f"{ckpt}: no bundled VQGAN recorded (found {name!r}); pass --vqgan ffhq-f16 "
                                   "--vqgan-ckpt PATH (the taming FFHQ checkpoint the shards were made with)")
        vqgan = name
    model = load_vqgan(vqgan, vqgan_ckpt, device)
    want = recorded.get("checkpoint_sha256")
    if want and want != model.identity["checkpoint_sha256"]:
        raise click.UsageError(f"{ckpt} was trained on codes of VQGAN checkpoint {want[:12]}..., but the VQGAN "
                               f"given has {model.identity['checkpoint_sha256'][:12]}...: its codes mean nothing to this model")
    return model


def encode_images(paths: list[Path], vqgan) -> torch.Tensor:
    """Input images through the tokenization preprocessing (facecorpus.preprocess) -> [N,256] codes."""
    import torch

    from facecorpus.preprocess import load_image, preprocess

    try:
        x = torch.stack([preprocess(load_image(p)) for p in paths])
    except (OSError, ValueError) as err:
        raise click.UsageError(f"cannot read an input image: {err}") from err
    return vqgan.encode(x).reshape(len(paths), -1).cpu()


def read_texts(texts: tuple[str, ...], texts_file: Path | None) -> list[str]:
    out = list(texts)
    if texts_file:
        for n, line in enumerate(texts_file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                raise click.UsageError(f"{texts_file}:{n}: empty line (one text per line)")
            out.append(line.strip())
    return out


@click.command()
@click.argument("ckpt", type=click.Path(exists=True, path_type=Path))
@click.option("--prompt", type=click.Choice(list(gen.PROMPTS)), required=True,
              help="to-image: text -> 256x256 PNG; to-caption: image -> sentence; to-attributes: image + --key -> value.")
@click.option("--text", "texts", multiple=True, help="to-image input (repeatable): a caption and/or key-value attributes.")
@click.option("--texts-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="to-image inputs, one per line.")
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="to-caption / to-attributes input image (repeatable); preprocessed exactly as at tokenization.")
@click.option("--key", help="to-attributes: the attribute key, e.g. 'fairface race:' or 'cacd age:'.")
@click.option("--candidates", help="to-attributes: comma-separated closed label set; rank them by likelihood instead of decoding.")
@click.option("--num-samples", type=int, default=1, show_default=True, help="Samples per input.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, default=70, show_default=True, help="0 = off (70 is the release's default).")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling; 1.0 = off.")
@click.option("--greedy", is_flag=True, help="Arg-max decoding (always used for to-attributes).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--vqgan", help="VQGAN preset or config (default: the bundled one recorded in the run, if any).")
@click.option("--vqgan-ckpt", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="VQGAN weights.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto (cuda when present).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("generated"), show_default=True,
              help="Folder for PNGs and results.json.")
def generate(ckpt, prompt, texts, texts_file, images, key, candidates, num_samples, temperature, top_k, top_p,
             greedy, seed, batch_size, vqgan, vqgan_ckpt, device, out):
    """Sample from CKPT: a training run or step folder (`RUN/step-XXXXXXXX/`), or the authors'
    released `talk2face.bin` (TencentPretrain layout, loaded strictly into talk2face-base).

    Decoding uses a key/value cache and modality masks: image positions produce only the 1,024
    VQGAN codes, text positions only WordPiece ids and [SEP]. Results go to OUT/results.json; faces
    to OUT/NNNN.png (inputs in order, each repeated --num-samples times)."""
    import torch

    from .released import open_model

    console = Console(stderr=True)
    try:
        sampling = gen.GREEDY if greedy else gen.Sampling(temperature, top_k, top_p)
    except gen.GenerationError as err:
        raise click.UsageError(str(err)) from err
    device = resolve_device(device)
    inputs = read_texts(texts, texts_file) if prompt == "to-image" else [str(p) for p in images]
    if not inputs:
        raise click.UsageError(f"{prompt} needs inputs: " + ("--text/--texts-file" if prompt == "to-image" else "--image"))
    if prompt == "to-attributes" and not key:
        raise click.UsageError("to-attributes needs --key, e.g. --key 'fairface race:'")
    model = open_model(ckpt, device)
    vq = pick_vqgan(ckpt, vqgan, vqgan_ckpt, device)
    g = torch.Generator(device=device).manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = [inp for inp in inputs for _ in range(num_samples)]
    with progress_bar(console) as progress:
        task = progress.add_task(prompt, total=len(rows))
        advance = lambda n: progress.advance(task, n)
        try:
            results = _run(model, vq, prompt, rows, key, candidates, sampling, g, batch_size, out, advance)
        except gen.GenerationError as err:
            raise click.UsageError(str(err)) from err
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    table = Table(title=f"generate {prompt}")
    table.add_column("input")
    table.add_column("output")
    for r in results[:20]:
        table.add_row(Path(r["input"]).name if prompt != "to-image" else r["input"][:60], str(r["output"]))
    console.print(table)
    console.print(f"{len(results)} results -> {out / 'results.json'}")
    sys.stdout.flush()


def _run(model, vq, prompt, rows, key, candidates, sampling, g, batch_size, out, advance) -> list[dict]:
    from facecorpus.preprocess import to_pil

    if prompt == "to-image":
        codes = gen.generate_images(model, rows, sampling, g, batch_size, progress=advance)
        results = []
        for i, text in enumerate(rows):
            path = out / f"{i:04d}.png"
            to_pil(vq.decode(codes[i:i + 1])[0]).save(path)
            results.append({"input": text, "output": str(path)})
        return results
    codes = encode_images([Path(r) for r in rows], vq)
    if prompt == "to-caption":
        outputs = gen.generate_captions(model, codes, sampling, g, batch_size, progress=advance)
    elif candidates:
        values = [c.strip() for c in candidates.split(",") if c.strip()]
        outputs, _ = gen.rank_values(model, codes, key, values, batch_size, progress=advance)
    else:
        outputs = gen.generate_attribute(model, codes, key, gen.GREEDY, g, batch_size, progress=advance)
    return [{"input": r, "output": o} for r, o in zip(rows, outputs)]
