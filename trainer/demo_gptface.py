"""Demo stage `gptface`: the second model family on the same shards. gptface-tiny trains for a few
CPU steps on OUT/shards into OUT/run-gptface, then inpaints one face of the shards: the centre of
the face is masked and redrawn, guided by the face's own caption, into OUT/samples."""

from __future__ import annotations

from pathlib import Path

import torch

from facecorpus.preprocess import to_pil
from facecorpus.shards import format as fmt

from . import gptface_generate as gg
from .config import RunConfig, apply_overrides
from .inference import encode_images, open_model, pick_vqgan
from .train import train

# A few steps of batch 8: seconds on a laptop CPU; the recipe is gptface-base's, shortened.
DEMO_OVERRIDES = ["--train.batch_size=8", "--data.micro_batch=8", "--data.num_workers=0", "--train.max_steps=4",
                  "--train.warmup_steps=2", "--train.log_interval=1", "--train.ckpt_interval=4",
                  "--train.precision=fp32", "--train.eval_batches=1"]
BOX = (64, 64, 192, 192)   # the middle half of the 256x256 face: 8 x 8 of its 16 x 16 codes


def first_caption(shards: Path) -> fmt.Sample:
    """The first caption sample of the train split (a fixed choice: the shards are seeded)."""
    index = fmt.read_index(shards)
    return fmt.read_shard(index, index.select("train", "caption")[0])[0]


def run(out: Path, console, seed: int = 0) -> dict:
    shards, run_dir, samples = Path(out) / "shards", Path(out) / "run-gptface", Path(out) / "samples"
    cfg = apply_overrides(RunConfig.from_preset("gptface-tiny"), [*DEMO_OVERRIDES, f"--train.seed={seed}"])
    cfg.data.shards = str(shards)
    console.print(f"training gptface-tiny on {shards} for {cfg.train.max_steps} steps")
    result = train(cfg, run_dir, console)
    loaded = open_model(run_dir)
    vqgan = pick_vqgan(loaded, None, None, "cpu")   # the bundled VQGAN the demo's shards were made with
    samples.mkdir(parents=True, exist_ok=True)
    sample = first_caption(shards)
    original = samples / "inpaint-0-original.png"
    to_pil(vqgan.decode(torch.from_numpy(sample.codes.astype("int64")).reshape(1, -1))[0]).save(original)
    # Through the generate command's path: the PNG is read back and encoded like any input face.
    codes = encode_images([original], vqgan)
    cells = gg.mask_cells(BOX, (256, 256), loaded.builder.grid)
    redrawn, _ = gg.inpaint(loaded.model, loaded.builder, codes, cells, sample.text, gg.Decoding(),
                            torch.Generator().manual_seed(seed))
    face = samples / "inpaint-0.png"
    to_pil(vqgan.decode(redrawn)[0]).save(face)
    kept = bool(torch.equal(redrawn[:, ~cells], codes[:, ~cells]))
    console.print(f"inpaint: {original.name}, box {BOX} ({int(cells.sum())} codes), guided by "
                  f"{sample.text[:60]!r} -> {face}")
    return {"steps": result["steps"], "inpainted": str(face), "codes redrawn": int(cells.sum()),
            "outside the box unchanged": kept}
