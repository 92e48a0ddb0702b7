"""The image tokenizer: a taming-transformers VQGAN, loaded strictly, without PyTorch Lightning.

`load_vqgan("tiny-f16")` gives the small VQGAN shipped with the package (trained by `train-vqgan`
on the sample trees' generated faces: docs/vqgan.md; runs fast on CPU); `load_vqgan("ffhq-f16", ckpt=...)` the architecture of the Talk2Face VQGAN with the user's
weights; `load_vqgan("my.yaml", ckpt=...)` any taming config (a VQModel config, or the
Net2NetTransformer config whose VQGAN sits under `model.params.first_stage_config`).

Why no Lightning: `taming.models.vqgan.VQModel` imports `pytorch_lightning.utilities.distributed`,
which newer Lightning removed. We assemble the same modules (Encoder, Decoder, VectorQuantizer2 and
the two 1x1 convolutions) under the same attribute names, so the state-dict keys are VQModel's and
checkpoints load strictly (docs/dependencies.md, "The VQGAN without PyTorch Lightning").

Checkpoints are read with `torch.load(weights_only=True)` (no pickled code runs). A legacy Lightning
`last.ckpt` that pickles other objects needs `trust_checkpoint=True` (CLI: `--trust-checkpoint`);
classes from modules that are not installed (pytorch_lightning, omegaconf) are then replaced by inert
stand-ins, so the file still loads without Lightning.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import types
from importlib import resources
from pathlib import Path

import torch
from taming.modules.diffusionmodules.model import Decoder, Encoder
from taming.modules.vqvae.quantize import VectorQuantizer2

from facecorpus.codes import CodeGrid

PRESETS = {
    # name -> (config file in facecorpus/data, bundled weights or None = user supplies them)
    "tiny-f16": ("vqgan-tiny-f16.json", "vqgan-tiny-f16.pt"),
    "ffhq-f16": ("vqgan-ffhq-f16.json", None),
    "gptface-f16": ("vqgan-gptface-f16.json", None),   # GPTFace's tokenizer: train it (facecorpus train-vqgan)
}
# The Net2NetTransformer checkpoint (Talk2Face's FFHQ VQGAN) keeps the VQGAN under this prefix.
FIRST_STAGE_PREFIX = "first_stage_model."
# Keys a real taming VQModel checkpoint holds beside the model (the GAN loss) that encoding never uses.
IGNORED_PREFIXES = ("loss.",)
TAMING_NORM_GROUPS = 32   # taming's Normalize: GroupNorm(num_groups=32)


class VQGANError(ValueError):
    """A config or checkpoint that does not make the VQGAN asked for; the message names the problem."""


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _data(name: str) -> Path:
    return Path(str(resources.files("facecorpus") / "data" / name))


# ---------------------------------------------------------------- config

def _find_vq_params(cfg: dict, where: str) -> dict:
    """The VQModel params in a taming config: top level, `model.params`, or `...first_stage_config.params`."""
    for candidate in (cfg, cfg.get("params") or {}, (cfg.get("model") or {}).get("params") or {}):
        if "ddconfig" in candidate:
            return candidate
        first = candidate.get("first_stage_config")
        if isinstance(first, dict) and "ddconfig" in first.get("params", {}):
            return first["params"]
    raise VQGANError(f"{where}: no VQGAN `ddconfig` at the top level, under model.params, or under "
                     "model.params.first_stage_config.params")


def read_config(path: Path) -> dict:
    """{name, ddconfig, n_embed, embed_dim} from a JSON or taming YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise VQGANError(f"VQGAN config {path} does not exist (presets: {', '.join(PRESETS)})")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml  # taming configs are YAML; PyYAML comes with Ray

        raw = yaml.safe_load(text)
    else:
        raw = json.loads(text)
    params = _find_vq_params(raw, str(path))
    for key in ("n_embed", "embed_dim"):
        if key not in params:
            raise VQGANError(f"{path}: VQGAN params lack {key!r}")
    dd = dict(params["ddconfig"])
    return {"name": raw.get("name", path.stem), "description": raw.get("description", ""), "ddconfig": dd,
            "n_embed": int(params["n_embed"]), "embed_dim": int(params["embed_dim"])}


def write_config(config: dict, path: Path, description: str = "") -> Path:
    """Write `config` as a JSON file `read_config` reads back (what `train-vqgan` puts beside its weights)."""
    body = {"name": config["name"], "description": description or config.get("description", ""),
            **{k: config[k] for k in ("ddconfig", "n_embed", "embed_dim")}}
    Path(path).write_text(json.dumps(body, indent=2) + "\n")
    return Path(path)


def config_sha256(config: dict) -> str:
    """Hash of the architecture (canonical JSON of ddconfig, n_embed, embed_dim): a YAML and a JSON
    file describing the same model get the same identity, the display name does not count."""
    arch = {k: config[k] for k in ("ddconfig", "n_embed", "embed_dim")}
    return hashlib.sha256(json.dumps(arch, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def resolve(preset_or_config: str | Path, ckpt: str | Path | None) -> tuple[dict, Path | None]:
    """(config, checkpoint path or None) for a preset name or a config file."""
    if str(preset_or_config) in PRESETS:
        cfg_name, bundled = PRESETS[str(preset_or_config)]
        config = read_config(_data(cfg_name))
        config["name"] = str(preset_or_config)
        if ckpt is None and bundled is not None:
            ckpt = _data(bundled)
        return config, Path(ckpt) if ckpt is not None else None
    return read_config(Path(preset_or_config)), Path(ckpt) if ckpt is not None else None


# ---------------------------------------------------------------- checkpoint

class _Inert:
    """Stands in for a pickled object whose class cannot be imported (a Lightning callback, an
    omegaconf container): it keeps whatever state was pickled and is never used."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Inert,), {"__module__": module})


# torch.load accepts any object with `Unpickler` and `load` as its pickle module.
_lenient_pickle = types.SimpleNamespace(Unpickler=_LenientUnpickler, load=pickle.load, __name__="lenient_pickle")


def read_state_dict(path: Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The VQGAN's tensors from a VQModel or Net2NetTransformer checkpoint (prefix stripped)."""
    path = Path(path)
    if not path.is_file():
        raise VQGANError(f"VQGAN checkpoint {path} does not exist")
    try:
        if trust_checkpoint:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise VQGANError(f"{path}: holds pickled objects besides tensors, so it is not read by default "
                         f"(it could run code). If you trust the file, pass --trust-checkpoint "
                         f"(trust_checkpoint=True). Detail: {str(exc).splitlines()[0]}") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise VQGANError(f"{path}: not a readable torch checkpoint: {exc}") from exc
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise VQGANError(f"{path}: expected a state dict (or a dict with 'state_dict') of tensors")
    if any(k.startswith(FIRST_STAGE_PREFIX) for k in sd):
        # Net2NetTransformer: keep the VQGAN, drop the transformer and the conditioning stage.
        return {k[len(FIRST_STAGE_PREFIX):]: v for k, v in sd.items() if k.startswith(FIRST_STAGE_PREFIX)}
    return {k: v for k, v in sd.items() if not k.startswith(IGNORED_PREFIXES)}


def _strict_load(model: torch.nn.Module, sd: dict, where: Path) -> None:
    want = model.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(want[k].shape)}"
                    for k in set(want) & set(sd) if sd[k].shape != want[k].shape)
    problems = [f"{len(items)} {what} (e.g. {items[:5]})"
                for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("wrong shapes", shapes)) if items]
    if problems:
        raise VQGANError(f"{where} does not fit the VQGAN config: " + "; ".join(problems))
    model.load_state_dict(sd, strict=True)


# ---------------------------------------------------------------- model

def code_grid(config: dict) -> CodeGrid:
    """The code grid a config's VQGAN makes: its codebook, resolution / 2^(levels - 1) codes per side."""
    dd = config["ddconfig"]
    return CodeGrid(int(config["n_embed"]), dd["resolution"] // 2 ** (len(dd["ch_mult"]) - 1), int(dd["resolution"]))


def regroup_norms(model: torch.nn.Module, groups: int) -> None:
    """Give every GroupNorm of `model` `groups` groups. taming's `Normalize` is GroupNorm(32) whatever
    the width, so on a 32-channel level each channel is normalised alone and loses its picture-wide
    mean: a flat background or skin colour must then be carried by patterns (docs/vqgan.md). The
    ddconfig key `norm_groups` (ours; taming's modules ignore it) sets fewer; the parameters keep
    their shapes and names, so state dicts are taming's."""
    if groups == TAMING_NORM_GROUPS:
        return
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.GroupNorm):
                if child.num_channels % groups:
                    raise VQGANError(f"ddconfig norm_groups {groups} does not divide a {child.num_channels}-channel level")
                setattr(parent, name, torch.nn.GroupNorm(groups, child.num_channels, eps=child.eps, affine=child.affine))


class VQGAN(torch.nn.Module):
    """VQModel's encode/decode path under VQModel's attribute names (so its state dict loads as is)."""

    def __init__(self, config: dict):
        super().__init__()
        dd, self.config = config["ddconfig"], config
        self.encoder = Encoder(**dd)
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints its z shape
            self.decoder = Decoder(**dd)
        regroup_norms(self, dd.get("norm_groups", TAMING_NORM_GROUPS))
        self.quantize = VectorQuantizer2(config["n_embed"], config["embed_dim"], beta=0.25, sane_index_shape=True)
        self.quant_conv = torch.nn.Conv2d(dd["z_channels"], config["embed_dim"], 1)
        self.post_quant_conv = torch.nn.Conv2d(config["embed_dim"], dd["z_channels"], 1)
        self.identity: dict = {}
        self.fast = False  # encoder in bf16 on CUDA (set by load_vqgan)
        # The layout the encoder runs in, whatever strides its input has (set by load_vqgan). NCHW by
        # default: GroupNorm is slow in channels_last (load_vqgan), and pixels arriving as HWC (uint8
        # batches through preprocess.to_model_input) are channels_last-strided, which every convolution
        # would otherwise follow.
        self.memory_format = torch.contiguous_format

    @property
    def device(self) -> torch.device:
        return self.quant_conv.weight.device

    @property
    def grid(self) -> int:
        """Codes per side (16 for f16 at 256x256)."""
        return self.code_grid.side

    @property
    def code_grid(self) -> CodeGrid:
        """Codebook size, codes per side and input resolution, from the config (facecorpus.codes)."""
        return code_grid(self.config)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training pass, VQModel.forward plus what training watches: (B,3,R,R) in [-1,1] ->
        (reconstruction in about [-1,1], VectorQuantizer2's codebook + commitment loss, codes
        (B,side,side), encoder outputs before quantization (B,embed_dim,side,side), detached)."""
        z = self.quant_conv(self.encoder(x))
        with torch.autocast(x.device.type, enabled=False):  # the nearest-code search in fp32, as `encode`
            zq, qloss, (_, _, codes) = self.quantize(z.float())
        return self.decoder(self.post_quant_conv(zq)), qloss, codes, z.detach().float()

    @property
    def last_layer(self) -> torch.nn.Parameter:
        """The decoder's output convolution: taming's adaptive GAN weight compares gradients there."""
        return self.decoder.conv_out.weight

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,R,R) float in [-1,1] -> (B,side,side) int64 codes (R, side: `code_grid`; 256 and 16 for f16)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"encode expects (B,3,H,W) images in [-1,1], got shape {tuple(x.shape)}")
        dtype = torch.bfloat16 if self.fast else x.dtype
        x = x.to(self.device, dtype, non_blocking=True, memory_format=self.memory_format)
        z = self.quant_conv(self.encoder(x))
        # Nearest-code search in fp32 whatever the encoder ran in: bf16 distances would flip near-ties.
        return self.quantize(z.float().contiguous())[2][2]

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B,side,side) or (B,side*side) codes -> (B,3,R,R) float in [0,1] (`code_grid`)."""
        codes = torch.as_tensor(codes).to(self.device).long()
        b, g = codes.shape[0], self.grid
        if codes.shape[1:] not in ((g, g), (g * g,)):
            raise ValueError(f"decode expects (B,{g},{g}) or (B,{g * g}) codes, got {tuple(codes.shape)}")
        if int(codes.min()) < 0 or int(codes.max()) >= self.config["n_embed"]:
            raise ValueError(f"codes must lie in [0, {self.config['n_embed']}), got {int(codes.min())}..{int(codes.max())}")
        q = self.quantize.get_codebook_entry(codes.reshape(-1), shape=(b, g, g, self.config["embed_dim"]))
        x = self.decoder(self.post_quant_conv(q))
        return (x.float().clamp(-1, 1) + 1) / 2


def build(config: dict, seed: int = 0) -> VQGAN:
    """A VQGAN with seeded random weights (tests, benchmarks)."""
    torch.manual_seed(seed)
    return VQGAN(config).eval()


def load_vqgan(preset_or_config: str | Path, ckpt: str | Path | None = None, device: str = "cpu",
               *, trust_checkpoint: bool = False, random_seed: int | None = None, compile: bool | str = False,
               channels_last: bool = False) -> VQGAN:
    """A ready, eval-mode VQGAN with `.encode`, `.decode` and `.identity`.

    Needs no network. `ckpt` overrides a preset's bundled weights; `random_seed` builds seeded random
    weights instead of reading a checkpoint (benchmarks of the ffhq-f16 architecture). On CUDA the
    encoder runs in bf16; `compile` also compiles it (True or a torch.compile mode: "default",
    "reduce-overhead" for CUDA graphs, "max-autotune"; about 25 s or more, paid back after ~50k
    images). `channels_last` runs the encoder in that layout instead of NCHW (benchmarks)."""
    config, path = resolve(preset_or_config, ckpt)
    model = build(config, seed=random_seed or 0)
    if random_seed is not None:
        ckpt_id = f"random-seed-{random_seed}"
    elif path is None:
        raise VQGANError(f"preset {preset_or_config!r} ships no weights: pass --ckpt (the taming FFHQ "
                         "checkpoint, VQModel or Net2NetTransformer)")
    else:
        _strict_load(model, read_state_dict(path, trust_checkpoint), path)
        ckpt_id = sha256_file(path)
    # The code grid rides with the identity: the cache and index.json record what the codes look like.
    model.identity = {"name": config["name"], "config_sha256": config_sha256(config), "checkpoint_sha256": ckpt_id,
                      **model.code_grid.as_dict()}
    model = model.to(device)
    if channels_last:
        model.memory_format = torch.channels_last
        model.encoder.to(memory_format=torch.channels_last)
    if model.device.type == "cuda":
        # Measured on an H100, ffhq-f16, batch 256 (benchmarks/RESULTS.md): bf16 autocast with
        # channels_last 504 images/s (GroupNorm is slow in channels_last), autocast NCHW 655, bf16
        # weights NCHW 922, and the same compiled 1,802. The code search stays fp32 (encode).
        model.fast = True
        model.encoder.to(torch.bfloat16)
        model.quant_conv.to(torch.bfloat16)
        if compile:
            model.encoder = torch.compile(model.encoder, mode=None if compile is True else compile)
    return model
