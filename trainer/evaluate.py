"""The papers' evaluation protocols on held-out shards: Talk2Face's (section 4, Tables 2-4) here,
GPTFace's few-shot probe (its Table 2, for either family) in trainer/fewshot.py.

  age         CACD `cacd age:`, greedy answer read as an integer: mean absolute error
  expression  AffectNet `affectnet expression:`: accuracy
  race        FairFace `fairface race:`: accuracy
  celeba      every CelebA attribute (`celeba <name>:` for each of the 40 labels): mean accuracy
  caption     CelebAText-HQ: one greedy caption per image against all its reference captions:
              BLEU-4, ROUGE-L, METEOR, CIDEr (trainer/metrics.py)
  text2face   1,000 faces generated from captions (top-k sampling) against the images of the same
              split: FID and IS on the Inception network given by path

Attribute answers are greedy decodings, as in the paper; `rank=True` instead scores every value
seen in the split's labels by likelihood (closed label sets). An answer that is not a number counts
as wrong for age: it scores the worst error possible inside the range of the split's ages (and is
counted in `non_numeric`). The paper also filtered its samples with CLIP; we do not.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facecorpus import textproto
from facecorpus.shards import format as fmt
from facecorpus.shards.format import Sample

from . import generate as gen
from . import metrics
from .sequences import SequenceBuilder

# The paper's numbers (Tables 2-4): shown beside ours.
PAPER = {"fid": 104.9, "is": 2.2, "bleu4": 33.4, "rouge_l": 53.5, "meteor": 28.4, "cider": 40.0,
         "age_mae": 8.3, "expression_acc": 44.7, "race_acc": 66.2, "celeba_acc": 90.3}


@dataclass(frozen=True)
class AttributeTask:
    dataset: str
    attribute: str | None     # None: every label of the record (CelebA's 40)
    metric: str               # "mae" or "accuracy"


ATTRIBUTE_TASKS = {
    "age": AttributeTask("cacd", "age", "mae"),
    "expression": AttributeTask("affectnet", "expression", "accuracy"),
    "race": AttributeTask("fairface", "race", "accuracy"),
    "celeba": AttributeTask("celeba", None, "accuracy"),
}
TASKS = (*ATTRIBUTE_TASKS, "caption", "text2face")   # Talk2Face's paper: they ask its prompts


class EvaluationError(ValueError):
    """Shards that cannot be evaluated (missing split, dataset or member); the message names the file."""


# ---------------------------------------------------------------- reading shards

def read_samples(shards: Path, split: str, kind: str, dataset: str | None) -> list[Sample]:
    """Every sample of one dataset (None: of every dataset) in the shards of (split, kind), sorted by
    key (a fixed order); each shard checked against index.json and decoded by the shard format."""
    index = fmt.read_index(shards)
    index.check_vocab()
    chosen = index.select(split, kind)
    out = [smp for e in chosen for smp in fmt.read_shard(index, e) if dataset is None or smp.dataset == dataset]
    if not out:
        raise EvaluationError(f"{shards}: no {f'{dataset} ' if dataset else ''}{kind} samples in split {split!r} "
                              f"({len(chosen)} {split}/{kind} shards)")
    return sorted(out, key=lambda s: s.key)


def codes_of(samples: list[Sample]) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.codes.astype(np.int64) for s in samples])).reshape(len(samples), -1)


def by_image(samples: list[Sample]) -> list[Sample]:
    """One sample per image (the first by key): an image is asked once per attribute."""
    seen: dict[str, Sample] = {}
    for s in samples:
        seen.setdefault(s.image_id, s)
    return list(seen.values())


# ---------------------------------------------------------------- attribute tasks

def _answers(model, builder, codes, key: str, candidates: list[str] | None, batch_size: int, progress) -> list[str]:
    if candidates:
        return gen.rank_values(model, builder, codes, key, candidates, batch_size, progress)[0]
    return gen.generate_attribute(model, builder, codes, key, gen.GREEDY, None, batch_size, progress)


def score_attribute(model, builder, samples, dataset, attribute, metric, rank, batch_size, progress) -> dict:
    """One attribute asked of every sample's image (`<dataset> <attribute>:`), scored against its label."""
    truth = [s.labels[attribute] for s in samples]
    candidates = sorted({textproto.format_value(v) for v in truth}) if rank else None
    answers = _answers(model, builder, codes_of(samples), f"{dataset} {attribute}:", candidates, batch_size, progress)
    parsed = [textproto.parse_value(a) for a in answers]
    examples = [{"image_id": s.image_id, "label": t, "answer": a} for s, t, a in list(zip(samples, truth, answers))[:5]]
    if metric == "accuracy":
        correct = sum(type(p) is type(t) and p == t for p, t in zip(parsed, truth))  # "1" is not true
        return {"accuracy": 100 * correct / len(truth), "n": len(truth), "examples": examples}
    lo, hi = min(truth), max(truth)
    errors, non_numeric = [], 0
    for p, t in zip(parsed, truth):
        if isinstance(p, int) and not isinstance(p, bool):
            errors.append(abs(p - t))
        else:
            non_numeric += 1
            errors.append(max(t - lo, hi - t))  # wrong: the worst answer inside the label range
    return {"mae": float(np.mean(errors)), "n": len(truth), "non_numeric": non_numeric, "examples": examples}


def evaluate_attributes(model, builder: SequenceBuilder, shards: Path, task: str, split: str = "test",
                        limit: int | None = None, rank: bool = False, batch_size: int = 16, progress=None) -> dict:
    spec = ATTRIBUTE_TASKS[task]
    samples = by_image(read_samples(shards, split, "attributes", spec.dataset))[:limit]
    if spec.attribute is not None:
        samples = [s for s in samples if spec.attribute in s.labels]
        if not samples:
            raise EvaluationError(f"{shards}: no {spec.dataset} {split} record has the label {spec.attribute!r}")
        return {"task": task, "dataset": spec.dataset, "split": split, "decoding": "rank" if rank else "greedy",
                **score_attribute(model, builder, samples, spec.dataset, spec.attribute, spec.metric, rank, batch_size,
                             progress)}
    names = sorted({n for s in samples for n in s.labels})
    per = {}
    for name in names:
        having = [s for s in samples if name in s.labels]
        per[name] = score_attribute(model, builder, having, spec.dataset, name, "accuracy", rank, batch_size, progress)
    return {"task": task, "dataset": spec.dataset, "split": split, "decoding": "rank" if rank else "greedy",
            "accuracy": float(np.mean([r["accuracy"] for r in per.values()])), "n": len(samples),
            "attributes": len(per), "per_attribute": {k: round(v["accuracy"], 2) for k, v in per.items()}}


def attribute_work(shards: Path, task: str, split: str, limit: int | None) -> int:
    """Sequences an attribute task decodes (for the progress bar)."""
    spec = ATTRIBUTE_TASKS[task]
    samples = by_image(read_samples(shards, split, "attributes", spec.dataset))[:limit]
    if spec.attribute is not None:
        return sum(spec.attribute in s.labels for s in samples)
    return sum(len(s.labels) for s in samples)


# ---------------------------------------------------------------- captioning

def caption_inputs(shards: Path, split: str, dataset: str | None, limit: int | None) -> tuple[list[Sample], dict]:
    samples = read_samples(shards, split, "caption", dataset)
    refs: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        refs[s.image_id].append(s.text)
    return by_image(samples)[:limit], refs


def evaluate_captions(model, builder: SequenceBuilder, shards: Path, split: str = "test", dataset: str | None = "celebatexthq",
                      limit: int | None = None, meteor: bool = True, batch_size: int = 16, progress=None,
                      n_examples: int = 5) -> dict:
    """Greedy captions of the split's images of `dataset` (None: of every caption dataset) against
    all their references; `n_examples` of them (generated beside references) in the result."""
    images, refs = caption_inputs(shards, split, dataset, limit)
    hyps = gen.generate_captions(model, builder, codes_of(images), gen.GREEDY, None, batch_size, progress)
    hyp_by_id = {s.image_id: h for s, h in zip(images, hyps)}
    scores = metrics.caption_scores({k: refs[k] for k in hyp_by_id}, hyp_by_id, meteor=meteor)
    examples = [{"image_id": s.image_id, "generated": h, "reference": refs[s.image_id][0],
                 "references": refs[s.image_id]} for s, h in zip(images[:n_examples], hyps)]
    return {"task": "caption", "dataset": dataset or "all", "split": split, "decoding": "greedy", "n": len(images),
            "references_per_image": round(sum(len(refs[s.image_id]) for s in images) / len(images), 2),
            **scores, "examples": examples}


# ---------------------------------------------------------------- text -> face

def _uint8(images01: torch.Tensor) -> torch.Tensor:
    return (images01.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def real_image_batches(real_images: Path | None, samples: list[Sample], vqgan, batch_size: int) -> tuple[list, str]:
    """The reference images: files under `real_images` (through facecorpus.preprocess), else the
    split's images decoded from their codes (VQGAN reconstructions: what the model can reach)."""
    if real_images is not None:
        from facecorpus.preprocess import load_image, preprocess_uint8

        files = sorted(p for p in Path(real_images).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if len(files) < 2:
            raise EvaluationError(f"{real_images}: needs at least 2 .png/.jpg images, found {len(files)}")
        size = vqgan.code_grid.resolution
        arrays = [torch.from_numpy(preprocess_uint8(load_image(f), size=size)).movedim(-1, 0) for f in files]
        return [torch.stack(arrays[i:i + batch_size]) for i in range(0, len(arrays), batch_size)], f"{len(files)} files in {real_images}"
    uniq = by_image(samples)
    codes = codes_of(uniq)
    batches = [_uint8(vqgan.decode(codes[i:i + batch_size])) for i in range(0, len(codes), batch_size)]
    return batches, f"{len(uniq)} split images decoded from their VQGAN codes"


def evaluate_text2face(model, builder: SequenceBuilder, shards: Path, vqgan, inception: Path, split: str = "val",
                       dataset: str = "mmcelebahq", n_faces: int = 1000, real_images: Path | None = None,
                       sampling: gen.Sampling | None = None, seed: int = 0, batch_size: int = 16, progress=None) -> dict:
    net = metrics.load_inception(inception)  # fail before generating for minutes
    samples = read_samples(shards, split, "caption", dataset)
    # One caption per image first (more faces than images: their other captions next).
    first = by_image(samples)
    taken = {s.key for s in first}
    rest = [s for s in samples if s.key not in taken]
    texts = [s.text for s in first + rest][:n_faces]
    sampling = sampling or gen.Sampling()
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    codes = gen.generate_images(model, builder, texts, sampling, g, batch_size, progress=progress)
    fake = [_uint8(vqgan.decode(codes[i:i + batch_size])) for i in range(0, len(codes), batch_size)]
    real, real_note = real_image_batches(real_images, samples, vqgan, batch_size)
    torch.manual_seed(seed)  # IS shuffles its splits with the global generator
    scores = metrics.fid_is(net, real, fake)
    return {"task": "text2face", "dataset": dataset, "split": split, "n": len(texts), "real": real_note,
            "sampling": vars(sampling), **scores}


# ---------------------------------------------------------------- one task, as the command runs it

@dataclass(frozen=True)
class Settings:
    """What `facecorpus evaluate` runs its tasks with (its options)."""
    shards: Path
    split: str = "test"                 # held-out split of the analysis and caption tasks
    limit: int | None = None            # at most this many images per task
    rank: bool = False                  # closed label sets ranked by likelihood instead of greedy answers
    caption_dataset: str = "celebatexthq"
    meteor: bool = True
    t2f_dataset: str = "mmcelebahq"
    t2f_split: str = "val"
    n_faces: int = 1000
    inception: Path | None = None
    real_images: Path | None = None
    sampling: gen.Sampling = gen.Sampling()   # text2face sampling
    seed: int = 0
    batch_size: int = 16
    fractions: tuple[float, ...] | None = None   # few-shot train fractions (default: the paper's per task)


def run_task(task: str, model, builder, s: Settings, bar, vqgan=None) -> dict:
    """One task with the command's settings. `bar(task, total)` returns the progress callback
    (total None when unknown); `vqgan` decodes faces for text2face. `builder`: the model's layout
    (Talk2Face's SequenceBuilder, or GPTFace's Layout for the few-shot tasks)."""
    from .fewshot import FEWSHOT_TASKS, evaluate_fewshot

    if task in FEWSHOT_TASKS:
        return evaluate_fewshot(model, builder, s.shards, task, s.fractions, s.seed, s.batch_size, s.limit, bar)
    if task in ATTRIBUTE_TASKS:
        advance = bar(task, attribute_work(s.shards, task, s.split, s.limit))
        return evaluate_attributes(model, builder, s.shards, task, s.split, s.limit, s.rank, s.batch_size, advance)
    if task == "caption":
        return evaluate_captions(model, builder, s.shards, s.split, s.caption_dataset, s.limit, s.meteor,
                                 s.batch_size, bar(task, None))
    if task != "text2face" or vqgan is None or s.inception is None:
        raise EvaluationError(f"task {task!r} needs a VQGAN and an Inception network" if task == "text2face"
                              else f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return evaluate_text2face(model, builder, s.shards, vqgan, s.inception, s.t2f_split, s.t2f_dataset, s.n_faces,
                              s.real_images, s.sampling, s.seed, s.batch_size, bar(task, s.n_faces))


# ---------------------------------------------------------------- report

def _fmt(v, digits=1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def markdown(results: dict, label: str) -> str:
    """Tables laid out like the papers': Talk2Face's Tables 2-4 (its numbers in the first row) for
    the Talk2Face tasks that ran, and GPTFace's few-shot Table 2 for the few-shot ones."""
    from .fewshot import FEWSHOT_TASKS
    from .fewshot import markdown as fewshot_markdown

    r = {k: v for k, v in results.items() if isinstance(v, dict)}
    parts = [fewshot_markdown(v, label) for k, v in r.items() if k in FEWSHOT_TASKS]
    talk2face = {k: v for k, v in r.items() if k in TASKS}
    if talk2face:
        parts.insert(0, _talk2face_tables(talk2face, label))
    return "\n\n".join(parts) + "\n"


def _talk2face_tables(r: dict, label: str) -> str:
    t2f, cap = r.get("text2face", {}), r.get("caption", {})
    ours = {"fid": t2f.get("fid"), "is": t2f.get("is"), "bleu4": cap.get("bleu4"), "rouge_l": cap.get("rouge_l"),
            "meteor": cap.get("meteor"), "cider": cap.get("cider"), "age_mae": r.get("age", {}).get("mae"),
            "expression_acc": r.get("expression", {}).get("accuracy"), "race_acc": r.get("race", {}).get("accuracy"),
            "celeba_acc": r.get("celeba", {}).get("accuracy")}
    rows = [("Talk2Face (paper)", PAPER), (label, ours)]

    def table(title, head, keys, digits=1):
        lines = [f"**{title}**", "", "| Method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(_fmt(vals[k], digits) for k in keys) + " |" for name, vals in rows]
        return "\n".join(lines)

    parts = [
        table("Table 2: text-guided face synthesis", ["FID ↓", "IS ↑"], ["fid", "is"]),
        table(f"Table 3: face captioning ({cap.get('dataset', 'celebatexthq')} {cap.get('split', 'test')}; paper: "
              "CelebAText-HQ test)", ["B-4", "R-L", "METEOR", "CIDEr"],
              ["bleu4", "rouge_l", "meteor", "cider"]),
        table("Table 4: facial analysis", ["AE MAE ↓", "ER Acc. ↑", "RC Acc. ↑", "MAC Acc. ↑"],
              ["age_mae", "expression_acc", "race_acc", "celeba_acc"]),
    ]
    notes = [f"- {k}: n={v.get('n')}, split {v.get('split')}, {v.get('dataset')}" for k, v in r.items()]
    if cap.get("meteor_note"):
        notes.append(f"- METEOR: {cap['meteor_note']}")
    if t2f.get("real"):
        notes.append(f"- FID reference images: {t2f['real']}")
    notes.append("- The paper filtered sampled outputs with CLIP; these numbers are unfiltered.")
    return "\n\n".join(parts) + "\n\nNotes:\n" + "\n".join(notes)
