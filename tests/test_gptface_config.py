"""GPTFace in the run configuration: its presets and recipe, its masking section, the family in
checkpoints' configs, overrides, and the warm-up from a start rate."""

from __future__ import annotations

import pytest

from facecorpus.codes import FFHQ_F16, CodeGrid
from facecorpus.trainer import config as C
from facecorpus.trainer.config import ConfigError, GPTFaceConfig, MaskingConfig, ModelConfig, RunConfig


def test_gptface_base_carries_the_papers_recipe():
    cfg = RunConfig.from_preset("gptface-base")
    assert cfg.family == "gptface" and isinstance(cfg.model, GPTFaceConfig) and cfg.masking == MaskingConfig()
    t = cfg.train
    assert (t.beta1, t.beta2, t.batch_size, t.max_steps, t.warmup_from, t.lr) == (0.9, 0.999, 192, 1_000_000, 2e-4, 1e-3)
    assert RunConfig.from_preset("talk2face-base").train.lr == 2e-4 and RunConfig.from_preset("tiny").masking is None
    assert cfg.data.gptface_records == "caption"


def test_overrides_reach_every_gptface_section():
    cfg = C.apply_overrides(RunConfig.from_preset("gptface-tiny"),
                            ["--masking.image_every=500", "--model.max_text=32", "--data.gptface_records=both",
                             "--train.warmup_from=1e-4", "--glu=silu"])
    assert cfg.masking.image_every == 500 and cfg.model.max_text == 32 and cfg.model.glu == "silu"
    assert cfg.data.gptface_records == "both" and cfg.train.warmup_from == 1e-4
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("preset, override, message", [
    ("tiny", "--masking.image_every=5", "--masking.image_every: no such config key for a talk2face model "
                                        "(sections: model, data, train;"),
    ("gptface-tiny", "--model.layernorm=released", "--model.layernorm: no such config key for a gptface model"),
    ("gptface-tiny", "--masking.image_max=0.1", "masking.image_max=0.1: must be >= masking.image_start=0.15"),
    ("gptface-tiny", "--masking.text_ratio=0", "masking.text_ratio=0.0: must be > 0 and <= 1"),
    ("gptface-tiny", "--data.gptface_records=all",
     "data.gptface_records='all': must be one of 'caption', 'attributes', 'both'"),
    ("gptface-tiny", "--data.micro_batch=1", "data.micro_batch=1: must be >= 2"),
    ("gptface-tiny", "--train.lr=1e-4", "train.warmup_from=0.0002: must be <= train.lr=0.0001"),
    ("tiny", "--data.micro_batch=6", "data.micro_batch=6: must be a multiple of 4 (data.tasks, in equal shares)"),
    ("gptface-tiny", "--data.tasks=face2attributes",
     "data.tasks='face2attributes': must be left alone for GPTFace (its records: data.gptface_records)"),
])
def test_wrong_settings_name_the_key(preset, override, message):
    with pytest.raises(ConfigError) as err:
        C.apply_overrides(RunConfig.from_preset(preset), [override])
    assert str(err.value).startswith(message)


def test_an_odd_micro_batch_is_fine_for_gptface_unless_half_each():
    C.apply_overrides(RunConfig.from_preset("gptface-tiny"), ["--data.micro_batch=6", "--train.batch_size=6"])
    with pytest.raises(ConfigError, match="data.micro_batch=5: must be even with data.gptface_records='both'"):
        C.apply_overrides(RunConfig.from_preset("gptface-tiny"), ["--data.micro_batch=5", "--data.gptface_records=both"])


def test_the_grid_comes_from_the_shards():
    cfg = RunConfig.from_preset("gptface-tiny")
    with pytest.raises(ConfigError, match="no code grid yet"):
        cfg.model.grid
    other = CodeGrid(8192, 21, 336)
    sized = cfg.sized(other)
    assert sized.model.grid == other and sized.grid == other and sized.data.seq_len == 2 + 441 + 64
    assert sized.model.vocab_size == 30522 + 8192
    with pytest.raises(ConfigError, match="trained on codes of a"):
        sized.sized(FFHQ_F16)
    with pytest.raises(ConfigError, match=r"data.seq_len=334: must be 0 or 322 for GPTFace"):
        C.apply_overrides(cfg, ["--data.seq_len=334"]).sized(FFHQ_F16)


def test_a_config_from_before_families_is_talk2face():
    d = RunConfig.from_preset("tiny").sized(FFHQ_F16).to_dict()
    assert d.pop("family") == "talk2face" and "masking" not in d
    cfg = RunConfig.from_dict(d)
    assert cfg.family == "talk2face" and isinstance(cfg.model, ModelConfig)


def test_warm_up_rises_linearly_from_its_start_rate():
    from facecorpus.trainer.train import lr_lambda

    cfg = C.apply_overrides(RunConfig.from_preset("gptface-base"), ["--train.warmup_steps=4", "--train.max_steps=8"])
    rates = [cfg.train.lr * lr_lambda(cfg)(s) for s in range(9)]
    assert rates[:4] == pytest.approx([4e-4, 6e-4, 8e-4, 1e-3])     # 2e-4 + 8e-4 x (s + 1) / 4
    assert rates[8] == pytest.approx(0.0)                           # then linearly down to min_lr = 0
    talk = C.apply_overrides(RunConfig.from_preset("tiny"), ["--train.warmup_steps=4"])
    assert [lr_lambda(talk)(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]   # from 0, as before
