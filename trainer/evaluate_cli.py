"""Click command `evaluate`: the papers' protocols, or a VQGAN's reconstructions -> eval.json + eval.md."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from facecorpus import storage
from facecorpus.excerpt import quote

from . import evaluate as ev
from .fewshot import FEWSHOT_TASKS
from .generate_cli import progress_bar

# What `--task all` runs: the tasks of the model's own paper (Talk2Face's Tables 2-4; GPTFace's Table 2).
FAMILY_TASKS = {"talk2face": ev.TASKS, "gptface": tuple(FEWSHOT_TASKS)}
RECONSTRUCTION = "reconstruction"   # a VQGAN's task (trainer/vqgan_eval.py), not the papers'


def parse_fractions(value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        fractions = tuple(float(v) for v in value.split(","))
    except ValueError:
        fractions = ()
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise click.UsageError(f"--fractions {quote(value, 50)}: comma-separated fractions in (0, 1], e.g. 0.01,0.1,1.0")
    return fractions


def family_tasks(tasks: tuple[str, ...], loaded) -> list[str]:
    """The tasks to run for this model; Talk2Face's generative protocols refuse a GPTFace model."""
    chosen = list(FAMILY_TASKS[loaded.family]) if "all" in tasks else list(dict.fromkeys(tasks))
    wrong = [t for t in chosen if t in ev.TASKS and loaded.family != "talk2face"]
    if wrong:
        raise click.UsageError(f"--task {wrong[0]}: {loaded.source} is a {loaded.title} model; {wrong[0]} asks "
                               f"Talk2Face's prompts. Its tasks: {', '.join(FEWSHOT_TASKS)}")
    return chosen


@click.command()
@click.argument("ckpt", metavar="CKPT", callback=storage.fetch_param)
@click.option("--shards", metavar="PATH|URI", callback=storage.fetch_param,
              help="Shard folder (index.json) holding the held-out splits (every task but reconstruction).")
@click.option("--task", "tasks", multiple=True, type=click.Choice([*ev.TASKS, *FEWSHOT_TASKS, "all", RECONSTRUCTION]),
              default=("all",),
              show_default=True,
              help="Talk2Face's (Talk2Face runs): age (CACD MAE), expression (AffectNet acc.), race (FairFace acc.), "
                   "celeba (40 attributes, mean acc.), caption (CelebAText-HQ BLEU-4/ROUGE-L/METEOR/CIDEr), text2face "
                   "(FID/IS). GPTFace's few-shot linear probe (either family): celeba-attributes (mean acc. over the "
                   "40), rafdb (7-class acc.). all: the model's own paper's tasks. Repeatable. reconstruction: CKPT is a "
                   "train-vqgan run, scored on --manifest's --split (PSNR, SSIM, LPIPS, rFID, codebook usage).")
@click.option("--fractions", help="Few-shot: comma-separated fractions of the train split's images to fit the probe "
                                  "on (default: the paper's, 0.01,0.1,1.0 for celeba-attributes and 0.2,0.5,1.0 "
                                  "for rafdb).")
@click.option("--manifest", metavar="PATH|URI", callback=storage.fetch_param,
              help="reconstruction: the manifest whose --split images the VQGAN reconstructs.")
@click.option("--lpips-vgg", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="reconstruction: torchvision's vgg16 weights file (vgg16-397923af.pth), for LPIPS.")
@click.option("--lpips", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="reconstruction: LPIPS's linear-layer weights (vgg.pth, v0.1).")
@click.option("--split", default="test", show_default=True,
              help="Held-out split of the analysis, caption and reconstruction tasks.")
@click.option("--limit", type=int, help="At most this many images per task (quick checks; the paper uses all).")
@click.option("--rank", is_flag=True, help="Closed label sets: rank the split's values by likelihood instead of greedy decoding.")
@click.option("--caption-dataset", default="celebatexthq", show_default=True)
@click.option("--no-meteor", is_flag=True, help="Skip METEOR (it runs the METEOR 1.5 jar and needs `java`).")
@click.option("--t2f-dataset", default="mmcelebahq", show_default=True, help="Captions and images for text2face.")
@click.option("--t2f-split", default="val", show_default=True, help="The paper compares against the validation images.")
@click.option("--n-faces", type=int, default=1000, show_default=True, help="Faces generated for FID/IS (paper: 1,000).")
@click.option("--inception", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TorchScript FID Inception (inception-2015-12-05.pt); needed by text2face. Nothing is downloaded.")
@click.option("--real-images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="FID reference images (default: the split's images decoded from their VQGAN codes).")
@click.option("--top-k", type=int, default=70, show_default=True, help="text2face sampling.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="text2face sampling.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--vqgan", help="VQGAN preset or config for text2face (default: the bundled one recorded in the run).")
@click.option("--vqgan-ckpt", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("eval"), show_default=True)
def evaluate(ckpt, shards, tasks, fractions, manifest, lpips_vgg, lpips, split, limit, rank, caption_dataset, no_meteor,
             t2f_dataset, t2f_split, n_faces, inception, real_images, top_k, temperature, seed, vqgan, vqgan_ckpt,
             batch_size, device, out):
    """Evaluate CKPT (a run of either family, a step folder or the released talk2face.bin) with the
    papers' protocols, or a VQGAN trained by train-vqgan with `--task reconstruction --manifest M`.

    Writes OUT/eval.json (every score, sample counts, a few example answers; for the few-shot tasks
    each subset's size, seed and keys' sha256) and OUT/eval.md (tables laid out like the papers',
    with their numbers beside ours)."""
    from facecorpus.shards import format as fmt

    from . import inference
    from .generate import GenerationError, Sampling
    from .metrics import MetricsError

    console = Console(stderr=True)
    if RECONSTRUCTION in tasks:
        if len(tasks) > 1 or manifest is None:
            raise click.UsageError("--task reconstruction scores a VQGAN run on --manifest M, alone (not with "
                                   "the model's tasks)")
        from . import vqgan_eval

        settings = vqgan_eval.Settings(manifest, split, None, lpips_vgg, lpips, inception, limit, batch_size)
        return reconstruction(console, ckpt, settings, device, out)
    if shards is None:
        raise click.UsageError("--shards is required for the model's tasks")
    settings = ev.Settings(shards, split, limit, rank, caption_dataset, not no_meteor, t2f_dataset, t2f_split, n_faces,
                           inception, real_images, Sampling(temperature, top_k), seed, batch_size,
                           parse_fractions(fractions))
    results: dict = {"checkpoint": str(ckpt), "shards": str(shards)}
    try:
        device = inference.resolve_device(device)
        loaded = inference.open_model(ckpt, device)
        tasks = family_tasks(tasks, loaded)
        if "text2face" in tasks and inception is None:
            raise click.UsageError("text2face needs --inception PATH (TorchScript inception-2015-12-05.pt); "
                                   "or leave it out with --task")
        results["family"] = loaded.family
        inference.check_shards(loaded, fmt.read_index(shards))
        vq = inference.pick_vqgan(loaded, vqgan, vqgan_ckpt, device) if "text2face" in tasks else None
        with progress_bar(console) as progress:
            def bar(task: str, total: int | None):
                bar_id = progress.add_task(task, total=total)
                return lambda n: progress.advance(bar_id, n)

            for task in tasks:
                results[task] = ev.run_task(task, loaded.model, loaded.builder, settings, bar, vq)
    except (inference.InferenceError, ev.EvaluationError, fmt.FormatError, MetricsError, GenerationError,
            FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    (out / "eval.md").write_text(ev.markdown(results, f"ours ({loaded.title}, {Path(ckpt).name})"))
    summary(console, results)
    console.print(f"-> {out / 'eval.json'}, {out / 'eval.md'}")


def reconstruction(console: Console, ckpt: Path, settings, device: str, out: Path) -> None:
    """`--task reconstruction`: trainer/vqgan_eval.py's scores -> OUT/eval.json, eval.md, reconstructions.png."""
    from . import inference, vqgan_eval
    from .checkpoint import CheckpointError
    from .lpips import LPIPSError
    from .metrics import MetricsError
    from .vqgan_data import ImageError

    out.mkdir(parents=True, exist_ok=True)
    try:
        with progress_bar(console) as progress:
            bar = progress.add_task("reconstruction", total=None)
            result = vqgan_eval.evaluate(ckpt, settings, inference.resolve_device(device),
                                         lambda n: progress.advance(bar, n), out)
    except (CheckpointError, LPIPSError, ImageError, MetricsError, inference.InferenceError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    (out / "eval.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "eval.md").write_text(vqgan_eval.markdown(result))
    console.print(vqgan_eval.markdown(result))
    console.print(f"-> {out / 'eval.json'}, {out / 'eval.md'}, {out / 'reconstructions.png'}")


def summary(console: Console, results: dict) -> None:
    t = Table(title="evaluate")
    for col in ("task", "n", "score", "paper"):
        t.add_column(col, justify="right" if col != "task" else "left")
    keys = {"age": ("mae", "age_mae"), "expression": ("accuracy", "expression_acc"), "race": ("accuracy", "race_acc"),
            "celeba": ("accuracy", "celeba_acc")}
    for task, r in results.items():
        if not isinstance(r, dict):
            continue
        if task in FEWSHOT_TASKS:
            for row in r["results"]:
                t.add_row(f"{task} {100 * row['fraction']:g}%", str(row["train_images"]),
                          f"acc {row['accuracy']:.2f}", "–" if row["paper_gptface"] is None else f"{row['paper_gptface']}")
        elif task in keys:
            k, p = keys[task]
            t.add_row(task, str(r["n"]), f"{k} {r[k]:.2f}", f"{ev.PAPER[p]}")
        elif task == "caption":
            for k in ("bleu4", "rouge_l", "meteor", "cider"):
                t.add_row(f"caption {k}", str(r["n"]), "–" if r[k] is None else f"{r[k]:.2f}", f"{ev.PAPER[k]}")
        else:
            t.add_row("text2face fid", str(r["n"]), f"{r['fid']:.2f}", f"{ev.PAPER['fid']}")
            t.add_row("text2face is", str(r["n"]), f"{r['is']:.2f}", f"{ev.PAPER['is']}")
    console.print(t)
