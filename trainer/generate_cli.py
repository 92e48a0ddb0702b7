"""Click command `generate`: faces, captions, attribute values or tags from a checkpoint of either family."""

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

from facecorpus import storage
from facecorpus.excerpt import quote

from . import generate as gen
from .inference import ALL_PROMPTS, PROMPTS


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


def parse_mask(value: str | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    parts = value.split(",")
    try:
        box = tuple(int(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise click.UsageError(f"--mask {quote(value, 50)}: write the pixel box as x0,y0,x1,y1 (four integers)")
    return box


def _prompt_help() -> str:
    return "; ".join(f"{family}: {', '.join(names)}" for family, names in PROMPTS.items())


@click.command()
@click.argument("ckpt", metavar="CKPT", callback=storage.fetch_param)
@click.option("--prompt", type=click.Choice(ALL_PROMPTS), required=True,
              help="to-image: text -> face PNG; to-caption: image -> sentence; to-attributes: image + --key -> value; "
                   "inpaint: image + --mask (+ --text) -> face PNG with the box redrawn; tags: image -> "
                   f"'tags: a, b, ...'. Per model family: {_prompt_help()}.")
@click.option("--text", "texts", multiple=True,
              help="to-image input (repeatable): a caption, or key-value attributes ('fairface age: 20-29; "
                   "gender: male'); inpaint: the one text guiding the redrawn part. A text over the model's text "
                   "budget is cut as in training (on a word or key-value-pair boundary) and the cut is noted.")
@click.option("--texts-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="to-image inputs, one per line.")
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="to-caption / to-attributes / inpaint / tags input image (repeatable); preprocessed exactly as "
                   "at tokenization.")
@click.option("--key", help="to-attributes: the attribute key, e.g. 'fairface race:' or 'cacd age:'.")
@click.option("--candidates", help="to-attributes: comma-separated closed label set; rank them by likelihood instead of decoding.")
@click.option("--mask", "mask_box", metavar="X0,Y0,X1,Y1",
              help="inpaint: the pixel box of the input image to redraw; every code-grid cell it touches is masked.")
@click.option("--per-iteration", type=click.IntRange(min=1), default=8, show_default=True,
              help="GPTFace: positions fixed per decoding iteration (k; the most confident next to the known region).")
@click.option("--guidance", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="GPTFace with a text: the ITM-guidance step λ on the weights, taken each iteration and undone "
                   "after it (0 = unguided).")
@click.option("--num-tags", type=click.IntRange(min=1), default=8, show_default=True, help="tags: [MASK]s to fill.")
@click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True, help="Samples per input.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, default=70, show_default=True, help="0 = off (70 is the release's default).")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling; 1.0 = off.")
@click.option("--greedy", is_flag=True, help="Arg-max decoding (always used for to-attributes).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Sequences decoded together (GPTFace with a text: they share each guidance step).")
@click.option("--vqgan", help="VQGAN preset or config (default: the bundled one recorded in the run, if any).")
@click.option("--vqgan-ckpt", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="VQGAN weights.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto (cuda when present).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("generated"), show_default=True,
              help="Folder for PNGs and results.json.")
def generate(ckpt, prompt, texts, texts_file, images, key, candidates, mask_box, per_iteration, guidance, num_tags,
             num_samples, temperature, top_k, top_p, greedy, seed, batch_size, vqgan, vqgan_ckpt, device, out):
    """Sample from CKPT: a training run (its newest intact checkpoint), a step folder
    (`RUN/step-XXXXXXXX/`), or the authors' released `talk2face.bin` (TencentPretrain layout, loaded
    strictly into talk2face-base).

    The inputs are built as in training, for the code grid and sequence length the checkpoint records.
    Talk2Face decodes left to right with a key/value cache; GPTFace fills [MASK]s MaskGIT-style, k
    positions per iteration, ITM-guided when a text is given. Either way modality masks hold: image
    positions produce only the VQGAN's codes, text positions only WordPiece ids. Results go to
    OUT/results.json; faces to OUT/NNNN.png (inputs in order, each repeated --num-samples times)."""
    import torch

    from . import inference

    console = Console(stderr=True)
    try:
        sampling = gen.GREEDY if greedy else gen.Sampling(temperature, top_k, top_p)
    except gen.GenerationError as err:
        raise click.UsageError(str(err)) from err
    inputs, text = check_inputs(prompt, texts, texts_file, images, key, mask_box)
    out.mkdir(parents=True, exist_ok=True)
    request = inference.Request(prompt, [inp for inp in inputs for _ in range(num_samples)], sampling, key, candidates,
                                text, parse_mask(mask_box), per_iteration, guidance, num_tags)
    try:
        device = inference.resolve_device(device)
        loaded = inference.open_model(ckpt, device)
        for why in loaded.skipped:
            console.print(f"skipping damaged checkpoint {why}")
        inference.check_prompt(loaded, prompt)
        vq = inference.pick_vqgan(loaded, vqgan, vqgan_ckpt, device)
        g = torch.Generator(device=device).manual_seed(seed)
        with progress_bar(console) as progress:
            task = progress.add_task(prompt, total=len(request.inputs))
            results = inference.run_prompt(loaded, vq, request, g, batch_size, out, lambda n: progress.advance(task, n))
    except (inference.InferenceError, gen.GenerationError) as err:
        raise click.ClickException(str(err)) from None
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    show(console, prompt, results, out)


def check_inputs(prompt: str, texts, texts_file, images, key, mask_box) -> tuple[list[str], str | None]:
    """(the prompt's inputs, inpaint's guiding text), or a usage error saying what is missing."""
    if prompt == "to-image":
        inputs = read_texts(texts, texts_file)
        if not inputs:
            raise click.UsageError("to-image needs inputs: --text/--texts-file")
        return inputs, None
    if not images:
        raise click.UsageError(f"{prompt} needs inputs: --image")
    if prompt == "to-attributes" and not key:
        raise click.UsageError("to-attributes needs --key, e.g. --key 'fairface race:'")
    if prompt == "inpaint":
        if mask_box is None:
            raise click.UsageError("inpaint needs --mask X0,Y0,X1,Y1: the pixel box of the input image to redraw")
        if len(texts) > 1 or texts_file:
            raise click.UsageError("inpaint takes at most one --text (the text guiding the redrawn part)")
        return [str(p) for p in images], texts[0] if texts else None
    if texts or texts_file or mask_box:
        raise click.UsageError(f"{prompt} reads only --image" + (" and --key" if prompt == "to-attributes" else ""))
    return [str(p) for p in images], None


def show(console: Console, prompt: str, results: list[dict], out: Path) -> None:
    table = Table(title=f"generate {prompt}")
    table.add_column("input")
    table.add_column("output")
    for r in results[:20]:
        table.add_row(Path(r["input"]).name if prompt != "to-image" else r["input"][:60], str(r["output"])[:80])
    console.print(table)
    for i, r in enumerate(results):
        if r.get("note"):
            console.print(f"note: input {i + 1} ({r['input'][:40]!r}...): {r['note']}")
    console.print(f"{len(results)} results -> {out / 'results.json'}")
    sys.stdout.flush()
