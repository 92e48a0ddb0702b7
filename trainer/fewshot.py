"""The GPTFace paper's few-shot protocol (its Table 2), for either model family: freeze the
pre-trained model, fit a linear head on a fraction of the train split's images, report test accuracy.

  celeba-attributes   CelebA's 40 attributes, each its own classifier: the mean test accuracy
                      (paper, GPTFace: 89.73 / 90.89 / 91.74 at 1% / 10% / 100% of the train split)
  rafdb               RAF-DB's 7 basic expressions: the test accuracy
                      (paper, GPTFace: 78.65 / 83.15 / 85.01 at 20% / 50% / 100%)

Features: the mean of the final states at the image's positions, the same definition for both
families so that one table compares their face representations, not two pooling choices:
  GPTFace     `[CLS] codes [SEP]`, no text (the [CLS] state is trained by ITM alone, a yes/no on
              image-text pairs; the image positions are trained by MILM to know their face)
  Talk2Face   `[CLS] to attributes [SEP] codes [SEP]`: the to-attributes prompt's prefix, which the
              prefix-LM reads bidirectionally
Head: a linear probe (the paper fine-tunes a head on the frozen model and does not describe it): one
linear layer per attribute on standardised features, the mean cross-entropy plus `L2` x the squared
weights, fitted to convergence by full-batch L-BFGS. The problem is convex and starts from zeros, so
the result depends on the chosen images alone.
Subsets: one sample per image (the first by key), the train images in key order, one seeded
permutation, the first ceil(fraction x n): nested (1% inside 10% inside 100%), and recorded by size,
seed and the sha256 of the chosen keys. Labels are the shards' `labels` (the json member).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facecorpus import vocab
from facecorpus.excerpt import shorten
from facecorpus.shards import format as fmt

from .evaluate import EvaluationError, by_image, codes_of, read_samples
from .gptface_batch import Layout
from .sequences import prompt_ids

L2 = 1e-3          # weight of the squared-weights penalty beside the mean cross-entropy
MAX_ITER = 200     # L-BFGS iterations (it converges well before on these convex problems)


@dataclass(frozen=True)
class FewShotTask:
    dataset: str
    fractions: tuple[float, ...]        # the paper's
    paper: dict[float, float]           # GPTFace's Table 2, by fraction
    measure: str


FEWSHOT_TASKS = {
    "celeba-attributes": FewShotTask("celeba", (0.01, 0.1, 1.0), {0.01: 89.73, 0.1: 90.89, 1.0: 91.74},
                                     "mean test accuracy over CelebA's 40 attributes"),
    "rafdb": FewShotTask("rafdb", (0.2, 0.5, 1.0), {0.2: 78.65, 0.5: 83.15, 1.0: 85.01},
                         "7-class expression test accuracy"),
}
FEATURES = {"gptface": "mean of the image positions' final states of [CLS] codes [SEP] (no text)",
            "talk2face": "mean of the image positions' final states under the to-attributes prompt's prefix"}


# ---------------------------------------------------------------- features

@torch.no_grad()
def features(model, layout, codes: torch.Tensor, batch_size: int = 64, progress=None) -> torch.Tensor:
    """[N, side²] codes -> [N, D] fp32 features (see the module docstring), by the model's family
    (`layout`: a GPTFace Layout or Talk2Face's SequenceBuilder)."""
    device = next(model.parameters()).device
    count = layout.grid.count
    out = []
    for start in range(0, len(codes), batch_size):
        image = codes[start:start + batch_size].long() + vocab.IMAGE_OFFSET
        n = len(image)
        if isinstance(layout, Layout):
            ids = torch.cat([torch.full((n, 1), vocab.CLS), image, torch.full((n, 1), vocab.SEP)], 1).to(device)
            h, first = model.hidden(ids), 1
        else:   # [CLS] to attributes [SEP] codes [SEP], all segment 1
            first = 2 + len(prompt_ids()["attributes"])
            ids = torch.tensor([layout.prefix("attributes", image=row) for row in image.tolist()], device=device)
            h = model.hidden(ids, torch.ones_like(ids))
        out.append(h[:, first:first + count].float().mean(1).cpu())
        if progress is not None:
            progress(n)
    return torch.cat(out)


# ---------------------------------------------------------------- labels and subsets

def label_table(train: list[fmt.Sample], test: list[fmt.Sample]) -> tuple[list[str], list[list[str]], torch.Tensor,
                                                                        torch.Tensor]:
    """(attribute names, each one's classes, train labels [N, A], test labels [M, A]) as class indices.
    Every attribute of the train split must be labelled on every sample; classes are the values
    seen in either split (JSON text, so `true` and `"true"` stay apart)."""
    names = sorted({n for s in train for n in s.labels})
    for s in train + test:
        missing = [n for n in names if n not in s.labels]
        if missing:
            raise EvaluationError(shorten(f"{s.shard}: sample {fmt.show(s.key)} lacks the label(s) "
                                          f"{', '.join(missing[:5])}"))
    classes = [sorted({json.dumps(s.labels[n]) for s in train + test}) for n in names]
    index = [{c: i for i, c in enumerate(cs)} for cs in classes]

    def table(samples):
        return torch.tensor([[index[a][json.dumps(s.labels[n])] for a, n in enumerate(names)] for s in samples],
                            dtype=torch.long).view(len(samples), len(names))
    return names, classes, table(train), table(test)


def subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """The first ceil(fraction x n) of one seeded permutation of range(n): nested across fractions."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:max(1, math.ceil(fraction * n - 1e-9))])


def keys_sha256(samples: list[fmt.Sample], chosen: np.ndarray) -> str:
    return hashlib.sha256("\n".join(samples[i].key for i in chosen).encode()).hexdigest()


# ---------------------------------------------------------------- the probe

def _padded(logits: torch.Tensor, n_classes: list[int]) -> torch.Tensor:
    """[N, sum classes] -> [N, attributes, most classes], -inf where an attribute has fewer classes,
    so that one cross-entropy call serves every attribute."""
    widest, offsets = max(n_classes), np.cumsum([0, *n_classes[:-1]])
    cols = torch.tensor([[int(o) + c if c < n else logits.shape[1] for c in range(widest)]
                         for o, n in zip(offsets, n_classes)])
    pad = torch.full((len(logits), 1), float("-inf"), dtype=logits.dtype)
    return torch.cat([logits, pad], 1)[:, cols]


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear layer (weight [D, sum classes], bias) fitted on features x [N, D] and labels y [N, A]:
    per attribute a softmax over its classes, the mean cross-entropy over attributes + L2 ||W||²."""
    w = torch.zeros(x.shape[1], sum(n_classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(sum(n_classes), dtype=torch.float64, requires_grad=True)
    x = x.double()
    opt = torch.optim.LBFGS([w, b], max_iter=MAX_ITER, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        logits = _padded(x @ w + b, n_classes)                    # [N, A, C]
        value = F.cross_entropy(logits.transpose(1, 2), y) + L2 * w.pow(2).sum()   # mean over rows and attributes
        value.backward()
        return value
    opt.step(loss)
    return w.detach(), b.detach()


def probe_accuracy(x_train, y_train, x_test, y_test, n_classes: list[int]) -> list[float]:
    """Per-attribute test accuracy (%) of a probe fitted on (x_train, y_train), features standardised
    by the train part's mean and spread."""
    mean, std = x_train.mean(0), x_train.std(0, unbiased=False).clamp_min(1e-6)
    w, b = fit_probe((x_train - mean) / std, y_train, n_classes)
    preds = _padded(((x_test - mean) / std).double() @ w + b, n_classes).argmax(2)     # [M, A]
    return (100 * (preds == y_test).double().mean(0)).tolist()


# ---------------------------------------------------------------- the protocol

def evaluate_fewshot(model, layout, shards: Path, task: str, fractions: tuple[float, ...] | None = None,
                     seed: int = 0, batch_size: int = 64, limit: int | None = None, bar=None) -> dict:
    """One few-shot task on `shards` (train split to fit, test split to score), one probe per fraction."""
    spec = FEWSHOT_TASKS[task]
    fractions = tuple(fractions or spec.fractions)
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise EvaluationError(f"--fractions: {bad[0]} is not in (0, 1]")
    train = by_image(read_samples(shards, "train", "attributes", spec.dataset))[:limit]
    test = by_image(read_samples(shards, "test", "attributes", spec.dataset))[:limit]
    names, classes, y_train, y_test = label_table(train, test)
    advance = bar(f"{task} features", len(train) + len(test)) if bar else None
    x_train = features(model, layout, codes_of(train), batch_size, advance)
    x_test = features(model, layout, codes_of(test), batch_size, advance)
    fitted = bar(f"{task} probes", len(fractions)) if bar else None
    rows = []
    for fraction in fractions:
        chosen = subset(len(train), fraction, seed)
        per = probe_accuracy(x_train[chosen], y_train[chosen], x_test, y_test, [len(c) for c in classes])
        if fitted is not None:
            fitted(1)
        rows.append({"fraction": fraction, "train_images": len(chosen), "subset_sha256": keys_sha256(train, chosen),
                     "accuracy": float(np.mean(per)), "paper_gptface": spec.paper.get(fraction),
                     "per_attribute": {n: round(a, 2) for n, a in zip(names, per)}})
    family = "gptface" if isinstance(layout, Layout) else "talk2face"
    return {"task": task, "dataset": spec.dataset, "measure": spec.measure, "protocol": "linear probe on frozen "
            f"features (L-BFGS, L2 {L2:g}), fitted on a seeded subset of the train split's images",
            "features": FEATURES[family], "seed": seed, "train_images": len(train), "test_images": len(test),
            "attributes": len(names), "classes": {n: len(c) for n, c in zip(names, classes)}, "results": rows}


def markdown(result: dict, label: str) -> str:
    """The task's rows beside the paper's Table 2 (GPTFace's numbers)."""
    lines = [f"**Few-shot ({result['task']}): {result['measure']}; {result['protocol']}**", "",
             "| train fraction | train images | " + label + " | GPTFace (paper) |", "|---|---|---|---|"]
    for r in result["results"]:
        paper = "–" if r["paper_gptface"] is None else f"{r['paper_gptface']:.2f}"
        lines.append(f"| {100 * r['fraction']:g}% | {r['train_images']} | {r['accuracy']:.2f} | {paper} |")
    lines += ["", f"Features: {result['features']}. {result['train_images']} train and {result['test_images']} test "
              f"images, seed {result['seed']}; each subset's keys are hashed in eval.json (`subset_sha256`)."]
    return "\n".join(lines)
