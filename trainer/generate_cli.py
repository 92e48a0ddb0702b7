"""Click command `generate`: faces, captions or attribute values from a checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


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
@click.option("--prompt", type=click.Choice(gen.PROMPT_NAMES), required=True,
              help="to-image: text -> face PNG; to-caption: image -> sentence; to-attributes: image + --key -> value.")
@click.option("--text", "texts", multiple=True,
              help="to-image input (repeatable): a caption, or key-value attributes ('fairface age: 20-29; "
                   "gender: male'). A text over the model's text budget is cut as in training (on a word or "
                   "key-value-pair boundary) and the cut is noted.")
@click.option("--texts-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="to-image inputs, one per line.")
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="to-caption / to-attributes input image (repeatable); preprocessed exactly as at tokenization.")
@click.option("--key", help="to-attributes: the attribute key, e.g. 'fairface race:' or 'cacd age:'.")
@click.option("--candidates", help="to-attributes: comma-separated closed label set; rank them by likelihood instead of decoding.")
@click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True, help="Samples per input.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, default=70, show_default=True, help="0 = off (70 is the release's default).")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling; 1.0 = off.")
@click.option("--greedy", is_flag=True, help="Arg-max decoding (always used for to-attributes).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Sequences decoded together.")
@click.option("--vqgan", help="VQGAN preset or config (default: the bundled one recorded in the run, if any).")
@click.option("--vqgan-ckpt", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="VQGAN weights.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto (cuda when present).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("generated"), show_default=True,
              help="Folder for PNGs and results.json.")
def generate(ckpt, prompt, texts, texts_file, images, key, candidates, num_samples, temperature, top_k, top_p,
             greedy, seed, batch_size, vqgan, vqgan_ckpt, device, out):
    """Sample from CKPT: a training run (its newest intact checkpoint), a step folder
    (`RUN/step-XXXXXXXX/`), or the authors' released `talk2face.bin` (TencentPretrain layout, loaded
    strictly into talk2face-base).

    The inputs are built as in training, for the code grid and sequence length the checkpoint records.
    Decoding uses a key/value cache and modality masks: image positions produce only the VQGAN's
    codes, text positions only WordPiece ids and [SEP]. Results go to OUT/results.json; faces to
    OUT/NNNN.png (inputs in order, each repeated --num-samples times)."""
    import torch

    from . import inference

    console = Console(stderr=True)
    try:
        sampling = gen.GREEDY if greedy else gen.Sampling(temperature, top_k, top_p)
    except gen.GenerationError as err:
        raise click.UsageError(str(err)) from err
    inputs = read_texts(texts, texts_file) if prompt == "to-image" else [str(p) for p in images]
    if not inputs:
        raise click.UsageError(f"{prompt} needs inputs: " + ("--text/--texts-file" if prompt == "to-image" else "--image"))
    if prompt == "to-attributes" and not key:
        raise click.UsageError("to-attributes needs --key, e.g. --key 'fairface race:'")
    out.mkdir(parents=True, exist_ok=True)
    rows = [inp for inp in inputs for _ in range(num_samples)]
    try:
        device = inference.resolve_device(device)
        loaded = inference.open_model(ckpt, device)
        for why in loaded.skipped:
            console.print(f"skipping damaged checkpoint {why}")
        vq = inference.pick_vqgan(loaded, vqgan, vqgan_ckpt, device)
        g = torch.Generator(device=device).manual_seed(seed)
        with progress_bar(console) as progress:
            task = progress.add_task(prompt, total=len(rows))
            results = inference.run_prompt(loaded, vq, prompt, rows, key, candidates, sampling, g, batch_size, out,
                                           lambda n: progress.advance(task, n))
    except (inference.InferenceError, gen.GenerationError) as err:
        raise click.ClickException(str(err)) from None
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    show(console, prompt, results, out)


def show(console: Console, prompt: str, results: list[dict], out: Path) -> None:
    table = Table(title=f"generate {prompt}")
    table.add_column("input")
    table.add_column("output")
    for r in results[:20]:
        table.add_row(Path(r["input"]).name if prompt != "to-image" else r["input"][:60], str(r["output"]))
    console.print(table)
    for i, r in enumerate(results):
        if r.get("note"):
            console.print(f"note: input {i + 1} ({r['input'][:40]!r}...): {r['note']}")
    console.print(f"{len(results)} results -> {out / 'results.json'}")
    sys.stdout.flush()
