"""Typed run configuration: one dataclass per component, composed into `RunConfig`.

Every field has a default and a one-line comment, and every numeric field a valid range (`RULES`),
checked by one validator (`check`) with one message format when the config is built, so a wrong
setting fails before any work. `--section.key=value` overrides (also `--key=value` when the key
name is unique across sections) must name an existing key and keep its type, as in minGPT's
`CfgNode.merge_from_args` and nanoGPT's configurator, without executing any Python. The machinery
is trainer/settings.py's, shared with `train-vqgan`.

Two model families share the data and train sections: Talk2Face (`ModelConfig`, presets
`talk2face-base`, `tiny`) and GPTFace (`GPTFaceConfig` plus its `masking` section, presets
`gptface-base`, `gptface-tiny`). A run's family is the type of its model section; a preset names
both the family and, where the family's paper differs from TrainConfig's defaults, its recipe.

The sizes that follow from the VQGAN (vocabulary, code grid, sequence length) default to 0 and are
filled in from the shards' code grid when training starts (`RunConfig.sized`); the checkpoint
records them and the grid, so generation takes them from there.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import ClassVar

from facecorpus import vocab
from facecorpus.codes import CodeGrid

from .settings import FRACTION, NON_NEGATIVE, POSITIVE, ConfigError, Rule, check, fail, key_lines, override

SHARE = Rule(low=0, high=1, open_low=True)   # a fraction that must be above 0


def check_model(model) -> None:
    """`check` of a model section of either family, and the heads that must divide its width."""
    check("model", model)
    if model.d_model % model.n_head:
        fail("model", "d_model", model.d_model, f"divisible by model.n_head={model.n_head}")


@dataclass
class ModelConfig:
    vocab_size: int = 0                 # 0 = from the shards' code grid: 30,522 WordPiece ids + the codebook
    n_positions: int = 1024             # learned position rows (the release has 1,024)
    n_segments: int = 3                 # 0 = padding, 1 = prompt + prefix, 2 = target
    n_layer: int = 12
    n_head: int = 12
    d_model: int = 768
    d_ff: int = 3072
    dropout: float = 0.1                # embeddings, attention probabilities, residual branches
    layernorm: str = "torch"            # "torch" or "released" (unbiased std, eps outside the sqrt)
    ln_eps: float = 1e-6                # the release's epsilon; used by both variants
    attention: str = "sdpa"             # "sdpa" (boolean mask) or "flex" (block mask, skips masked blocks; no dropout on attention probabilities)

    RULES: ClassVar[dict] = {"vocab_size": Rule(low=vocab.TEXT_VOCAB_SIZE, open_low=True, zero="from the code grid"),
                             "n_positions": POSITIVE, "n_segments": Rule(low=3), "n_layer": POSITIVE,
                             "n_head": POSITIVE, "d_model": POSITIVE, "d_ff": POSITIVE, "dropout": FRACTION,
                             "ln_eps": Rule(low=0, open_low=True)}
    CHOICES: ClassVar[dict] = {"layernorm": ("torch", "released"), "attention": ("sdpa", "flex")}

    def __post_init__(self):
        check_model(self)

    @property
    def block_matmuls(self) -> int:
        """Weights one token meets in the matrix products of one block (MFU): q, k, v, o and the FFN."""
        return 4 * self.d_model ** 2 + 2 * self.d_model * self.d_ff


GRID_RULE = Rule(low=1, zero="from the shards' code grid")
# Talk2Face's four training tasks (trainer/sequences.py TASKS, which imports torch; config does not).
TALK2FACE_TASKS = ("face2caption", "caption2face", "face2attributes", "attributes2face")


@dataclass
class GPTFaceConfig:
    """GPTFace's shape (trainer/gptface.py; the choices are argued in docs/gptface.md)."""
    codebook_size: int = 0              # VQGAN codes: the vocabulary is 30,522 + this; 0 = from the code grid
    grid_side: int = 0                  # codes per image side: side² image positions; 0 = from the code grid
    resolution: int = 0                 # the VQGAN's image side in pixels; 0 = from the code grid
    max_text: int = 64                  # text ids after the image's [SEP] (the paper's 64)
    n_layer: int = 12
    n_head: int = 12
    d_model: int = 768
    d_ff: int = 2048                    # GLU inner width, of the gate and of the value (2/3 x 3,072: docs/gptface.md)
    glu: str = "gelu"                   # GLU gate activation: "gelu" (GEGLU), "silu" (SwiGLU), "sigmoid" (GLU)
    dropout: float = 0.1                # embeddings, attention probabilities, residual branches
    ln_eps: float = 1e-6

    RULES: ClassVar[dict] = {"codebook_size": GRID_RULE, "grid_side": GRID_RULE, "resolution": GRID_RULE,
                             "max_text": POSITIVE, "n_layer": POSITIVE, "n_head": POSITIVE, "d_model": POSITIVE,
                             "d_ff": POSITIVE, "dropout": FRACTION, "ln_eps": Rule(low=0, open_low=True)}
    CHOICES: ClassVar[dict] = {"glu": ("gelu", "silu", "sigmoid")}

    def __post_init__(self):
        check_model(self)
        sizes = (self.codebook_size, self.grid_side, self.resolution)
        if any(sizes) and not all(sizes):
            fail("model", "codebook_size", self.codebook_size, "set with model.grid_side and model.resolution "
                 "(one code grid), or all three 0 (from the shards)")
        if all(sizes):
            try:
                self.grid   # the grid's own checks (a codebook that fits uint16)
            except ValueError as err:
                raise ConfigError(f"model: {err}") from None

    @property
    def grid(self) -> CodeGrid:
        if not self.codebook_size:
            raise ConfigError("model: no code grid yet (it comes from the shards' index when training starts)")
        return CodeGrid(self.codebook_size, self.grid_side, self.resolution)

    @property
    def vocab_size(self) -> int:
        return vocab.vocab_size(self.grid.codebook_size)

    @property
    def n_positions(self) -> int:
        """[CLS] + side² codes + [SEP] + max_text ids: 322 on the FFHQ grid, 507 on GPTFace's 21x21."""
        return 2 + self.grid.count + self.max_text

    @property
    def block_matmuls(self) -> int:
        """Weights one token meets in the matrix products of one block: q, k, v, o and the GLU's three."""
        return 4 * self.d_model ** 2 + 3 * self.d_model * self.d_ff


@dataclass
class MaskingConfig:
    """GPTFace's masks (trainer/gptface_masking.py): the image span budget schedule and text spans."""
    image_start: float = 0.15           # image mask budget at step 0, as a fraction of the grid's codes
    image_rise: float = 0.01            # added to the budget every `image_every` optimizer steps
    image_every: int = 20_000           # steps between two rises
    image_max: float = 0.65             # the budget never exceeds this
    text_ratio: float = 0.2             # fraction of a text's ids masked (rounded up: docs/gptface.md)
    span_p: float = 0.2                 # SpanBERT's geometric span-length parameter
    span_max: int = 10                  # longest span, in whole words (SpanBERT clips at 10)

    RULES: ClassVar[dict] = {"image_start": SHARE, "image_rise": NON_NEGATIVE, "image_every": POSITIVE,
                             "image_max": SHARE, "text_ratio": SHARE, "span_p": SHARE, "span_max": POSITIVE}

    def __post_init__(self):
        check("masking", self)
        if self.image_max < self.image_start:
            fail("masking", "image_max", self.image_max, f">= masking.image_start={self.image_start:g}")


@dataclass(frozen=True)
class Preset:
    family: str                         # "talk2face" or "gptface"
    model: dict                         # the model section's shape
    train: dict = field(default_factory=dict)   # where the family's recipe differs from TrainConfig's defaults


# GPTFace's paper where it differs from Talk2Face's recipe (TrainConfig's defaults): a peak rate of 1e-3
# reached by a linear warm-up from 2e-4, and 1M steps (AdamW 0.9/0.999 and batch 192 are shared).
GPTFACE_RECIPE = {"lr": 1e-3, "warmup_from": 2e-4, "max_steps": 1_000_000}

PRESETS = {
    # Exactly the released Talk2Face weights' shape: 134.3M parameters with the untied head.
    "talk2face-base": Preset("talk2face", {"n_layer": 12, "n_head": 12, "d_model": 768, "d_ff": 3072, "dropout": 0.1}),
    # Small enough for CPU tests and the demo; same vocabulary and positions so sequences are identical.
    "tiny": Preset("talk2face", {"n_layer": 2, "n_head": 2, "d_model": 64, "d_ff": 256, "dropout": 0.0}),
    # The paper's model: 12 x 768, 12 heads, GLU FFN "3,072" read parameter-matched (d_ff 2,048).
    "gptface-base": Preset("gptface", {"n_layer": 12, "n_head": 12, "d_model": 768, "d_ff": 2048, "dropout": 0.1},
                           GPTFACE_RECIPE),
    # CPU tests and the demo, like Talk2Face's `tiny`: the same 8/3 GLU ratio, rounded up to 16.
    "gptface-tiny": Preset("gptface", {"n_layer": 2, "n_head": 2, "d_model": 64, "d_ff": 176, "dropout": 0.0},
                           GPTFACE_RECIPE),
}
MODEL_TYPES = {"talk2face": ModelConfig, "gptface": GPTFaceConfig}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def with_grid(model: ModelConfig | GPTFaceConfig, grid: CodeGrid) -> ModelConfig | GPTFaceConfig:
    """`model` sized for `grid`: Talk2Face's vocabulary, GPTFace's grid (and with it its vocabulary and positions)."""
    if isinstance(model, GPTFaceConfig):
        return dataclasses.replace(model, codebook_size=grid.codebook_size, grid_side=grid.side,
                                   resolution=grid.resolution)
    return dataclasses.replace(model, vocab_size=vocab.vocab_size(grid.codebook_size))


def model_preset(name: str, grid: CodeGrid | None = None) -> ModelConfig | GPTFaceConfig:
    """A preset's model section (its family's type); with `grid`, sized for that VQGAN's codes."""
    p = preset(name)
    cfg = MODEL_TYPES[p.family](**p.model)
    return cfg if grid is None else with_grid(cfg, grid)


@dataclass
class DataConfig:
    shards: str = ""                    # folder holding index.json (set by --shards)
    split: str = "train"                # which split's shards to stream
    seq_len: int = 0                    # ids per instance; 0 = derived from the code grid (Talk2Face: 334 at 16x16; GPTFace: 322)
    pad_to_multiple: int = 8            # batch width rounded up (334 -> 336) for aligned attention kernels
    micro_batch: int = 16               # sequences per rank per micro-step; Talk2Face: a multiple of 4 (four tasks)
    num_workers: int = 2                # DataLoader worker processes per rank (0 = in the main process)
    shuffle_shards: int = 4             # shards read together and shuffled as one buffer
    loss_on: str = "target"             # Talk2Face: "target" (segment 2) or "all" (every non-pad position, as released)
    gptface_records: str = "caption"    # GPTFace: which records train it: "caption", "attributes" or "both" (half each)
    check_sha256: bool = True           # hash each shard against index.json when read (sizes are always checked)
    tasks: str = ",".join(TALK2FACE_TASKS)   # Talk2Face: each micro-batch's tasks in equal shares; one named twice gets twice the share

    RULES: ClassVar[dict] = {"seq_len": Rule(low=1, zero="derived from the code grid"), "pad_to_multiple": POSITIVE,
                             "micro_batch": Rule(low=2), "num_workers": NON_NEGATIVE, "shuffle_shards": POSITIVE}
    CHOICES: ClassVar[dict] = {"loss_on": ("target", "all"), "gptface_records": ("caption", "attributes", "both")}

    def __post_init__(self):
        check("data", self)
        wrong = [t for t in self.task_names if t not in TALK2FACE_TASKS]
        if wrong or not self.task_names:
            fail("data", "tasks", self.tasks, "a comma-separated list of " + ", ".join(TALK2FACE_TASKS))

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.tasks.split(",") if t.strip())


@dataclass
class TrainConfig:
    batch_size: int = 192               # global sequences per optimizer step (the paper's 192)
    max_steps: int = 500_000            # the paper's budget
    lr: float = 2e-4                    # peak learning rate (paper)
    min_lr: float = 0.0                 # learning rate reached linearly at max_steps
    warmup_steps: int = 10_000          # linear warm-up from train.warmup_from to train.lr
    warmup_from: float = 0.0            # learning rate the warm-up starts from (GPTFace: 2e-4)
    weight_decay: float = 0.01          # AdamW decay on matrices only
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0              # max global grad norm; 0 disables
    precision: str = "auto"             # "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16", "fp32"
    compile: bool = False               # torch.compile each transformer block
    seed: int = 0                       # model init, dropout, data order and GPTFace's masks
    log_interval: int = 10              # optimizer steps between JSONL log lines
    ckpt_interval: int = 1000           # optimizer steps between checkpoints (plus one at step 0 and at the end)
    keep_checkpoints: int = 3           # newest step-* folders kept (0 keeps all)
    eval_interval: int = 1000           # optimizer steps between held-out losses on the val split (0 = never)
    eval_batches: int = 8               # micro-batches per rank in each held-out loss (the same ones every time)
    tensorboard: bool = False           # also write TensorBoard scalars to RUN/tb
    stop_at_step: int = 0               # end cleanly after this step's checkpoint (0 = run to max_steps); resumable

    RULES: ClassVar[dict] = {"batch_size": POSITIVE, "max_steps": POSITIVE, "lr": Rule(low=0, open_low=True),
                             "min_lr": NON_NEGATIVE, "warmup_steps": NON_NEGATIVE, "warmup_from": NON_NEGATIVE,
                             "weight_decay": NON_NEGATIVE, "beta1": FRACTION, "beta2": FRACTION,
                             "grad_clip": Rule(low=0, open_low=True, zero="off"),
                             "seed": NON_NEGATIVE, "log_interval": POSITIVE, "ckpt_interval": POSITIVE,
                             "keep_checkpoints": Rule(low=1, zero="keep all"), "eval_interval": Rule(low=1, zero="never"),
                             "eval_batches": POSITIVE, "stop_at_step": Rule(low=1, zero="run to train.max_steps")}
    CHOICES: ClassVar[dict] = {"precision": ("auto", "bf16", "fp32")}

    def __post_init__(self):
        check("train", self)
        for name in ("min_lr", "warmup_from"):
            if getattr(self, name) > self.lr:
                fail("train", name, getattr(self, name), f"<= train.lr={self.lr:g}")


SECTION_TYPES = {"talk2face": {"model": ModelConfig, "data": DataConfig, "train": TrainConfig},
                 "gptface": {"model": GPTFaceConfig, "data": DataConfig, "train": TrainConfig, "masking": MaskingConfig}}


@dataclass
class RunConfig:
    preset: str = "tiny"
    model: ModelConfig | GPTFaceConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    masking: MaskingConfig | None = None   # GPTFace's masks (set for a GPTFace model, None for Talk2Face)
    grid: CodeGrid | None = None        # the shards' VQGAN code grid, recorded when training starts

    def __post_init__(self):
        if self.family == "gptface":
            self.masking = self.masking or MaskingConfig()
            if self.data.task_names != TALK2FACE_TASKS:
                fail("data", "tasks", self.data.tasks, "left alone for GPTFace (its records: data.gptface_records)")
            if self.data.gptface_records == "both" and self.data.micro_batch % 2:
                fail("data", "micro_batch", self.data.micro_batch, "even with data.gptface_records='both' (half each)")
        else:
            if self.masking is not None:
                raise ConfigError("masking: a Talk2Face run has no masking section (it is GPTFace's)")
            n = len(self.data.task_names)
            if self.data.micro_batch % n:
                fail("data", "micro_batch", self.data.micro_batch, f"a multiple of {n} (data.tasks, in equal shares)")

    @property
    def family(self) -> str:
        """The model family: the type of the model section."""
        return "gptface" if isinstance(self.model, GPTFaceConfig) else "talk2face"

    @property
    def sections(self) -> tuple[str, ...]:
        return tuple(SECTION_TYPES[self.family])

    @classmethod
    def from_preset(cls, name: str) -> RunConfig:
        p = preset(name)
        return cls(preset=name, model=model_preset(name), train=TrainConfig(**p.train))

    def to_dict(self) -> dict:
        d = {name: dataclasses.asdict(getattr(self, name)) for name in self.sections}
        return {"preset": self.preset, "family": self.family, **d, "grid": self.grid.as_dict() if self.grid else None}

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> RunConfig:
        """The inverse of `to_dict`; a config saved before grids were recorded has `grid` None, one
        saved before GPTFace existed is Talk2Face's."""
        family = d.get("family", "talk2face")
        if family not in SECTION_TYPES:
            raise ConfigError(f"{where}: family={family!r}: must be one of {', '.join(map(repr, SECTION_TYPES))}")
        types = SECTION_TYPES[family]
        grid = CodeGrid.from_dict(d["grid"], where) if d.get("grid") else None
        return cls(preset=d["preset"], grid=grid, **{name: kind(**d[name]) for name, kind in types.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def sized(self, grid: CodeGrid) -> RunConfig:
        """This config with the sizes that follow from the shards' code grid filled in (vocabulary,
        GPTFace's grid, sequence length) and checked: a run keeps one grid, and an explicit size must fit it."""
        if self.grid is not None and self.grid != grid:
            raise ConfigError(f"this run was trained on codes of a {self.grid.as_dict()} grid; the shards have "
                              f"{grid.as_dict()}")
        if self.family == "gptface":
            return self._sized_gptface(grid)
        from .sequences import default_seq_len, text_budget

        want = vocab.vocab_size(grid.codebook_size)
        if self.model.vocab_size not in (0, want):
            fail("model", "vocab_size", self.model.vocab_size, f"{want} (30,522 + the shards' {grid.codebook_size} codes), or 0")
        seq_len = self.data.seq_len or default_seq_len(grid)
        try:
            text_budget(seq_len, grid)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if seq_len > self.model.n_positions:
            fail("data", "seq_len", seq_len, f"<= model.n_positions={self.model.n_positions}")
        return dataclasses.replace(self, model=with_grid(self.model, grid),
                                   data=dataclasses.replace(self.data, seq_len=seq_len), grid=grid)

    def _sized_gptface(self, grid: CodeGrid) -> RunConfig:
        if self.model.codebook_size and self.model.grid != grid:
            fail("model", "codebook_size", self.model.codebook_size, f"the shards' grid {grid.as_dict()} "
                 "(model.codebook_size, grid_side and resolution), or 0")
        model = with_grid(self.model, grid)
        if self.data.seq_len not in (0, model.n_positions):
            fail("data", "seq_len", self.data.seq_len, f"0 or {model.n_positions} for GPTFace ([CLS] + {grid.count} codes + "
                 f"[SEP] + model.max_text={model.max_text}; set model.max_text instead)")
        return dataclasses.replace(self, model=model, data=dataclasses.replace(self.data, seq_len=model.n_positions),
                                   grid=grid)


def apply_overrides(cfg: RunConfig, args: list[str]) -> RunConfig:
    """Apply `--section.key=value` strings; returns a new, re-validated config."""
    d = override(cfg.to_dict(), SECTION_TYPES[cfg.family], args, "train", f"for a {cfg.family} model")
    return RunConfig.from_dict(d)


def describe() -> list[str]:
    """Every key with its default and its valid values, per family, and each preset's recipe, for `--help`."""
    def presets(family: str) -> str:
        return ", ".join(n for n, p in PRESETS.items() if p.family == family)

    lines = []
    for family, types in SECTION_TYPES.items():
        lines += [f"model ({presets(family)}):", *key_lines({"model": types["model"]})]
    lines += [f"masking ({presets('gptface')}):", *key_lines({"masking": MaskingConfig}), "data, train (every preset):",
              *key_lines({"data": DataConfig, "train": TrainConfig})]
    for name, p in PRESETS.items():
        if p.train:
            lines.append(f"preset {name} sets " + " ".join(f"train.{k}={v}" for k, v in p.train.items()))
    return lines
