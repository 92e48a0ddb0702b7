"""Demo stage `evaluate`: what the demo model learned, on the held-out split, into OUT/eval.

results.json and results.md hold:
  attributes  to-attributes accuracy (greedy answers, scored as `facecorpus evaluate` scores them) on
              every CelebA attribute the face drawer draws (`DRAWN`), each beside its majority-class
              baseline: the accuracy of always answering the split's most common value
  caption     to-caption BLEU-4 and CIDEr (trainer/metrics.py) of greedy captions of the split's
              images of every caption dataset, against all their references; METEOR is skipped
              (it needs Java), the generated captions beside their references go to OUT/samples
  vqgan       reconstruction PSNR of the bundled VQGAN on held-out CelebA images (metrics.psnr)

The demo's target (issue 13): mean accuracy on the drawn attributes >= 90% and >= 20 points above
the mean baseline; `target_met` says whether this run reached it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from facecorpus import manifest as mf
from facecorpus.atomic import atomic_write
from facecorpus.converters.samples.celeba import HAIR, SHARES
from facecorpus.preprocess import load_image, preprocess
from facecorpus.textproto import attribute_name, format_value

from . import evaluate, metrics
from .inference import open_model, pick_vqgan

# CelebA's attributes that decide what the drawer draws (converters/samples/celeba.py `look`), as
# the record's label names. Mouth_Slightly_Open is left out: a smile is drawn over it.
DRAWN = tuple("gender" if a == "Male" else attribute_name(a)
              for a in (*(name for name, _, _ in HAIR), *SHARES, "No_Beard", "Mustache"))
TARGET_ACCURACY, TARGET_MARGIN = 90.0, 20.0    # percent, and points above the baseline
PSNR_IMAGES = 64     # held-out images the VQGAN reconstructs: enough for a stable mean, a few seconds


def attribute_scores(model, builder, shards: Path, split: str, batch_size: int = 32, progress=None) -> dict:
    """Accuracy and majority-class baseline of every DRAWN attribute on the split's CelebA images."""
    samples = evaluate.by_image(evaluate.read_samples(shards, split, "attributes", "celeba"))
    per = {}
    for name in DRAWN:
        having = [s for s in samples if name in s.labels]
        scored = evaluate.score_attribute(model, builder, having, "celeba", name, "accuracy", False, batch_size,
                                          progress)
        majority, count = Counter(format_value(s.labels[name]) for s in having).most_common(1)[0]
        per[name] = {"accuracy": scored["accuracy"], "baseline": 100 * count / len(having), "majority": majority,
                     "n": len(having), "examples": scored["examples"][:2]}
    accuracy = float(np.mean([r["accuracy"] for r in per.values()]))
    baseline = float(np.mean([r["baseline"] for r in per.values()]))
    return {"dataset": "celeba", "split": split, "images": len(samples), "decoding": "greedy",
            "mean_accuracy": accuracy, "mean_baseline": baseline,
            "target_met": accuracy >= TARGET_ACCURACY and accuracy - baseline >= TARGET_MARGIN, "per_attribute": per}


@torch.no_grad()
def reconstruction_psnr(manifest: Path, vqgan, split: str = "test", dataset: str = "celeba",
                        limit: int = PSNR_IMAGES, batch_size: int = 16) -> dict:
    """Mean PSNR (dB) of the VQGAN's reconstructions of the split's first `limit` images of `dataset`,
    read and preprocessed as `tokenize` reads them."""
    table = mf.read_records(manifest, [dataset])
    rows = table[table["split"] == split].drop_duplicates("image_id").sort_values("key").head(limit)
    root, size = mf.image_root(manifest, dataset), vqgan.code_grid.resolution
    scores = []
    for start in range(0, len(rows), batch_size):
        part = rows.iloc[start:start + batch_size]
        x = torch.stack([preprocess(load_image(root / r.image), r.bbox, size=size) for r in part.itertuples()])
        scores.append(metrics.psnr((x + 1) / 2, vqgan.decode(vqgan.encode(x))))
    if not scores:
        raise evaluate.EvaluationError(f"{manifest}: no {dataset} images in split {split!r} to reconstruct")
    return {"psnr": float(torch.cat(scores).mean()), "images": len(rows), "dataset": dataset, "split": split,
            "vqgan": vqgan.identity["name"], "checkpoint_sha256": vqgan.identity["checkpoint_sha256"]}


def markdown(r: dict) -> str:
    """results.md: the attribute table (accuracy beside baseline), the caption scores and the PSNR."""
    a, c, v = r["attributes"], r["caption"], r["vqgan"]
    lines = [f"# What the demo model learned ({r['model']})", "",
             f"## to attributes: {a['images']} held-out CelebA images ({a['split']} split), greedy answers", "",
             "| attribute | accuracy % | majority baseline % | majority answer | n |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {x['accuracy']:.1f} | {x['baseline']:.1f} | {x['majority']} | {x['n']} |"
              for name, x in a["per_attribute"].items()]
    lines += [f"| **mean** | **{a['mean_accuracy']:.1f}** | **{a['mean_baseline']:.1f}** | | |", "",
              f"Target: mean >= {TARGET_ACCURACY:.0f}% and >= {TARGET_MARGIN:.0f} points above the baseline: "
              f"**{'met' if a['target_met'] else 'not met'}** ({a['mean_accuracy'] - a['mean_baseline']:+.1f} points).",
              "", f"## to caption: {c['n']} held-out images of the caption sets ({c['split']} split), greedy", "",
              "| BLEU-4 | CIDEr | ROUGE-L | images | references per image |", "|---|---|---|---|---|",
              f"| {c['bleu4']:.1f} | {c['cider']:.1f} | {c['rouge_l']:.1f} | {c['n']} | {c['references_per_image']} |",
              "", f"METEOR: {c['meteor_note'] or 'see results.json'}. Captions beside references: samples/captions.md.",
              "", f"## VQGAN reconstruction: {v['vqgan']} on {v['images']} held-out {v['dataset']} images", "",
              f"PSNR {v['psnr']:.2f} dB (checkpoint sha256 {v['checkpoint_sha256'][:12]}...)."]
    return "\n".join(lines) + "\n"


def run(out: Path, console, seed: int = 0) -> dict:
    out = Path(out)
    shards, folder = out / "shards", out / "eval"
    loaded = open_model(out / "run")
    model, builder = loaded.model.eval(), loaded.builder
    vqgan = pick_vqgan(loaded, None, None, "cpu")   # the bundled VQGAN the demo's shards were made with
    with Progress(console=console, transient=True) as bars:
        task = bars.add_task("to-attributes on held-out faces", total=None)
        attributes = attribute_scores(model, builder, shards, "test", progress=lambda n: bars.advance(task, n))
        task = bars.add_task("to-caption on held-out faces", total=None)
        caption = evaluate.evaluate_captions(model, builder, shards, "test", None, meteor=False, batch_size=32,
                                             progress=lambda n: bars.advance(task, n), n_examples=10**6)
    recon = reconstruction_psnr(out / "manifest", vqgan)
    results = {"model": f"run/{loaded.source.name}", "attributes": attributes, "caption": caption,
               "vqgan": recon}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write(folder / "results.md", markdown(results))
    console.print(markdown(results))
    return {"attributes": f"{attributes['mean_accuracy']:.1f}% (baseline {attributes['mean_baseline']:.1f}%)",
            "BLEU-4": f"{caption['bleu4']:.1f}", "CIDEr": f"{caption['cider']:.1f}", "PSNR": f"{recon['psnr']:.1f} dB"}
