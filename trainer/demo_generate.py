"""Demo stage `samples`: faces the demo model draws from attribute prompts, and the captions it
writes for held-out faces, into OUT/samples.

  faces.png    one row per prompt of `PROMPTS`: first the face drawer's own picture of those labels
               (through the VQGAN: the best the model can reach), then `FACES_PER_PROMPT` faces the
               model drew from the prompt's key-value text, the protocol it was trained on
  prompts.md   each row's prompt text
  captions.md  the model's greedy caption of every held-out face of the caption sets beside the
               true captions: the ones scored in OUT/eval/results.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from facecorpus import textproto
from facecorpus.atomic import atomic_write
from facecorpus.converters.samples.faces import BALD, Look, face
from facecorpus.preprocess import preprocess, to_pil

from . import generate as gen
from .demo_eval import DRAWN
from .inference import open_model, pick_vqgan

HAIRS = {"black hair": "black", "blond hair": "blond", "brown hair": "brown", "gray hair": "gray", "bald": BALD}
# (row title, gender, hair, what else is on): every drawn attribute is stated, true or false.
LOOKS = (("blond hair, smiling", "female", "blond hair", ("smiling",)),
         ("black hair, eyeglasses", "male", "black hair", ("eyeglasses",)),
         ("gray hair, beard, hat", "male", "gray hair", ("beard", "wearing hat")),
         ("brown hair, smiling, eyeglasses", "female", "brown hair", ("smiling", "eyeglasses")),
         ("bald, mustache, beard", "male", "bald", ("mustache", "beard")),
         ("black hair, hat, smiling", "female", "black hair", ("wearing hat", "smiling")))
FACES_PER_PROMPT = 4
TILE, LABEL_WIDTH = 128, 210     # pixels: a tile's side, the title column
SAMPLING = gen.Sampling(top_k=70)   # the release's default


def prompt_labels(gender: str, hair: str, on: tuple[str, ...]) -> dict:
    """CelebA labels stating every DRAWN attribute: `hair` the one hair colour, `on` the others shown."""
    labels = {"gender": gender}
    for name in DRAWN:
        if name in HAIRS:
            labels[name] = name == hair
        elif name == "no beard":
            labels[name] = "beard" not in on
        elif name != "gender":
            labels[name] = name in on
    return labels


def prompts() -> list[tuple[str, str]]:
    """(row title, prompt text in the key-value protocol: `celeba gender: female; black hair: false; ...`)."""
    return [(title, textproto.to_text("celeba", prompt_labels(g, h, on))) for title, g, h, on in LOOKS]


def drawn_look(gender: str, hair: str, on: tuple[str, ...]) -> Look:
    """What the demo's CelebA tree draws for these labels (converters/samples/celeba.py `look`)."""
    return Look(hair=HAIRS[hair], long_hair=gender == "female" and hair != "bald",
                mouth="smile" if "smiling" in on else "flat", eyeglasses="eyeglasses" in on,
                beard="beard" in on, mustache="mustache" in on, hat="wearing hat" in on)


def grid(rows: list[list[Image.Image]], titles: list[str]) -> Image.Image:
    """Tiles of TILE pixels, one row per title, the title written in a column on the left."""
    cols = max(len(r) for r in rows)
    out = Image.new("RGB", (LABEL_WIDTH + cols * TILE, len(rows) * TILE), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for i, (row, title) in enumerate(zip(rows, titles)):
        draw.text((8, i * TILE + TILE // 2 - 6), title, fill=(0, 0, 0))
        for j, img in enumerate(row):
            out.paste(img.resize((TILE, TILE), Image.Resampling.LANCZOS), (LABEL_WIDTH + j * TILE, i * TILE))
    return out


def captions_markdown(caption: dict) -> str:
    """The scored captions (OUT/eval/results.json's `caption`) as a table: image, model's, true ones."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|") or "(empty)"

    lines = [f"# Captions of {caption['n']} held-out faces ({caption['split']} split), greedy", "",
             "| image | the model's caption | true captions |", "|---|---|---|"]
    lines += [f"| {e['image_id']} | {cell(e['generated'])} | {'<br>'.join(cell(r) for r in e['references'])} |"
              for e in caption["examples"]]
    return "\n".join(lines) + "\n"


@torch.no_grad()
def run(out: Path, console, seed: int = 0) -> dict:
    out = Path(out)
    samples = out / "samples"
    loaded = open_model(out / "run")
    model, builder = loaded.model.eval(), loaded.builder
    vqgan = pick_vqgan(loaded, None, None, "cpu")   # the bundled VQGAN the demo's shards were made with
    samples.mkdir(parents=True, exist_ok=True)
    titled = prompts()
    texts = [text for _, text in titled for _ in range(FACES_PER_PROMPT)]
    g = torch.Generator().manual_seed(seed)
    with console.status(f"drawing {len(texts)} faces from {len(titled)} attribute prompts"):
        faces = [to_pil(x) for x in vqgan.decode(gen.generate_images(model, builder, texts, SAMPLING, g, batch_size=24))]
    size = vqgan.code_grid.resolution
    drawn = torch.stack([preprocess(face(drawn_look(gd, h, on), seed, (size, size)), size=size) for _, gd, h, on in LOOKS])
    references = [to_pil(x) for x in vqgan.decode(vqgan.encode(drawn))]
    rows = [[references[i], *faces[i * FACES_PER_PROMPT:(i + 1) * FACES_PER_PROMPT]] for i in range(len(titled))]
    grid(rows, [title for title, _ in titled]).save(samples / "faces.png")
    atomic_write(samples / "prompts.md", "# faces.png: one row per prompt; first the drawer's face of the labels, "
                 "then the model's\n\n" + "".join(f"- **{t}**: `{p}`\n" for t, p in titled))
    caption = json.loads((out / "eval" / "results.json").read_text(encoding="utf-8"))["caption"]
    atomic_write(samples / "captions.md", captions_markdown(caption))
    console.print(f"faces: {samples / 'faces.png'} ({len(titled)} prompts x {FACES_PER_PROMPT}); "
                  f"captions: {samples / 'captions.md'}")
    return {"faces": str(samples / "faces.png"), "captions": str(samples / "captions.md")}
