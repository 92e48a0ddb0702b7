"""Sampling from a Talk2Face model: the three prompts, a key/value cache and modality masks.

The original release's script re-ran the whole sequence for every new token and could sample a text
id at an image position, which then broke the VQGAN decoder. Here every step runs on the cache (one
new token through the network; a static-shape step, replayed as a CUDA graph on GPUs: `DecodeStep`),
and a mask restricts what each position may produce: image positions only the codebook's image ids,
text positions only real WordPiece ids and `[SEP]` (never `[PAD]`, `[CLS]`, `[MASK]`, `[UNK]` or the
`[unused*]` slots). The mask is applied before temperature/top-k/top-p, so a filter can never leave a
row with nothing to pick.

Inputs are built by the training sequence code (`trainer.sequences.SequenceBuilder`, docs/design.md,
"Sequences") for the model's code grid and sequence length, so a long to-image text is cut on the
same word and key-value-pair boundaries as in training, and the cut is reported:
  to image:      [CLS] to image [SEP] <text> [SEP]                    | the image's codes
  to caption:    [CLS] to capt ##ion [SEP] <image codes> [SEP]        | text ... [SEP]
  to attributes: [CLS] to attributes [SEP] <image codes> [SEP]        | <key:> value ...
The part before `|` has segment 1, the rest segment 2.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch

from facecorpus import vocab

from .sequences import PROMPTS, SequenceBuilder

PROMPT_NAMES = tuple(f"to-{produce}" for produce in PROMPTS)   # the command line's names: to-image, ...
MAX_VALUE = 16       # new text ids for one attribute value
SEMICOLON = 1025     # WordPiece id of ";": ends one key-value pair inside an attributes target


class GenerationError(ValueError):
    """Bad generation input (prompt, text, codes, sampling settings); the message says which."""


@dataclass(frozen=True)
class Sampling:
    """Temperature, then top-k, then top-p (nucleus); `greedy` takes the arg-max instead."""
    temperature: float = 1.0
    top_k: int = 70          # the original release's default; 0 = off
    top_p: float = 1.0       # 1.0 = off
    greedy: bool = False

    def __post_init__(self):
        if not self.greedy and not self.temperature > 0:
            raise GenerationError(f"temperature must be > 0 (got {self.temperature}); use greedy for 0")
        if self.top_k < 0:
            raise GenerationError(f"top_k must be >= 0 (got {self.top_k})")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1] (got {self.top_p})")


GREEDY = Sampling(greedy=True)


# ---------------------------------------------------------------- modality masks

@functools.lru_cache(maxsize=8)
def allowed_ids(modality: str, codebook_size: int, sep: bool = False) -> torch.Tensor:
    """Bool [vocab_size(codebook_size)]: the ids a position of this modality may produce. Image: the
    codebook's ids; text: real WordPiece ids (never [PAD], [CLS], [SEP], [MASK], [UNK] or the
    [unused*] slots), plus [SEP] with `sep` (Talk2Face's targets end with it; GPTFace's texts have
    none). Both model families' modality masks are this one table (cached: do not write into it)."""
    allowed = torch.zeros(vocab.vocab_size(codebook_size), dtype=torch.bool)
    if modality == "image":
        allowed[vocab.image_rows(codebook_size)] = True
    elif modality == "text":
        allowed[vocab.FIRST_WORDPIECE:vocab.TEXT_VOCAB_SIZE] = True
        allowed[vocab.SEP] = sep
    else:
        raise GenerationError(f"modality must be 'image' or 'text', got {modality!r}")
    return allowed


def codebook_of(model) -> int:
    """The codebook size a model's vocabulary was sized for (its ids after the WordPiece ones)."""
    return model.cfg.vocab_size - vocab.TEXT_VOCAB_SIZE


def filter_logits(logits: torch.Tensor, allowed: torch.Tensor, s: Sampling) -> torch.Tensor:
    """[B,V] logits -> fp32 logits with -inf wherever a token may not be drawn."""
    x = logits.float().masked_fill(~allowed.to(logits.device), -math.inf)
    if s.greedy:
        return x
    x = x / s.temperature
    # k above the allowed count is harmless: the k-th value is then -inf and filters nothing
    # (and counting the allowed ids would cost a device sync every step).
    k = min(s.top_k, x.shape[-1])
    if k:
        kth = torch.topk(x, k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, -math.inf)
    if s.top_p < 1:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        cum = sorted_x.softmax(-1).cumsum(-1)
        # Drop a token when the ones before it already reach top_p; the first always stays.
        drop = (cum - sorted_x.softmax(-1)) >= s.top_p
        x = x.scatter(-1, order, sorted_x.masked_fill(drop, -math.inf))
    return x


def pick(logits: torch.Tensor, allowed: torch.Tensor, s: Sampling, generator: torch.Generator | None,
         race: torch.Tensor | None = None) -> torch.Tensor:
    """[B,V] logits -> [B] ids, never outside `allowed`. `race`: the Exp(1) noise ([B,V] fp32), drawn by
    the caller (a CUDA graph cannot draw from a user generator); default: drawn here from `generator`."""
    return draw(filter_logits(logits, allowed, s), s, generator, race)


def draw(x: torch.Tensor, s: Sampling, generator: torch.Generator | None, race: torch.Tensor | None = None) -> torch.Tensor:
    """[B,V] logits already through `filter_logits` -> [B] ids (the arg-max when greedy)."""
    if s.greedy:
        return x.argmax(-1)
    # Exponential race, the same distribution as torch.multinomial(probs, 1) (argmax of p_i / E_i with
    # E_i ~ Exp(1)), but one vectorized pass: multinomial is the slowest op of a CPU decoding step.
    probs = x.softmax(-1)
    if race is None:
        race = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / race.clamp_min(torch.finfo(probs.dtype).tiny)).argmax(-1)


# ---------------------------------------------------------------- sequences

def check_fit(model, builder: SequenceBuilder) -> None:
    """A model generates for one code grid: its vocabulary must hold that grid's codebook."""
    want = vocab.vocab_size(builder.grid.codebook_size)
    if model.cfg.vocab_size != want:
        raise GenerationError(f"the model has {model.cfg.vocab_size} ids, but codes of a {builder.grid.codebook_size}-code "
                              f"book need {want}: this model was not trained on this VQGAN's codes")
    if builder.seq_len > model.cfg.n_positions:
        raise GenerationError(f"sequences of {builder.seq_len} ids exceed the model's {model.cfg.n_positions} positions")


def text_prefix(builder: SequenceBuilder, text: str) -> tuple[list[int], str | None]:
    """The to-image prefix `[CLS] to image [SEP] <text> [SEP]`, the text cut as training cuts it ->
    (ids, a note saying what was cut, or None)."""
    if not text or not text.strip():
        raise GenerationError("to-image needs a text (caption and/or attributes)")
    try:
        ids, note = builder.prompt_text(text)
    except ValueError as err:
        raise GenerationError(str(err)) from None
    return builder.prefix("image", text_ids=ids), note


def image_prefix(builder: SequenceBuilder, prompt: str, codes) -> list[int]:
    """The segment-1 prefix of to-caption / to-attributes: `[CLS] prompt [SEP] <image ids> [SEP]`."""
    if prompt not in PROMPT_NAMES or prompt == "to-image":
        raise GenerationError(f"an image prompt is one of {', '.join(PROMPT_NAMES[1:])}, got {prompt!r}")
    try:
        image = builder.image_ids(torch.as_tensor(codes).reshape(-1).numpy())
    except ValueError as err:
        raise GenerationError(f"{prompt}: {err}") from None
    return builder.prefix(prompt[3:], image=image)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _last_logits(model, ids, seg, cache, rows: slice):
    """Logits of the next token over the vocabulary rows `rows` only: the head runs at the last
    position (not over the whole prefix) and, for images, on the 1,024 image rows (not 31,546)."""
    h = model.hidden(ids, seg, cache)[:, -1]
    head = model.lm_head
    bias = head.bias[rows] if head.bias is not None else None
    return torch.nn.functional.linear(h, head.weight[rows], bias)


# ---------------------------------------------------------------- the cached decode step

GRAPH_CACHE = 4      # captured CUDA graphs kept per model (each holds its own KV cache)


class DecodeStep:
    """One cached decoding step with static shapes: feed `ids` [B,1] at the device position `pos`,
    get the next ids [B] (sampled, modality-masked, head restricted to `rows`) in `out`.

    Every step runs the same kernels on the same buffers (preallocated KV cache, in-place writes at
    a device index, attention over all max_len slots, noise for sampling drawn into `race`), and no
    step reads anything back to the host. On CUDA the step is therefore captured once in a CUDA
    graph and replayed: one launch instead of ~300 kernel launches plus Python per token, which is
    what bounds decoding at batch 16. Elsewhere (CPU, training mode) the same step runs eagerly.
    Replaying gives exactly the eager step's tokens: same kernels, same buffers, same noise.
    """

    def __init__(self, model, batch: int, max_len: int, rows: slice, allowed: torch.Tensor, s: Sampling,
                 graph: bool):
        device = _device(model)
        self.model, self.rows, self.allowed, self.s = model, rows, allowed, s
        self.cache = model.new_cache(batch, max_len)
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.seg = torch.full((batch, 1), 2, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        n = rows.stop - rows.start
        self.race = None if s.greedy else torch.ones(batch, n, dtype=torch.float32, device=device)
        self.graph = None
        if graph and device.type == "cuda":    # elsewhere a kept step is simply reused eagerly
            self._capture()

    def _run(self) -> torch.Tensor:
        h = self.model.decode_step(self.ids, self.seg, self.cache, self.pos)[:, -1]
        head = self.model.lm_head
        bias = head.bias[self.rows] if head.bias is not None else None
        logits = torch.nn.functional.linear(h, head.weight[self.rows], bias)
        return pick(logits, self.allowed, self.s, None, self.race) + self.rows.start

    @torch.no_grad()    # a graph captured with autograd on would also record (and keep) the backward state
    def _capture(self) -> None:
        # Warm up on a side stream first (cuBLAS handles, allocator), as torch.cuda.graphs requires.
        # These runs write garbage at slot `pos` = 0; `start` empties the cache before any real use.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._run()      # a static output buffer, overwritten by every replay

    def start(self, ids: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """Prefill the prefix (eager: its length varies) -> logits [B, rows] of the first new id."""
        self.cache.reset()
        logits = _last_logits(self.model, ids, seg, self.cache, self.rows)
        self.pos.fill_(ids.shape[1])
        return logits

    def __call__(self, nxt: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Feed `nxt` [B] at `pos`, advance `pos` -> the next ids [B] (a buffer the next call reuses)."""
        self.ids.copy_(nxt[:, None])
        if self.race is not None:   # same draws, in the same order, as pick() makes itself
            self.race.exponential_(1.0, generator=generator)
        if self.graph is not None:
            self.graph.replay()
            out = self.out
        else:
            out = self._run()
        self.pos.add_(1)
        return out


def graph_ok(model) -> bool:
    """Whether `decode` captures its step in a CUDA graph: CUDA, eval mode (no dropout), and not
    switched off by a failed capture."""
    return _device(model).type == "cuda" and not model.training and "_graph_failed" not in model.__dict__


def release_graphs(model) -> None:
    """Free the captured steps kept on `model` (their KV caches and graph memory), e.g. before training."""
    model.__dict__.pop("_decode_graphs", None)


def _step_for(model, b: int, p: int, steps: int, rows: slice, allowed, s: Sampling, graph: bool | None,
              seq_len: int) -> DecodeStep:
    """Eager: a fresh step sized to this call. CUDA graph: one per (batch, rows, sampling, weights),
    kept on the model and reused (capture costs far more than a few decoding steps); its cache holds
    `seq_len` ids (the model's sequence length), so one captured step serves every prompt."""
    if graph is None:
        graph = graph_ok(model)
    if not graph:
        return DecodeStep(model, b, p + steps, rows, allowed, s, graph=False)
    max_len = -(-max(seq_len, p + steps) // 16) * 16   # a multiple of 16: attention kernels need no padded mask copy
    w = model.lm_head.weight
    key = (b, max_len, rows.start, rows.stop, s, w.dtype, w.device, w.data_ptr())
    steps_cache = model.__dict__.setdefault("_decode_graphs", {})
    if key not in steps_cache:
        if len(steps_cache) >= GRAPH_CACHE:
            steps_cache.clear()
        try:
            steps_cache[key] = DecodeStep(model, b, max_len, rows, allowed, s, graph=True)
        except RuntimeError as e:   # an op that cannot be captured: say so once, decode eagerly from now on
            model.__dict__["_graph_failed"] = str(e)
            warnings.warn(f"CUDA graph capture failed, decoding without it: {e}", RuntimeWarning, stacklevel=3)
            return DecodeStep(model, b, p + steps, rows, allowed, s, graph=False)
    return steps_cache[key]


@torch.no_grad()
def decode(model, ids: torch.Tensor, seg: torch.Tensor, steps: int, modality: str, s: Sampling,
           generator: torch.Generator | None = None, stop: tuple[int, ...] = (), use_cache: bool = True,
           graph: bool | None = None, seq_len: int = 0) -> torch.Tensor:
    """Continue `ids` [B,P] (segments `seg`) by `steps` tokens of one modality -> [B, <=steps] new ids.

    The new tokens get segment 2. Rows stop after any id in `stop` (later positions hold that id);
    the loop ends early once every row has stopped. `use_cache=False` re-runs the whole sequence
    every step, as the original release did (benchmark baseline and a check on the cache). `graph`:
    replay the cached step as a CUDA graph (default: on CUDA in eval mode, see `graph_ok`), with a
    static cache of `seq_len` ids (the longest sequence decoded; default this call's); the tokens are
    the same either way."""
    device = _device(model)
    ids, seg = ids.to(device), seg.to(device)
    b, p = ids.shape
    if steps < 1 or p + steps > model.cfg.n_positions:
        raise GenerationError(f"cannot decode {steps} steps after {p} ids: need 1 <= steps and "
                              f"{p} + steps <= n_positions={model.cfg.n_positions}")
    # Image positions: only the image rows of the head are computed, so no other id can come out;
    # text positions: the full head, masked.
    rows = slice(vocab.IMAGE_OFFSET, model.cfg.vocab_size) if modality == "image" else slice(0, model.cfg.vocab_size)
    allowed = allowed_ids(modality, codebook_of(model), sep=True)[rows].to(device)
    stop_t = torch.tensor(stop, dtype=torch.long, device=device)
    two = torch.full((b, 1), 2, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    if use_cache:
        step = _step_for(model, b, p, steps, rows, allowed, s, graph, seq_len)
        logits = step.start(ids, seg)
    else:
        logits = _last_logits(model, ids, seg, None, rows)
    out = [pick(logits, allowed, s, generator) + rows.start]
    for _ in range(steps - 1):
        if stop:    # a stopped row repeats its stop id; the check syncs a GPU, so only with stop ids
            done |= torch.isin(out[-1], stop_t)
            if bool(done.all()):
                break
        if use_cache:
            nxt = step(out[-1], generator)
        else:
            ids, seg = torch.cat([ids, out[-1][:, None]], 1), torch.cat([seg, two], 1)
            nxt = pick(_last_logits(model, ids, seg, None, rows), allowed, s, generator) + rows.start
        # torch.where also copies the step's output buffer, which the next replay overwrites.
        out.append(torch.where(done, out[-1], nxt) if stop else nxt.clone())
    return torch.stack(out, 1)


def batches(n: int, size: int):
    if size < 1:
        raise GenerationError(f"batch size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _ones(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor(rows, dtype=torch.long)
    return ids, torch.ones_like(ids)


# ---------------------------------------------------------------- the three prompts

def generate_images(model, builder: SequenceBuilder, texts: list[str], s: Sampling, generator=None,
                    batch_size: int = 16, use_cache: bool = True, progress=None) -> torch.Tensor:
    """Texts -> [N, grid.count] image codes in [0, codebook). Texts longer than the text budget are
    cut as in training (`text_prefix` says how). Texts are grouped by prefix length (no padding inside
    a prefix, so positions match training)."""
    check_fit(model, builder)
    prefixes = [text_prefix(builder, t)[0] for t in texts]
    count = builder.grid.count
    codes = torch.empty(len(texts), count, dtype=torch.long)
    by_len: dict[int, list[int]] = {}
    for i, pre in enumerate(prefixes):
        by_len.setdefault(len(pre), []).append(i)
    for rows in by_len.values():
        for part in batches(len(rows), batch_size):
            idx = rows[part]
            ids, seg = _ones([prefixes[i] for i in idx])
            new = decode(model, ids, seg, count, "image", s, generator, use_cache=use_cache, seq_len=builder.seq_len)
            codes[idx] = new.cpu() - vocab.IMAGE_OFFSET
            if progress is not None:
                progress(len(idx))
    return codes


def _cut(row: list[int], stops: tuple[int, ...]) -> list[int]:
    for j, t in enumerate(row):
        if t in stops:
            return row[:j]
    return row


def generate_captions(model, builder: SequenceBuilder, codes: torch.Tensor, s: Sampling, generator=None,
                      batch_size: int = 16, progress=None) -> list[str]:
    """[N, grid.count] codes -> N detokenized captions, each at most the text budget long."""
    check_fit(model, builder)
    out: list[str] = []
    for part in batches(len(codes), batch_size):
        ids, seg = _ones([image_prefix(builder, "to-caption", c) for c in codes[part]])
        steps = builder.seq_len - ids.shape[1]     # the text budget and the closing [SEP]
        new = decode(model, ids, seg, steps, "text", s, generator, stop=(vocab.SEP,), seq_len=builder.seq_len)
        out += [vocab.decode_text(_cut(r, (vocab.SEP,))) for r in new.tolist()]
        if progress is not None:
            progress(len(new))
    return out


def _attribute_input(builder: SequenceBuilder, codes: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    key_ids = vocab.encode_text(key.strip())
    if not key.strip().endswith(":") or len(key_ids) < 2:
        raise GenerationError(f"attribute key {key[:200]!r} must look like '<dataset> <attribute>:' (e.g. 'fairface race:')")
    rows = [image_prefix(builder, "to-attributes", c) for c in codes]
    ids = torch.tensor([r + key_ids for r in rows], dtype=torch.long)
    seg = torch.ones_like(ids)
    seg[:, len(rows[0]):] = 2   # the key opens the target segment
    return ids, seg


def generate_attribute(model, builder: SequenceBuilder, codes: torch.Tensor, key: str, s: Sampling = GREEDY,
                       generator=None, batch_size: int = 16, progress=None) -> list[str]:
    """[N, grid.count] codes + key (`fairface race:`) -> N value strings, read up to `;` or `[SEP]`."""
    check_fit(model, builder)
    out: list[str] = []
    stops = (vocab.SEP, SEMICOLON)
    for part in batches(len(codes), batch_size):
        ids, seg = _attribute_input(builder, codes[part], key)
        new = decode(model, ids, seg, MAX_VALUE, "text", s, generator, stop=stops, seq_len=builder.seq_len)
        out += [vocab.decode_text(_cut(r, stops)).strip() for r in new.tolist()]
        if progress is not None:
            progress(len(new))
    return out


@torch.no_grad()
def rank_values(model, builder: SequenceBuilder, codes: torch.Tensor, key: str, candidates: list[str],
                batch_size: int = 16, progress=None) -> tuple[list[str], torch.Tensor]:
    """Closed label sets: score every candidate value by log p(value ids, then `;` or `[SEP]`).

    Returns the best candidate per image and the [N, C] log-likelihoods. The end token matters:
    without it a value that is the start of another ('white' vs 'white man') would always tie or win."""
    check_fit(model, builder)
    if not candidates:
        raise GenerationError(f"rank_values: no candidate values for {key[:200]!r}")
    cand = [vocab.encode_text(str(c)) for c in candidates]
    device = _device(model)
    scores = torch.empty(len(codes), len(cand))
    for part in batches(len(codes), batch_size):
        ids, seg = _attribute_input(builder, codes[part], key)
        b, p = ids.shape
        for c, value in enumerate(cand):
            # One candidate for the whole batch at a time: same length, so no padding.
            tail = torch.tensor(value, dtype=torch.long).expand(b, -1)
            tseg = torch.full_like(tail, 2)
            full, fseg = torch.cat([ids, tail], 1).to(device), torch.cat([seg, tseg], 1).to(device)
            logp = model(full, fseg)[:, p - 1:p + len(value)].float().log_softmax(-1)
            val = torch.tensor(value, device=device)
            lp = logp[:, :-1].gather(-1, val.expand(b, -1)[..., None]).squeeze(-1).sum(-1)
            end = torch.logsumexp(logp[:, -1, [vocab.SEP, SEMICOLON]], -1)
            scores[part, c] = (lp + end).cpu()
        if progress is not None:
            progress(b)
    return [candidates[i] for i in scores.argmax(1).tolist()], scores
