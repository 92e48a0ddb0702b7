"""Non-autoregressive, ITM-guided generation from a GPTFace model: inpainting, text -> face, tags.

Every prompt is a GPTFace sequence with `[MASK]` at the positions to fill (docs/gptface.md):

    inpaint:   [CLS] codes, [MASK] on the cells under the box [SEP] (text)     -> the masked codes
    to-image:  [CLS] [MASK] x side² [SEP] text                                 -> every code
    tags:      [CLS] codes [SEP] tags : [MASK] , [MASK] , ...                  -> one WordPiece per [MASK]

They are filled MaskGIT-style (Chang et al., 2022): each iteration predicts every position still to
fill, draws a candidate for each (generate.py's sampling: temperature, top-k, top-p or greedy, with
the modality mask, so an image position only ever gets a code and a text position a WordPiece), and
keeps the `per_iteration` (k, default 8) candidates the model is most confident of (the probability
of the drawn id). Image cells are taken only next to the known region (4-neighbours of a code that
is not masked), so a hole closes from its border inward; an image with nothing known yet (to-image)
starts anywhere. Only positions to fill are ever written: the codes outside an inpainting mask stay
exactly as they were.

With a text, each iteration is ITM-guided, the paper's gradient-based control: take the gradient of
the ITM loss toward "matched" for the current, half-filled image and the text, move the weights one
step of size λ (`guidance`) against it, predict with the moved weights, then put the weights back bit
for bit (copies of every tensor the gradient touches, taken before the first step). Rows of one batch
share a text (batches are formed per text), so the step follows their mean ITM loss; `batch_size=1`
gives each sample its own step, as in the paper.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facecorpus import vocab
from facecorpus.codes import CodeGrid

from . import generate as gen
from .gptface import GPTFace
from .gptface_batch import Layout
from .sequences import cut_prompt

MASK_CODE = -1                  # a code still to fill, in this module's [N, side²] code tensors
TAG_TEMPLATE = "tags:"          # the tags prompt: `tags: [MASK], [MASK], ...`
COMMA = vocab.encode_text(",")


@dataclass(frozen=True)
class Decoding:
    """How the positions are filled."""
    per_iteration: int = 8                     # k: positions fixed per iteration (the paper's 8)
    sampling: gen.Sampling = gen.Sampling()    # candidates drawn as generate.py draws them
    guidance: float = 0.01                     # λ: ITM-guidance step on the weights when a text is given (0 = off)

    def __post_init__(self):
        if self.per_iteration < 1:
            raise gen.GenerationError(f"per_iteration must be >= 1 (got {self.per_iteration})")
        if not self.guidance >= 0:
            raise gen.GenerationError(f"the guidance step must be >= 0 (got {self.guidance})")


# ---------------------------------------------------------------- ITM guidance

class Guidance:
    """One gradient step of the weights toward ITM "matched", undone after each prediction."""

    def __init__(self, model: GPTFace, step: float):
        self.model, self.step = model, step
        self.saved: list[tuple[torch.nn.Parameter, torch.Tensor]] | None = None

    def move(self, ids: torch.Tensor) -> None:
        """Step the weights along -λ ∇ BCE(ITM(ids), matched), the mean over the rows of `ids`."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        with torch.enable_grad():
            logit = self.model.itm_logit(self.model.hidden(ids)).float()
            loss = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
            grads = torch.autograd.grad(loss, params, allow_unused=True)   # .grad stays untouched
        touched = [(p, g) for p, g in zip(params, grads) if g is not None]
        with torch.no_grad():
            if self.saved is None:   # the first step: keep what every later step must return to
                self.saved = [(p, p.detach().clone()) for p, _ in touched]
            for p, g in touched:
                p.sub_(self.step * g.to(p.dtype))

    def restore(self) -> None:
        with torch.no_grad():
            for p, original in self.saved or ():
                p.copy_(original)


@contextlib.contextmanager
def guided(model: GPTFace, ids: torch.Tensor, guidance: Guidance | None):
    """The weights moved toward matched for `ids` inside the block, restored on leaving it (errors too)."""
    if guidance is None:
        yield
        return
    try:
        guidance.move(ids)
        yield
    finally:
        guidance.restore()


# ---------------------------------------------------------------- MaskGIT-style filling

def _known_neighbour(todo: torch.Tensor, side: int) -> torch.Tensor:
    """[B, side²] bool: positions with a 4-neighbour that is known (not to fill)."""
    known = ~todo.view(-1, side, side)
    near = torch.zeros_like(known)
    near[:, 1:] |= known[:, :-1]
    near[:, :-1] |= known[:, 1:]
    near[:, :, 1:] |= known[:, :, :-1]
    near[:, :, :-1] |= known[:, :, 1:]
    return near.view(todo.shape)


def _predict(model: GPTFace, ids: torch.Tensor, span: slice, cols: torch.Tensor, rows: slice) -> torch.Tensor:
    """Logits [B, len(cols), rows] at positions `span.start + cols`, over the vocabulary rows `rows` only
    (the codebook for images: the head is the model's largest product)."""
    h = model.hidden(ids)[:, span].index_select(1, cols)
    return F.linear(h, model.embed[rows], model.out_bias[rows])


@torch.no_grad()
def fill(model: GPTFace, ids: torch.Tensor, span: slice, modality: str, d: Decoding,
         generator: torch.Generator | None = None, guidance: Guidance | None = None,
         grid: CodeGrid | None = None) -> torch.Tensor:
    """`ids` [B, T] with every `[MASK]` inside `span` (one modality's positions) filled, k per
    iteration, MaskGIT-style (see the module docstring); nothing outside those positions changes.
    `grid`: for images, whose cells are taken next to the known region first."""
    ids = ids.clone()
    codebook = model.cfg.codebook_size
    rows = vocab.image_rows(codebook) if modality == "image" else slice(0, vocab.TEXT_VOCAB_SIZE)
    allowed = gen.allowed_ids(modality, codebook)[rows].to(ids.device)
    todo = ids[:, span] == vocab.MASK
    while todo.any():
        cols = todo.any(0).nonzero().squeeze(1)      # positions some row still needs
        with guided(model, ids, guidance):
            logits = _predict(model, ids, span, cols, rows)
        B, C, R = logits.shape
        x = gen.filter_logits(logits.reshape(B * C, R), allowed, d.sampling)
        choice = gen.draw(x, d.sampling, generator).view(B, C)
        confidence = x.softmax(-1).gather(1, choice.view(-1, 1)).view(B, C)
        eligible = todo.clone()
        if grid is not None:   # image cells next to known ones, where a row has any
            near = eligible & _known_neighbour(todo, grid.side)
            eligible = torch.where(near.any(1, keepdim=True), near, eligible)
        score = torch.full(todo.shape, -1.0, device=ids.device)
        score[:, cols] = confidence.float()
        score = score.masked_fill(~eligible, -1.0)
        top = score.topk(min(d.per_iteration, score.shape[1]), dim=1).indices
        take = torch.zeros_like(todo).scatter_(1, top, True) & eligible
        new = torch.zeros_like(ids[:, span])
        new[:, cols] = choice + rows.start
        ids[:, span] = torch.where(take, new, ids[:, span])
        todo &= ~take
    return ids


# ---------------------------------------------------------------- the prompts

def text_ids(layout: Layout, text: str | None) -> tuple[list[int], str | None]:
    """A prompt's text within the model's max_text ids, cut as training cuts it -> (ids, note)."""
    if text is None:
        return [], None
    if not text.strip():
        raise gen.GenerationError("the text is empty")
    try:
        return cut_prompt(text, layout.max_text)
    except ValueError as err:
        raise gen.GenerationError(str(err)) from None


def sequences(layout: Layout, codes: torch.Tensor, text: list[int]) -> torch.Tensor:
    """[N, T] ids `[CLS] codes [SEP] text` of N images' codes [N, side²] (MASK_CODE = to fill)."""
    n = len(codes)
    image = torch.where(codes == MASK_CODE, vocab.MASK, codes + vocab.IMAGE_OFFSET)
    tail = torch.tensor([vocab.SEP, *text], dtype=torch.long).expand(n, -1)
    return torch.cat([torch.full((n, 1), vocab.CLS), image, tail], 1)


def check_model(model: GPTFace, layout: Layout) -> None:
    if not isinstance(model, GPTFace):
        raise gen.GenerationError("these prompts need a GPTFace model")
    if model.cfg.grid != layout.grid:
        raise gen.GenerationError(f"the model reads codes of {model.cfg.grid.as_dict()}, not {layout.grid.as_dict()}")


def images(model: GPTFace, layout: Layout, codes: torch.Tensor, texts: list[str | None], d: Decoding,
           generator: torch.Generator | None = None, batch_size: int = 16, progress=None) -> tuple[torch.Tensor, list]:
    """Fill the codes marked MASK_CODE in `codes` [N, side²] (row i with `texts[i]`, or no text) ->
    ([N, side²] codes, one note per row where its text was cut). Rows of one text decode together;
    a text makes the decoding ITM-guided (unless d.guidance is 0)."""
    check_model(model, layout)
    device = next(model.parameters()).device
    out, notes = codes.clone(), [None] * len(codes)
    span = slice(1, 1 + layout.grid.count)
    by_text: dict[str | None, list[int]] = {}
    for i, t in enumerate(texts):
        by_text.setdefault(t, []).append(i)
    for text, rows in by_text.items():
        ids_text, note = text_ids(layout, text)
        guidance = Guidance(model, d.guidance) if text is not None and d.guidance > 0 else None
        for part in gen.batches(len(rows), batch_size):
            idx = rows[part]
            ids = sequences(layout, codes[idx], ids_text).to(device)
            done = fill(model, ids, span, "image", d, generator, guidance, layout.grid)
            out[idx] = done[:, span].cpu() - vocab.IMAGE_OFFSET
            for i in idx:
                notes[i] = note
            if progress is not None:
                progress(len(idx))
    return out, notes


def mask_cells(box: tuple[int, int, int, int], size: tuple[int, int], grid: CodeGrid, where: str = "") -> torch.Tensor:
    """[side²] bool: the grid cells an `x0,y0,x1,y1` pixel box of an image of `size` (width, height,
    as a viewer sees it: EXIF orientation applied) overlaps. The box is scaled with the image onto the
    VQGAN's square input (preprocessing resizes the whole image), and every cell the box touches is
    masked, so the hole covers the box."""
    x0, y0, x1, y1 = box
    w, h = size
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise gen.GenerationError(f"{where}mask {x0},{y0},{x1},{y1} is not inside the {w}x{h} image "
                                  f"(need 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h})")
    s = grid.side
    c0, c1 = (x0 * s) // w, -(-(x1 * s) // w)      # first cell touched, one past the last
    r0, r1 = (y0 * s) // h, -(-(y1 * s) // h)
    cells = torch.zeros(s, s, dtype=torch.bool)
    cells[r0:r1, c0:c1] = True
    return cells.view(-1)


def inpaint(model: GPTFace, layout: Layout, codes: torch.Tensor, cells: torch.Tensor, text: str | None,
            d: Decoding, generator=None, batch_size: int = 16, progress=None) -> tuple[torch.Tensor, str | None]:
    """Codes [N, side²] with the cells [N or 1, side²] redrawn (guided by `text` when given) -> (codes, note)."""
    holes = torch.where(cells.expand_as(codes), MASK_CODE, codes)
    out, notes = images(model, layout, holes, [text] * len(codes), d, generator, batch_size, progress)
    return out, notes[0] if notes else None


def to_image(model: GPTFace, layout: Layout, texts: list[str], d: Decoding, generator=None, batch_size: int = 16,
             progress=None) -> tuple[torch.Tensor, list]:
    """Texts -> [N, side²] codes, every code drawn (guided by its text) -> (codes, notes)."""
    if any(t is None or not t.strip() for t in texts):
        raise gen.GenerationError("to-image needs a text for every face")
    blank = torch.full((len(texts), layout.grid.count), MASK_CODE, dtype=torch.long)
    return images(model, layout, blank, texts, d, generator, batch_size, progress)


@torch.no_grad()
def tags(model: GPTFace, layout: Layout, codes: torch.Tensor, n_tags: int, d: Decoding, generator=None,
         batch_size: int = 16, progress=None) -> list[str]:
    """Images' codes [N, side²] -> N strings `tags: a, b, ...`: the template's n_tags [MASK]s filled
    from the image (text positions produce WordPiece ids only), k per iteration, unguided."""
    check_model(model, layout)
    template = vocab.encode_text(TAG_TEMPLATE) + [vocab.MASK]
    for _ in range(n_tags - 1):
        template += COMMA + [vocab.MASK]
    if n_tags < 1 or len(template) > layout.max_text:
        most = (layout.max_text - len(vocab.encode_text(TAG_TEMPLATE)) + 1) // 2
        raise gen.GenerationError(f"tags: between 1 and {most} tags fit in {layout.max_text} text ids (got {n_tags})")
    device = next(model.parameters()).device
    span = slice(layout.text_start, layout.text_start + len(template))
    out: list[str] = []
    for part in gen.batches(len(codes), batch_size):
        ids = sequences(layout, codes[part], template).to(device)
        done = fill(model, ids, span, "text", d, generator)[:, span].tolist()
        out += [TAG_TEMPLATE + " " + ", ".join(vocab.decode_text([t]) for t, m in zip(row, template) if m == vocab.MASK)
                for row in done]
        if progress is not None:
            progress(len(done))
    return out
