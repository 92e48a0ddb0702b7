"""What `generate` and `evaluate` load before they ask a model anything: the device, the model (a
training run of either family, one of its step folders, or the authors' released `talk2face.bin`)
with the sequence layout it was trained for (code grid and sequence length, from its checkpoint),
the VQGAN whose codes it reads, and input images encoded by that VQGAN; and which prompts each
family answers (`PROMPTS`), run over their inputs (`run_prompt`).

Every problem here is an `InferenceError` whose message names the input: the commands print it as
one line, never as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from facecorpus.codes import FFHQ_F16

from . import checkpoint
from . import generate as gen
from . import gptface_generate as gg
from .gptface_batch import Layout
from .released import load_released
from .sequences import SequenceBuilder

# The prompts of each family, under one set of names (`generate --prompt`).
PROMPTS = {"talk2face": gen.PROMPT_NAMES, "gptface": ("inpaint", "to-image", "tags")}
ALL_PROMPTS = tuple(dict.fromkeys(p for names in PROMPTS.values() for p in names))


class InferenceError(ValueError):
    """A device, checkpoint, VQGAN or input image that generation cannot use; the message says which."""


def resolve_device(name: str) -> str:
    """`auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`, checked against this machine."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InferenceError(f"--device {name[:50]!r}: not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InferenceError(f"--device {name}: this machine has no usable CUDA device (torch {torch.__version__} "
                                 "sees none); use --device cpu, or auto to take CUDA only when present")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InferenceError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                 f"numbered from 0")
    elif device.type != "cpu":
        raise InferenceError(f"--device {name}: only cpu and cuda devices are supported")
    return str(device)


@dataclass
class Loaded:
    """A model ready to sample from, and what it was trained on."""
    model: torch.nn.Module            # a Talk2Face or a GPTFace (`family`)
    builder: SequenceBuilder | Layout   # its training sequences' layout: code grid and length (`.grid`)
    source: Path                      # the step folder or the released file loaded
    vqgan: dict = field(default_factory=dict)     # identity of the VQGAN its shards were made with ({} if unknown)
    skipped: list[str] = field(default_factory=list)   # damaged newer step folders passed over
    family: str = "talk2face"

    @property
    def title(self) -> str:
        return {"talk2face": "Talk2Face", "gptface": "GPTFace"}[self.family]


def open_model(path: str | Path, device: str = "cpu") -> Loaded:
    """What `generate`/`evaluate` accept as CKPT: a training run (its newest intact step folder), a
    step folder (refused when damaged), or a released file (Talk2Face's FFHQ f16 codes, 334 ids)."""
    path = Path(path)
    try:
        if path.is_file():
            return Loaded(load_released(path, device=device), SequenceBuilder(grid=FFHQ_F16), path)
        skipped: list[str] = []
        ckpt = checkpoint.resolve(path, skipped)
        model, cfg = checkpoint.load_step(ckpt, device)
        vqgan = checkpoint.shards_identity(ckpt).get("vqgan") or {}
        if cfg.family == "gptface":
            return Loaded(model, Layout(cfg.grid, cfg.model.max_text), ckpt, vqgan, skipped, "gptface")
        return Loaded(model, SequenceBuilder(cfg.data.seq_len, cfg.grid), ckpt, vqgan, skipped)
    except (checkpoint.CheckpointError, ValueError) as err:
        raise InferenceError(str(err)) from None


def pick_vqgan(loaded: Loaded, vqgan: str | None, vqgan_ckpt: Path | None, device: str):
    """The VQGAN the user names, else the bundled one the run's shards were made with; refused when
    its codes are not the ones the model was trained on (another checkpoint or another code grid)."""
    from facecorpus.vqgan import PRESETS, VQGANError, load_vqgan

    recorded = loaded.vqgan
    if vqgan is None:
        name = recorded.get("name")
        if name not in PRESETS or PRESETS[name][1] is None:
            raise InferenceError(f"{loaded.source}: no bundled VQGAN recorded (found {name!r}); pass --vqgan ffhq-f16 "
                                 "--vqgan-ckpt PATH (the taming FFHQ checkpoint the shards were made with)")
        vqgan = name
    try:
        model = load_vqgan(vqgan, vqgan_ckpt, device)
    except VQGANError as err:
        raise InferenceError(str(err)) from None
    want = recorded.get("checkpoint_sha256")
    if want and want != model.identity["checkpoint_sha256"]:
        raise InferenceError(f"{loaded.source} was trained on codes of VQGAN checkpoint {want[:12]}..., but the VQGAN "
                             f"given has {model.identity['checkpoint_sha256'][:12]}...: its codes mean nothing to this model")
    if model.code_grid != loaded.builder.grid:
        raise InferenceError(f"{loaded.source} was trained on a {loaded.builder.grid.as_dict()} code grid, but the VQGAN "
                             f"given makes {model.code_grid.as_dict()}")
    return model


def encode_images(paths: list[Path], vqgan, sizes: list | None = None) -> torch.Tensor:
    """Input images through the tokenization preprocessing (facecorpus.preprocess) -> [N, grid.count]
    codes. An image that cannot be read, or that load_image refuses (a decompression bomb, pixels with
    no faithful 8-bit picture: ImageDecodeError, a ValueError), is refused naming the file. `sizes`,
    when given, gets each image's (width, height) as a viewer sees it (EXIF orientation applied):
    the coordinates of an inpainting box."""
    from facecorpus.preprocess import load_image, preprocess

    images = []
    for p in paths:
        try:
            image = load_image(p)
            if sizes is not None:
                sizes.append(image.size)
            images.append(preprocess(image, size=vqgan.code_grid.resolution))
        except (OSError, ValueError) as err:
            raise InferenceError(f"{p}: cannot use this input image: {str(err)[:200]}") from None
    return vqgan.encode(torch.stack(images)).reshape(len(paths), -1).cpu()


@dataclass(frozen=True)
class Request:
    """What `generate` was asked: a prompt, its inputs (each once per sample) and how to draw."""
    prompt: str
    inputs: list[str]                 # texts for to-image, else image paths
    sampling: gen.Sampling = gen.Sampling()
    key: str | None = None            # to-attributes: `fairface race:`
    candidates: str | None = None     # to-attributes: a closed label set to rank
    text: str | None = None           # inpaint: the text guiding it
    mask: tuple[int, int, int, int] | None = None   # inpaint: the pixel box x0, y0, x1, y1 to redraw
    per_iteration: int = 8            # GPTFace: positions fixed per decoding iteration
    guidance: float = 0.01            # GPTFace: the ITM-guidance step λ when a text is given
    n_tags: int = 8                   # tags: [MASK]s in the template


def check_prompt(loaded: Loaded, prompt: str) -> None:
    if prompt not in PROMPTS[loaded.family]:
        others = [f for f, names in PROMPTS.items() if prompt in names]
        raise InferenceError(f"--prompt {prompt}: {loaded.source} is a {loaded.title} model, whose prompts are "
                             f"{', '.join(PROMPTS[loaded.family])}" + (f"; {prompt} is {others[0]}'s" if others else ""))


def run_prompt(loaded: Loaded, vq, req: Request, generator, batch_size: int, out: Path, progress=None) -> list[dict]:
    """One prompt over its inputs -> one result per input: {input, output} (a PNG path under `out`
    for faces, else text), plus `note` where a text was cut to the model's text budget (on the word
    and key-value-pair boundaries training uses)."""
    check_prompt(loaded, req.prompt)
    if loaded.family == "gptface":
        return _run_gptface(loaded, vq, req, generator, batch_size, out, progress)
    model, builder, rows = loaded.model, loaded.builder, req.inputs
    if req.prompt == "to-image":
        codes = gen.generate_images(model, builder, rows, req.sampling, generator, batch_size, progress=progress)
        notes = [gen.text_prefix(builder, text)[1] for text in rows]
        return _faces(vq, codes, rows, notes, out)
    codes = encode_images([Path(r) for r in rows], vq)
    if req.prompt == "to-caption":
        outputs = gen.generate_captions(model, builder, codes, req.sampling, generator, batch_size, progress=progress)
    elif req.candidates:
        values = [c.strip() for c in req.candidates.split(",") if c.strip()]
        outputs, _ = gen.rank_values(model, builder, codes, req.key, values, batch_size, progress=progress)
    else:
        outputs = gen.generate_attribute(model, builder, codes, req.key, gen.GREEDY, generator, batch_size,
                                         progress=progress)
    return [{"input": r, "output": o} for r, o in zip(rows, outputs)]


def _faces(vq, codes: torch.Tensor, inputs: list[str], notes: list[str | None], out: Path,
           extras: list[dict] | None = None) -> list[dict]:
    """Each row's codes decoded by the VQGAN to OUT/NNNN.png -> its result (plus its `extras`)."""
    from facecorpus.preprocess import to_pil

    results = []
    for i, (inp, note) in enumerate(zip(inputs, notes)):
        path = out / f"{i:04d}.png"
        to_pil(vq.decode(codes[i:i + 1])[0]).save(path)
        extra = {**(extras[i] if extras else {}), **({"note": note} if note else {})}
        results.append({"input": inp, "output": str(path), **extra})
    return results


def _run_gptface(loaded: Loaded, vq, req: Request, generator, batch_size: int, out: Path, progress) -> list[dict]:
    model, layout, rows = loaded.model, loaded.builder, req.inputs
    d = gg.Decoding(req.per_iteration, req.sampling, req.guidance)
    if req.prompt == "to-image":
        codes, notes = gg.to_image(model, layout, rows, d, generator, batch_size, progress)
        return _faces(vq, codes, rows, notes, out)
    paths, sizes = [Path(r) for r in rows], []
    codes = encode_images(paths, vq, sizes)
    if req.prompt == "tags":
        return [{"input": r, "output": t} for r, t in
                zip(rows, gg.tags(model, layout, codes, req.n_tags, d, generator, batch_size, progress))]
    cells = torch.stack([gg.mask_cells(req.mask, size, layout.grid, f"{p}: ") for p, size in zip(paths, sizes)])
    codes, note = gg.inpaint(model, layout, codes, cells, req.text, d, generator, batch_size, progress)
    extras = [{"mask": list(req.mask), "cells": int(c.sum()), **({"text": req.text} if req.text else {})} for c in cells]
    return _faces(vq, codes, rows, [note] * len(rows), out, extras)


def check_shards(loaded: Loaded, index) -> None:
    """Codes of another VQGAN or code grid mean nothing to a model: refuse shards (a read
    `facecorpus.shards.format.ShardIndex`) made with one."""
    from facecorpus.shards.format import FormatError

    try:
        index.check_identity({"vqgan": loaded.vqgan}, str(loaded.source))
    except FormatError as err:
        raise InferenceError(str(err)) from None
    if index.grid != loaded.builder.grid:
        raise InferenceError(f"{loaded.source} was trained on a {loaded.builder.grid.as_dict()} code grid, but "
                             f"{index.root} holds codes of {index.grid.as_dict()}: re-shard with the training VQGAN")
