"""The authors' released `talk2face.bin` (a TencentPretrain state dict) -> our `talk2face-base` model.

The file is a plain `state_dict()` (no optimizer), sometimes with a `module.` prefix on every name
(saved from DDP). Names map one to one (docs/talk2face-release.md, "State-dict names"):

    embedding.{word,pos,seg}.embedding.weight                 embed.{word,pos,seg}.weight
    encoder.transformer.{i}.self_attn.linear_layers.{0,1,2}    blocks.{i}.attn.{q,k,v}
    encoder.transformer.{i}.self_attn.final_linear             blocks.{i}.attn.o
    encoder.transformer.{i}.feed_forward.linear_{1,2}          blocks.{i}.ff.fc{1,2}
    encoder.transformer.{i}.layer_norm_{1,2}.{gamma,beta}      blocks.{i}.ln{1,2}.{weight,bias}
    encoder.layer_norm.{gamma,beta}                            ln_f.{weight,bias}
    target.lm.output_layer.weight                              lm_head.weight

Loading is strict: every released name must map, every parameter of ours must be filled, shapes must
agree; anything else is an error naming the tensor. The model gets the release's LayerNorm variant
(unbiased std, eps 1e-6 outside the square root), without which the weights give different outputs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from facecorpus.codes import FFHQ_F16

from .config import model_preset
from .model import Talk2Face

_FIXED = {
    "embedding.word.embedding.weight": "embed.word.weight",
    "embedding.pos.embedding.weight": "embed.pos.weight",
    "embedding.seg.embedding.weight": "embed.seg.weight",
    "encoder.layer_norm.gamma": "ln_f.weight",
    "encoder.layer_norm.beta": "ln_f.bias",
    "target.lm.output_layer.weight": "lm_head.weight",
}
_LAYER = re.compile(r"encoder\.transformer\.(\d+)\.(.+)")
_IN_LAYER = {
    "self_attn.linear_layers.0": "attn.q", "self_attn.linear_layers.1": "attn.k",
    "self_attn.linear_layers.2": "attn.v", "self_attn.final_linear": "attn.o",
    "feed_forward.linear_1": "ff.fc1", "feed_forward.linear_2": "ff.fc2",
    "layer_norm_1": "ln1", "layer_norm_2": "ln2",
}
_LEAF = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}


class ReleasedCheckpointError(ValueError):
    """A state dict that does not load exactly into talk2face-base; the message names the tensor."""


def our_name(name: str) -> str | None:
    """TencentPretrain name -> our parameter name (None when it has no counterpart)."""
    if name in _FIXED:
        return _FIXED[name]
    m = _LAYER.fullmatch(name)
    if not m:
        return None
    module, _, leaf = m.group(2).rpartition(".")
    if module not in _IN_LAYER or leaf not in _LEAF:
        return None
    if module.startswith("layer_norm") != (leaf in ("gamma", "beta")):
        return None  # LayerNorms hold gamma/beta, linears weight/bias
    return f"blocks.{m.group(1)}.{_IN_LAYER[module]}.{_LEAF[leaf]}"


def convert(state: dict[str, torch.Tensor], where: str = "state dict") -> dict[str, torch.Tensor]:
    """Rename a released state dict (with or without `module.`) to ours; raises on any unknown name."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    out, unknown = {}, []
    for name, tensor in state.items():
        ours = our_name(name)
        if ours is None:
            unknown.append(name)
        else:
            out[ours] = tensor
    if unknown:
        raise ReleasedCheckpointError(f"{where}: {len(unknown)} tensors are not in the Talk2Face release layout, "
                                      f"e.g. {unknown[0]!r}")
    return out


def read(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ReleasedCheckpointError(f"{path}: no such file (the released talk2face.bin)")
    from .checkpoint import CheckpointError, torch_load

    try:
        state = torch_load(path)
    except CheckpointError as err:
        raise ReleasedCheckpointError(str(err)) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ReleasedCheckpointError(f"{path}: expected a state dict of tensors (name -> tensor)")
    return state


def load_released(source: Path | dict, preset: str = "talk2face-base", device: str = "cpu") -> Talk2Face:
    """A path to `talk2face.bin` or an in-memory state dict -> eval-mode model with the release's LayerNorm
    (its vocabulary: 30,522 WordPiece ids and the 1,024 codes of its FFHQ f16 VQGAN)."""
    where = str(source) if not isinstance(source, dict) else "state dict"
    state = convert(read(source) if not isinstance(source, dict) else source, where)
    cfg = model_preset(preset, FFHQ_F16)
    cfg.layernorm = "released"
    with torch.device("meta"):  # shapes only: no 134M-parameter random init that is overwritten anyway
        model = Talk2Face(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ReleasedCheckpointError(f"{where}: {len(missing)} parameters of {preset} are missing, e.g. {missing[0]!r}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ReleasedCheckpointError(f"{where}: {len(extra)} tensors have no place in {preset}, e.g. {extra[0]!r}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ReleasedCheckpointError(f"{where}: {name} has shape {tuple(tensor.shape)}, "
                                          f"{preset} needs {tuple(expected[name].shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return model.eval().to(device)
