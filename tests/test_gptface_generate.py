"""GPTFace generation: MaskGIT-style filling that never touches a code outside the mask, ITM guidance
that leaves the weights exactly as they were, the fill order, determinism, tags, and the CLI."""

from __future__ import annotations

import io
import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clikit import clean_failure
from facecorpus import vocab
from facecorpus.cli import main
from facecorpus.codes import FFHQ_F16
from facecorpus.trainer import gptface_generate as gg
from facecorpus.trainer.config import model_preset
from facecorpus.trainer.generate import GenerationError, Sampling
from facecorpus.trainer.gptface import GPTFace
from facecorpus.trainer.gptface_batch import Layout
from facecorpus.trainer.model import Talk2Face
from runs import save_run

pytestmark = pytest.mark.usefixtures("one_thread")
LAYOUT = Layout(FFHQ_F16)
CENTRE = gg.mask_cells((64, 64, 192, 192), (256, 256), FFHQ_F16)    # the middle 8 x 8 cells


def tiny(seed: int = 0) -> GPTFace:
    torch.manual_seed(seed)
    return GPTFace(model_preset("gptface-tiny", FFHQ_F16)).eval()


def codes(n: int = 2) -> torch.Tensor:
    return torch.randint(0, 1024, (n, 256), generator=torch.Generator().manual_seed(5))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("text, guidance", [(None, 0.0), ("a smiling woman with blond hair", 0.5)])
@pytest.mark.parametrize("box", [(64, 64, 192, 192), (0, 0, 256, 40), (250, 250, 256, 256)])
def test_inpainting_never_changes_a_code_outside_the_mask(text, guidance, box):
    model, before = tiny(), codes(3)
    # An adversarial head: text ids and [MASK] are far likelier than any code, everywhere.
    with torch.no_grad():
        model.out_bias[:vocab.IMAGE_OFFSET] += 50.0
    cells = gg.mask_cells(box, (256, 256), FFHQ_F16)
    out, _ = gg.inpaint(model, LAYOUT, before, cells, text, gg.Decoding(guidance=guidance), seeded(), batch_size=2)
    assert torch.equal(out[:, ~cells], before[:, ~cells])
    assert ((out >= 0) & (out < 1024)).all()                     # every masked cell got a code of the book
    assert not torch.equal(out[:, cells], before[:, cells])      # and they were redrawn, not copied


def test_the_weights_are_identical_after_a_guided_generation():
    model = tiny()
    before = weights(model)
    d = gg.Decoding(guidance=1.0)
    guided, _ = gg.inpaint(model, LAYOUT, codes(), CENTRE, "a man with a beard", d, seeded())
    gg.to_image(model, LAYOUT, ["a man with a beard", "a child"], gg.Decoding(per_iteration=64, guidance=1.0), seeded())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)          # bit for bit
    assert all(p.grad is None for p in model.parameters())
    unguided, _ = gg.inpaint(model, LAYOUT, codes(), CENTRE, "a man with a beard", gg.Decoding(guidance=0.0), seeded())
    assert not torch.equal(guided, unguided)                              # the moved weights did predict


def test_a_guidance_step_moves_toward_matched_and_restores_on_error():
    model = tiny()
    before = weights(model)
    ids = gg.sequences(LAYOUT, codes(), gg.text_ids(LAYOUT, "a man with a beard")[0])
    with torch.no_grad():
        start = model.itm_logit(model.hidden(ids))
    guidance = gg.Guidance(model, 1.0)
    with pytest.raises(RuntimeError, match="boom"), gg.guided(model, ids, guidance):
        with torch.no_grad():
            assert (model.itm_logit(model.hidden(ids)) > start).all()     # the step raised the matched logit
        raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cells_are_taken_next_to_the_known_region_k_at_a_time(monkeypatch):
    seen = []
    predict = gg._predict

    def spy(model, ids, *args):
        seen.append(ids.clone())
        return predict(model, ids, *args)
    monkeypatch.setattr(gg, "_predict", spy)
    model, before = tiny(), codes(1)
    gg.inpaint(model, LAYOUT, before, CENTRE, None, gg.Decoding(per_iteration=5), seeded())
    seen.append(None)
    assert len(seen) == 1 + -(-64 // 5)                                   # ceil(64 / 5) iterations
    for now, nxt in zip(seen, seen[1:-1]):
        todo = (now[0, 1:257] == vocab.MASK).view(16, 16)
        taken = todo & (nxt[0, 1:257] != vocab.MASK).view(16, 16)
        assert taken.sum() == 5
        known = torch.nn.functional.pad(~todo, (1, 1, 1, 1))
        near = known[:-2, 1:-1] | known[2:, 1:-1] | known[1:-1, :-2] | known[1:-1, 2:]
        assert (near[taken]).all()


def test_decoding_is_deterministic_with_a_seed_and_varies_with_it():
    model, d = tiny(), gg.Decoding(per_iteration=32)     # guided (a text, the default step), 8 iterations
    a, _ = gg.to_image(model, LAYOUT, ["a man", "a man"], d, seeded(1))
    b, _ = gg.to_image(model, LAYOUT, ["a man", "a man"], d, seeded(1))
    c, _ = gg.to_image(model, LAYOUT, ["a man", "a man"], d, seeded(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a[0], a[1])
    greedy = gg.Decoding(per_iteration=64, sampling=Sampling(greedy=True), guidance=0.0)
    g1, _ = gg.to_image(model, LAYOUT, ["a man"], greedy, seeded(1))
    assert torch.equal(g1, gg.to_image(model, LAYOUT, ["a man"], greedy, seeded(2))[0])


@pytest.mark.parametrize("box, size, cells", [
    ((0, 0, 16, 16), (256, 256), [(0, 0)]),
    ((0, 0, 17, 16), (256, 256), [(0, 0), (0, 1)]),                 # touching a cell masks it
    ((100, 50, 200, 100), (200, 100), [(r, c) for r in range(8, 16) for c in range(8, 16)]),   # scaled with the image
])
def test_a_pixel_box_masks_every_cell_it_touches(box, size, cells):
    got = gg.mask_cells(box, size, FFHQ_F16).view(16, 16).nonzero().tolist()
    assert sorted(map(tuple, got)) == sorted(cells)


@pytest.mark.parametrize("box", [(0, 0, 300, 10), (-1, 0, 10, 10), (10, 10, 10, 20), (20, 0, 10, 10)])
def test_a_mask_outside_the_image_is_refused(box):
    with pytest.raises(GenerationError, match=r"face.png: mask .* is not inside the 256x256 image"):
        gg.mask_cells(box, (256, 256), FFHQ_F16, "face.png: ")


def test_tags_fill_the_template_with_words():
    out = gg.tags(tiny(), LAYOUT, codes(2), 4, gg.Decoding(), seeded())
    assert len(out) == 2
    for line in out:
        assert line.startswith("tags: ") and len(line[6:].split(", ")) == 4 and "[MASK]" not in line
    with pytest.raises(GenerationError, match="between 1 and 31 tags fit in 64 text ids"):
        gg.tags(tiny(), LAYOUT, codes(1), 40, gg.Decoding())


# ---------------------------------------------------------------- the command line

@pytest.fixture
def gptface_run(tmp_path):
    save_run(tmp_path / "run", tiny(), preset="gptface-tiny")
    face = tmp_path / "face.png"
    Image.new("RGB", (128, 96), (200, 150, 120)).save(face)
    return tmp_path / "run", face


def test_generate_cli_gptface_prompts(tmp_path, gptface_run):
    run, face = gptface_run
    runner = CliRunner()
    res = runner.invoke(main, ["generate", str(run), "--prompt", "inpaint", "--image", str(face), "--mask", "32,24,96,72",
                               "--text", "a smiling woman", "--num-samples", "2", "--out", str(tmp_path / "in")])
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "in" / "results.json").read_text())
    assert len(results) == 2 and results[0]["mask"] == [32, 24, 96, 72] and results[0]["cells"] == 8 * 8
    assert results[0]["text"] == "a smiling woman" and Image.open(results[0]["output"]).size == (256, 256)
    res = runner.invoke(main, ["generate", str(run), "--prompt", "to-image", "--text", "a man", "--per-iteration", "64",
                               "--out", str(tmp_path / "img")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "img").glob("*.png"))) == 1
    res = runner.invoke(main, ["generate", str(run), "--prompt", "tags", "--image", str(face), "--num-tags", "3",
                               "--out", str(tmp_path / "tags")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "tags" / "results.json").read_text())[0]["output"].startswith("tags: ")


@pytest.mark.parametrize("args, expected", [
    (["--prompt", "to-caption"], ["--prompt to-caption: ", "is a GPTFace model, whose prompts are inpaint, to-image, "
                                  "tags; to-caption is talk2face's"]),
    (["--prompt", "inpaint", "--mask", "0,0,129,10"], ["face.png: mask 0,0,129,10 is not inside the 128x96 image"]),
    (["--prompt", "inpaint", "--mask", "0,0,10"], ["--mask '0,0,10': write the pixel box as x0,y0,x1,y1"]),
    (["--prompt", "inpaint"], ["inpaint needs --mask X0,Y0,X1,Y1"]),
    (["--prompt", "tags", "--mask", "0,0,10,10"], ["tags reads only --image"]),
])
def test_generate_cli_gptface_errors_are_one_clear_message(tmp_path, gptface_run, args, expected):
    run, face = gptface_run
    clean_failure(CliRunner().invoke(main, ["generate", str(run), "--image", str(face), *args,
                                            "--out", str(tmp_path / "out")]), *expected)


def test_a_gptface_prompt_on_a_talk2face_run_is_refused(tmp_path, gptface_run):
    _, face = gptface_run
    torch.manual_seed(0)
    save_run(tmp_path / "t2f", Talk2Face(model_preset("tiny", FFHQ_F16)).eval())
    res = CliRunner().invoke(main, ["generate", str(tmp_path / "t2f"), "--prompt", "inpaint", "--image", str(face),
                                    "--mask", "0,0,10,10", "--out", str(tmp_path / "out")])
    clean_failure(res, "is a Talk2Face model, whose prompts are to-image, to-caption, to-attributes; inpaint is gptface's")


@pytest.mark.slow
def test_demo_stage_trains_gptface_and_inpaints_a_face(tmp_path):
    from rich.console import Console

    from facecorpus.preprocess import POLICY
    from facecorpus.shards import writer
    from facecorpus.trainer import demo_gptface
    from facecorpus.vqgan import load_vqgan
    from shardkit import CAPTIONS, codes_of, record

    records = [record("celeba", f"{n:05d}", "caption", "train", CAPTIONS[n % 3], n=n) for n in range(16)]
    identity = {"vqgan": load_vqgan("tiny-f16").identity, "preprocess": POLICY}   # what the demo's shards record
    writer.write(tmp_path / "shards", [(r, codes_of(r["image_id"])) for r in records], identity, FFHQ_F16,
                 {"records": len(records)}, samples_per_shard=8)
    result = demo_gptface.run(tmp_path, Console(file=io.StringIO()), seed=0)
    assert result["steps"] == 4 and result["codes redrawn"] == 64 and result["outside the box unchanged"] is True
    assert Image.open(tmp_path / "samples" / "inpaint-0.png").size == (256, 256)
    assert (tmp_path / "run-gptface" / "step-00000004").is_dir()


def test_the_box_is_in_the_upright_pictures_pixels(tmp_path, gptface_run):
    """A photo stored 128 x 96 with EXIF orientation 6 shows 96 x 128: the box follows what a viewer sees."""
    run, _ = gptface_run
    photo = tmp_path / "rotated.jpg"
    img = Image.new("RGB", (128, 96), (200, 150, 120))
    exif = img.getexif()
    exif[0x0112] = 6                       # rotate 90 degrees clockwise to display
    img.save(photo, exif=exif)
    args = ["generate", str(run), "--prompt", "inpaint", "--image", str(photo), "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(main, [*args, "--mask", "0,100,96,128", "--per-iteration", "64"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())[0]["cells"] == 16 * 4   # the bottom 28 rows
    clean_failure(CliRunner().invoke(main, [*args, "--mask", "0,0,128,96"]),
                  "rotated.jpg: mask 0,0,128,96 is not inside the 96x128 image")
