"""Typed run configuration: one dataclass per component, composed into `RunConfig`.

Every field has a default and a one-line comment. `--section.key=value` overrides (also `--key=value`
when the key name is unique across sections) must name an existing key and keep its type, as in
minGPT's `CfgNode.merge_from_args` and nanoGPT's configurator, without executing any Python.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

from facecorpus import vocab


@dataclass
class ModelConfig:
    vocab_size: int = vocab.VOCAB_SIZE  # 30,522 WordPiece ids + 1,024 VQGAN codes
    n_positions: int = 1024             # learned position rows (the release has 1,024)
    n_segments: int = 3                 # 0 = padding, 1 = prompt + prefix, 2 = target
    n_layer: int = 12
    n_head: int = 12
    d_model: int = 768
    d_ff: int = 3072
    dropout: float = 0.1                # embeddings, attention probabilities, residual branches
    layernorm: str = "torch"            # "torch" or "released" (unbiased std, eps outside the sqrt)
    ln_eps: float = 1e-6                # the release's epsilon; used by both variants

    def __post_init__(self):
        if self.layernorm not in ("torch", "released"):
            raise ValueError(f"model.layernorm={self.layernorm!r}: choose 'torch' or 'released'")
        if self.d_model % self.n_head:
            raise ValueError(f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}")


MODEL_PRESETS = {
    # Exactly the released Talk2Face weights' shape: 134.3M parameters with the untied head.
    "talk2face-base": {"n_layer": 12, "n_head": 12, "d_model": 768, "d_ff": 3072, "dropout": 0.1},
    # Small enough for CPU tests and the demo; same vocabulary and positions so sequences are identical.
    "tiny": {"n_layer": 2, "n_head": 2, "d_model": 64, "d_ff": 256, "dropout": 0.0},
}


def model_preset(name: str) -> ModelConfig:
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}")
    return ModelConfig(**MODEL_PRESETS[name])


@dataclass
class DataConfig:
    shards: str = ""                    # folder holding index.json (set by --shards)
    split: str = "train"                # which split's shards to stream
    seq_len: int = 334                  # every instance fits this many ids (the release's 262 + 72)
    pad_to_multiple: int = 8            # batch width rounded up (334 -> 336) for aligned attention kernels
    micro_batch: int = 16               # sequences per rank per micro-step; a multiple of 4 (four tasks)
    num_workers: int = 2                # DataLoader worker processes per rank (0 = in the main process)
    shuffle_shards: int = 4             # shards read together and shuffled as one buffer
    loss_on: str = "target"             # "target" (segment 2) or "all" (every non-pad position, as released)
    check_sha256: bool = True           # hash each shard against index.json when read (sizes are always checked)

    def __post_init__(self):
        if self.loss_on not in ("target", "all"):
            raise ValueError(f"data.loss_on={self.loss_on!r}: choose 'target' or 'all'")
        if self.micro_batch % 4:
            raise ValueError(f"data.micro_batch={self.micro_batch} must be a multiple of 4 (four balanced tasks)")


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
    tensorboard: bool = False           # also write TensorBoard scalars to RUN/tb
    stop_at_step: int = 0               # end cleanly after this step's checkpoint (0 = run to max_steps); resumable
    kill_at_step: int = 0               # tests only: SIGKILL every rank right after this step's checkpoint

    def __post_init__(self):
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.precision={self.precision!r}: choose 'auto', 'bf16' or 'fp32'")


@dataclass
class RunConfig:
    preset: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_preset(cls, preset: str) -> RunConfig:
        return cls(preset=preset, model=model_preset(preset))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(preset=d["preset"], model=ModelConfig(**d["model"]), data=DataConfig(**d["data"]),
                   train=TrainConfig(**d["train"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


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
    raise ValueError(f"--{name}={raw!r}: expected {kind.__name__}")


def _resolve(key: str) -> tuple[str, str]:
    """`train.lr` -> (train, lr); a bare `lr` only when exactly one section has it."""
    if "." in key:
        section, _, name = key.partition(".")
        if section not in _SECTION_TYPES or name not in {f.name for f in dataclasses.fields(_SECTION_TYPES[section])}:
            raise ValueError(f"--{key}: no such config key (sections: {', '.join(SECTIONS)}; see `facecorpus train --help`)")
        return section, name
    hits = [s for s in SECTIONS if key in {f.name for f in dataclasses.fields(_SECTION_TYPES[s])}]
    if len(hits) != 1:
        problem = "no such config key" if not hits else f"ambiguous, write one of {', '.join(f'{s}.{key}' for s in hits)}"
        raise ValueError(f"--{key}: {problem}")
    return hits[0], key


def apply_overrides(cfg: RunConfig, args: list[str]) -> RunConfig:
    """Apply `--section.key=value` strings; returns a new, re-validated config."""
    d = cfg.to_dict()
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"{arg!r}: overrides are written --section.key=value (e.g. --train.lr=1e-4)")
        key, _, raw = arg[2:].partition("=")
        section, name = _resolve(key)
        kind = typing.get_type_hints(_SECTION_TYPES[section])[name]
        d[section][name] = _parse(raw, kind, f"{section}.{name}")
    return RunConfig.from_dict(d)


def describe() -> str:
    """Every key with its default, for `--help`."""
    lines = []
    for section in SECTIONS:
        for f in dataclasses.fields(_SECTION_TYPES[section]):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"{section}.{f.name}={default}")
    return "  ".join(lines)
