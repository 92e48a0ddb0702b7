"""Typed run configuration: one dataclass per component, composed into `RunConfig`.

Every field has a default and a one-line comment, and every numeric field a valid range (`RULES`),
checked by one validator (`check`) with one message format when the config is built, so a wrong
setting fails before any work. `--section.key=value` overrides (also `--key=value` when the key
name is unique across sections) must name an existing key and keep its type, as in minGPT's
`CfgNode.merge_from_args` and nanoGPT's configurator, without executing any Python.

The sizes that follow from the VQGAN (vocabulary, sequence length) default to 0 and are filled in
from the shards' code grid when training starts (`RunConfig.sized`); the checkpoint records them
and the grid, so generation takes them from there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import ClassVar

from facecorpus import vocab
from facecorpus.codes import CodeGrid


class ConfigError(ValueError):
    """A config value outside its valid range; the message names the key, the value and the range."""


@dataclass(frozen=True)
class Rule:
    """The valid values of one numeric key: `low <= value` (or `<` when `open_low`), `value <= high`
    (or `<` when `open_high`), finite; `zero` is allowed too when it means something (an "off")."""
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    zero: str = ""          # what 0 means, when 0 is allowed outside [low, high]

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.open_high else '<='} {self.high:g}")
        text = " and ".join(parts) or "a finite number"
        return f"{text}, or 0 ({self.zero})" if self.zero else text

    def allows(self, value: float) -> bool:
        if self.zero and value == 0:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)


POSITIVE = Rule(low=1)
NON_NEGATIVE = Rule(low=0)
FRACTION = Rule(low=0, high=1, open_high=True)


def check(section: str, obj) -> None:
    """The one validator: every key of `obj` against its section's `RULES` and `CHOICES`; raises
    ConfigError with the message format `section.key=value: must be <rule>`."""
    for name, rule in obj.RULES.items():
        value = getattr(obj, name)
        if not rule.allows(value):
            fail(section, name, value, rule.describe())
    for name, choices in getattr(obj, "CHOICES", {}).items():
        if getattr(obj, name) not in choices:
            fail(section, name, getattr(obj, name), "one of " + ", ".join(map(repr, choices)))


def fail(section: str, name: str, value, must: str):
    raise ConfigError(f"{section}.{name}={value!r}: must be {must}")


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

    RULES: ClassVar[dict] = {"vocab_size": Rule(low=vocab.TEXT_VOCAB_SIZE, open_low=True, zero="from the code grid"),
                             "n_positions": POSITIVE, "n_segments": Rule(low=3), "n_layer": POSITIVE,
                             "n_head": POSITIVE, "d_model": POSITIVE, "d_ff": POSITIVE, "dropout": FRACTION,
                             "ln_eps": Rule(low=0, open_low=True)}
    CHOICES: ClassVar[dict] = {"layernorm": ("torch", "released")}

    def __post_init__(self):
        check("model", self)
        if self.d_model % self.n_head:
            fail("model", "d_model", self.d_model, f"divisible by model.n_head={self.n_head}")


MODEL_PRESETS = {
    # Exactly the released Talk2Face weights' shape: 134.3M parameters with the untied head.
    "talk2face-base": {"n_layer": 12, "n_head": 12, "d_model": 768, "d_ff": 3072, "dropout": 0.1},
    # Small enough for CPU tests and the demo; same vocabulary and positions so sequences are identical.
    "tiny": {"n_layer": 2, "n_head": 2, "d_model": 64, "d_ff": 256, "dropout": 0.0},
}


def model_preset(name: str, grid: CodeGrid | None = None) -> ModelConfig:
    """A preset's ModelConfig; with `grid`, its vocabulary sized for that VQGAN's codebook."""
    if name not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}")
    cfg = ModelConfig(**MODEL_PRESETS[name])
    if grid is not None:
        cfg.vocab_size = vocab.vocab_size(grid.codebook_size)
    return cfg


@dataclass
class DataConfig:
    shards: str = ""                    # folder holding index.json (set by --shards)
    split: str = "train"                # which split's shards to stream
    seq_len: int = 0                    # ids per instance; 0 = the release's 71-id text budget beside the grid (334 at 16x16)
    pad_to_multiple: int = 8            # batch width rounded up (334 -> 336) for aligned attention kernels
    micro_batch: int = 16               # sequences per rank per micro-step; a multiple of 4 (four tasks)
    num_workers: int = 2                # DataLoader worker processes per rank (0 = in the main process)
    shuffle_shards: int = 4             # shards read together and shuffled as one buffer
    loss_on: str = "target"             # "target" (segment 2) or "all" (every non-pad position, as released)
    check_sha256: bool = True           # hash each shard against index.json when read (sizes are always checked)

    RULES: ClassVar[dict] = {"seq_len": Rule(low=1, zero="derived from the code grid"), "pad_to_multiple": POSITIVE,
                             "micro_batch": Rule(low=4), "num_workers": NON_NEGATIVE, "shuffle_shards": POSITIVE}
    CHOICES: ClassVar[dict] = {"loss_on": ("target", "all")}

    def __post_init__(self):
        check("data", self)
        if self.micro_batch % 4:
            fail("data", "micro_batch", self.micro_batch, "a multiple of 4 (four balanced tasks)")


@dataclass
class TrainConfig:
    batch_size: int = 192               # global sequences per optimizer step (the paper's 192)
    max_steps: int = 500_000            # the paper's budget
    lr: float = 2e-4                    # peak learning rate (paper)
    min_lr: float = 0.0                 # learning rate reached linearly at max_steps
    warmup_steps: int = 10_000          # linear warm-up from 0
    weight_decay: float = 0.01          # AdamW decay on matrices only
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0              # max global grad norm; 0 disables
    precision: str = "auto"             # "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16", "fp32"
    compile: bool = False               # torch.compile each transformer block
    seed: int = 0                       # model init, dropout and data order
    log_interval: int = 10              # optimizer steps between JSONL log lines
    ckpt_interval: int = 1000           # optimizer steps between checkpoints (plus one at step 0 and at the end)
    keep_checkpoints: int = 3           # newest step-* folders kept (0 keeps all)
    eval_interval: int = 1000           # optimizer steps between held-out losses on the val split (0 = never)
    eval_batches: int = 8               # micro-batches per rank in each held-out loss (the same ones every time)
    tensorboard: bool = False           # also write TensorBoard scalars to RUN/tb
    stop_at_step: int = 0               # end cleanly after this step's checkpoint (0 = run to max_steps); resumable

    RULES: ClassVar[dict] = {"batch_size": POSITIVE, "max_steps": POSITIVE, "lr": Rule(low=0, open_low=True),
                             "min_lr": NON_NEGATIVE, "warmup_steps": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
                             "beta1": FRACTION, "beta2": FRACTION, "grad_clip": Rule(low=0, open_low=True, zero="off"),
                             "seed": NON_NEGATIVE, "log_interval": POSITIVE, "ckpt_interval": POSITIVE,
                             "keep_checkpoints": Rule(low=1, zero="keep all"), "eval_interval": Rule(low=1, zero="never"),
                             "eval_batches": POSITIVE, "stop_at_step": Rule(low=1, zero="run to train.max_steps")}
    CHOICES: ClassVar[dict] = {"precision": ("auto", "bf16", "fp32")}

    def __post_init__(self):
        check("train", self)
        if self.min_lr > self.lr:
            fail("train", "min_lr", self.min_lr, f"<= train.lr={self.lr:g}")


@dataclass
class RunConfig:
    preset: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    grid: CodeGrid | None = None        # the shards' VQGAN code grid, recorded when training starts

    @classmethod
    def from_preset(cls, preset: str) -> RunConfig:
        return cls(preset=preset, model=model_preset(preset))

    def to_dict(self) -> dict:
        d = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        return {"preset": self.preset, **d, "grid": self.grid.as_dict() if self.grid else None}

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> RunConfig:
        """The inverse of `to_dict`; a config saved before grids were recorded has `grid` None."""
        grid = CodeGrid.from_dict(d["grid"], where) if d.get("grid") else None
        return cls(preset=d["preset"], model=ModelConfig(**d["model"]), data=DataConfig(**d["data"]),
                   train=TrainConfig(**d["train"]), grid=grid)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def sized(self, grid: CodeGrid) -> RunConfig:
        """This config with the sizes that follow from the shards' code grid filled in (vocabulary,
        sequence length) and checked: a run keeps one grid, and an explicit size must fit it."""
        from .sequences import default_seq_len, text_budget

        if self.grid is not None and self.grid != grid:
            raise ConfigError(f"this run was trained on codes of a {self.grid.as_dict()} grid; the shards have "
                              f"{grid.as_dict()}")
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
        return dataclasses.replace(self, model=dataclasses.replace(self.model, vocab_size=want),
                                   data=dataclasses.replace(self.data, seq_len=seq_len), grid=grid)


SECTIONS = ("model", "data", "train")
_SECTION_TYPES = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _parse(raw: str, kind: type, name: str):
    """`raw` as the declared type; bool needs true/false, float accepts ints, nothing else converts."""
    if kind is bool:
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
    elif kind is int:
        try:
            return int(raw)
        except ValueError:
            pass
    elif kind is float:
        try:
            return float(raw)
        except ValueError:
            pass
    elif kind is str:
        return raw
    raise ConfigError(f"--{name}={raw!r}: expected {kind.__name__}")


def _resolve(key: str) -> tuple[str, str]:
    """`train.lr` -> (train, lr); a bare `lr` only when exactly one section has it."""
    if "." in key:
        section, _, name = key.partition(".")
        if section not in _SECTION_TYPES or name not in {f.name for f in dataclasses.fields(_SECTION_TYPES[section])}:
            raise ConfigError(f"--{key}: no such config key (sections: {', '.join(SECTIONS)}; see `facecorpus train --help`)")
        return section, name
    hits = [s for s in SECTIONS if key in {f.name for f in dataclasses.fields(_SECTION_TYPES[s])}]
    if len(hits) != 1:
        problem = "no such config key" if not hits else f"ambiguous, write one of {', '.join(f'{s}.{key}' for s in hits)}"
        raise ConfigError(f"--{key}: {problem}")
    return hits[0], key


def apply_overrides(cfg: RunConfig, args: list[str]) -> RunConfig:
    """Apply `--section.key=value` strings; returns a new, re-validated config."""
    d = cfg.to_dict()
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"{arg!r}: overrides are written --section.key=value (e.g. --train.lr=1e-4)")
        key, _, raw = arg[2:].partition("=")
        section, name = _resolve(key)
        kind = typing.get_type_hints(_SECTION_TYPES[section])[name]
        d[section][name] = _parse(raw, kind, f"{section}.{name}")
    return RunConfig.from_dict(d)


def describe() -> list[str]:
    """Every key with its default and its valid values, for `--help`."""
    lines = []
    for section in SECTIONS:
        kind = _SECTION_TYPES[section]
        for f in dataclasses.fields(kind):
            rule = kind.RULES.get(f.name) or kind.CHOICES.get(f.name)
            valid = rule.describe() if isinstance(rule, Rule) else " | ".join(rule) if rule else ""
            lines.append(f"{section}.{f.name}={f.default}" + (f"  ({valid})" if valid else ""))
    return lines
