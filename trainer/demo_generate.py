"""Demo stage `samples`: the demo model draws a face from a text and captions it, into OUT/samples.

The face is saved as a PNG, read back and captioned through the same preprocessing and VQGAN
encoding that tokenization uses, so the stage exercises both directions of the model end to end.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facecorpus.preprocess import load_image, preprocess, to_pil

from . import generate as gen
from .inference import open_model, pick_vqgan

PROMPT = "this smiling young woman has blond hair and arched eyebrows."


def run(out: Path, console, seed: int = 0) -> dict:
    run_dir, samples = Path(out) / "run", Path(out) / "samples"
    loaded = open_model(run_dir)
    model, builder = loaded.model, loaded.builder
    vqgan = pick_vqgan(loaded, None, None, "cpu")   # the bundled VQGAN the demo's shards were made with
    samples.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    codes = gen.generate_images(model, builder, [PROMPT], gen.Sampling(top_k=70), g)
    face = samples / "face-0.png"
    to_pil(vqgan.decode(codes)[0]).save(face)
    again = vqgan.encode(preprocess(load_image(face), size=vqgan.code_grid.resolution)[None]).reshape(1, -1)
    caption = gen.generate_captions(model, builder, again, gen.Sampling(top_k=70), g)[0]
    (samples / "caption-0.txt").write_text(caption + "\n", encoding="utf-8")
    console.print(f"to image: {PROMPT!r} -> {face}")
    console.print(f"to caption: {face.name} -> {caption!r}")
    return {"face": str(face), "caption": caption[:60] + ("..." if len(caption) > 60 else "")}
