"""The paper's metrics, computed by well-kept libraries.

Captioning: BLEU-4, ROUGE-L, METEOR and CIDEr from `pycocoevalcap` (the COCO caption evaluation
code). Its METEOR is the original Java METEOR 1.5 jar shipped inside the wheel, so it needs a `java`
on PATH (Debian: `apt-get install default-jre-headless`); without one METEOR is reported as `null`
with the reason, never as a number. COCO's PTB tokenizer is Java too; we tokenize in Python the same
way for every metric instead (lower case, punctuation dropped), so BLEU/ROUGE/CIDEr never need Java.

Images: FID and IS from `torchmetrics` on features of the Inception network the user gives by path:
the TorchScript `inception-2015-12-05.pt` that StyleGAN2-ADA and clean-fid use (the TF FID Inception
ported to PyTorch). Nothing is downloaded: torchmetrics' own default would fetch weights at run time.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import torch

_PUNCT = re.compile(r"[^\w\s']|_")


class MetricsError(ValueError):
    """Metric input that cannot be scored (empty, missing references, bad Inception file)."""


def tokenize(text: str) -> str:
    """Lower case, punctuation out, single spaces: what the COCO tokenizer leaves for plain English."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def java_available() -> bool:
    return shutil.which("java") is not None


def caption_scores(refs: dict[str, list[str]], hyps: dict[str, str], meteor: bool = True) -> dict:
    """{image id: reference captions}, {image id: generated caption} -> scores in percent (paper's scale)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not hyps:
        raise MetricsError("caption_scores: no generated captions to score")
    missing = [k for k in hyps if not refs.get(k)]
    if missing:
        raise MetricsError(f"caption_scores: {len(missing)} images have no reference caption, e.g. {missing[0]}")
    gts = {k: [tokenize(r) for r in refs[k]] for k in hyps}
    res = {k: [tokenize(h) or "empty"] for k, h in hyps.items()}  # BLEU rejects an empty hypothesis
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {"bleu4": 100 * bleu[3], "rouge_l": 100 * Rouge().compute_score(gts, res)[0],
           "cider": 100 * Cider().compute_score(gts, res)[0], "meteor": None, "meteor_note": ""}
    if not meteor:
        out["meteor_note"] = "skipped (--no-meteor)"
    elif not java_available():
        out["meteor_note"] = "skipped: METEOR 1.5 is Java and no `java` is on PATH (apt-get install default-jre-headless)"
    else:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            out["meteor"] = 100 * scorer.compute_score(gts, res)[0]
        finally:  # the wrapper has no close(); end its Java process ourselves
            proc = scorer.meteor_p
            proc.stdin.close()
            proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        out["meteor_note"] = "pycocoevalcap METEOR 1.5 (Java)"
    return out


# ---------------------------------------------------------------- reconstruction

def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (B, C, H, W) images in [0, 1]: 10 log10(1 / MSE), at most 100 dB (identical)."""
    mse = ((a.float() - b.float()) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


# ---------------------------------------------------------------- FID / IS

class InceptionFeatures(torch.nn.Module):
    """The TorchScript Inception as a torchmetrics feature extractor: uint8 (B,3,H,W) in, features out.

    mode "pool": the 2,048 pool features (FID). mode "logits": log class probabilities, which
    torchmetrics' IS turns back into probabilities with its softmax."""

    def __init__(self, net: torch.nn.Module, mode: str):
        super().__init__()
        self.net, self.mode = net, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "pool":
            return self.net(x, return_features=True).double()
        return self.net(x, no_output_bias=True).double().clamp_min(1e-30).log()


def load_inception(path: Path, device: str = "cpu") -> torch.nn.Module:
    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"Inception file {path} does not exist: pass --inception with the TorchScript "
                           "inception-2015-12-05.pt (the FID network of StyleGAN2-ADA / clean-fid)")
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript, but the standard FID Inception only exists as TorchScript.
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=device).eval()
    except Exception as err:
        raise MetricsError(f"{path}: not a TorchScript Inception ({err})") from err
    return net


@torch.no_grad()
def fid(net: torch.nn.Module, real: list[torch.Tensor], fake: list[torch.Tensor]) -> float:
    """Batches of uint8 (B,3,H,W) real and generated images -> their FID on `net`'s pool features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    n_real, n_fake = sum(len(b) for b in real), sum(len(b) for b in fake)
    if n_real < 2 or n_fake < 2:
        raise MetricsError(f"FID needs at least 2 real and 2 generated images (got {n_real} and {n_fake})")
    metric = FrechetInceptionDistance(feature=InceptionFeatures(net, "pool"), input_img_size=tuple(real[0].shape[1:]))
    for b in real:
        metric.update(b, real=True)
    for b in fake:
        metric.update(b, real=False)
    return float(metric.compute())


@torch.no_grad()
def fid_is(net: torch.nn.Module, real: list[torch.Tensor], fake: list[torch.Tensor], is_splits: int = 10) -> dict:
    """Batches of uint8 (B,3,H,W) real and generated images -> FID and IS (mean, std) of the fakes."""
    from torchmetrics.image.inception import InceptionScore

    value = fid(net, real, fake)
    n_real, n_fake = sum(len(b) for b in real), sum(len(b) for b in fake)
    with warnings.catch_warnings():  # it keeps every feature row: 1,000 x 1,008 here, a few MB
        warnings.filterwarnings("ignore", ".*will save all extracted features", UserWarning)
        isc = InceptionScore(feature=InceptionFeatures(net, "logits"), splits=min(is_splits, n_fake))
    for b in fake:
        isc.update(b)
    is_mean, is_std = isc.compute()
    return {"fid": value, "is": float(is_mean), "is_std": float(is_std), "n_real": n_real, "n_fake": n_fake}
