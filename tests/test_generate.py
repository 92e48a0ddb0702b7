"""Sampling: modality masks (no invalid id is ever emitted), the key/value cache, the three prompts, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clikit import clean_failure
from facecorpus import vocab
from facecorpus.codes import FFHQ_F16
from facecorpus.trainer import generate as gen
from facecorpus.trainer.config import model_preset
from facecorpus.trainer.model import Talk2Face
from facecorpus.trainer.sequences import SequenceBuilder
from runs import save_run

pytestmark = pytest.mark.usefixtures("one_thread")


V = vocab.vocab_size(FFHQ_F16.codebook_size)
IMAGE = slice(vocab.IMAGE_OFFSET, V)
B = SequenceBuilder(grid=FFHQ_F16)     # Talk2Face's layout: 16 x 16 codes of 1,024, 334 ids
SETTINGS = [gen.GREEDY, gen.Sampling(), gen.Sampling(temperature=5.0, top_k=0), gen.Sampling(temperature=0.05, top_k=1),
            gen.Sampling(top_k=0, top_p=0.01), gen.Sampling(top_k=5000, top_p=0.5), gen.Sampling(top_k=31546)]


def tiny(seed: int = 0) -> Talk2Face:
    torch.manual_seed(seed)
    return Talk2Face(model_preset("tiny", FFHQ_F16)).eval()


def adversarial(towards: str) -> Talk2Face:
    """A model whose head strongly prefers the wrong ids: text/special ids for image positions
    ("text"), image codes and [PAD]/[CLS]/[MASK]/[unused] for text positions ("image")."""
    model = tiny()
    head = torch.nn.Linear(model.cfg.d_model, model.cfg.vocab_size, bias=True)
    head.weight.data.copy_(model.lm_head.weight.data)
    head.bias.data.zero_()
    if towards == "text":
        head.bias.data[:vocab.IMAGE_OFFSET] = 60.0
    else:
        head.bias.data[IMAGE] = 60.0
        head.bias.data[[vocab.PAD, vocab.UNK, vocab.CLS, vocab.MASK, 1, 500, 998]] = 80.0
    model.lm_head = head
    return model


def is_text(ids: torch.Tensor) -> torch.Tensor:
    return ((ids >= vocab.FIRST_WORDPIECE) & (ids < vocab.TEXT_VOCAB_SIZE)) | (ids == vocab.SEP)


@pytest.mark.parametrize("s", SETTINGS, ids=repr)
def test_pick_never_leaves_the_modality(s):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, V, generator=g) * 10
    logits[:8, :vocab.IMAGE_OFFSET] += 1000.0      # the forbidden side is far more likely
    logits[8:, :vocab.IMAGE_OFFSET] = float("inf")  # even +inf logits on forbidden ids
    for _ in range(2):
        ids = gen.pick(logits, gen.allowed_ids("image", FFHQ_F16.codebook_size), s, g)
        assert ((ids >= vocab.IMAGE_OFFSET) & (ids < V)).all()
    logits = torch.randn(16, V, generator=g) * 10
    logits[:, IMAGE] += 1000.0
    logits[:, [vocab.PAD, vocab.CLS, vocab.MASK, vocab.UNK, 5]] += 2000.0
    for _ in range(2):
        assert is_text(gen.pick(logits, gen.allowed_ids("text", FFHQ_F16.codebook_size, sep=True), s, g)).all()


def test_filters_keep_what_they_promise():
    allowed = gen.allowed_ids("image", FFHQ_F16.codebook_size)
    logits = torch.randn(3, V)
    kept = torch.isfinite(gen.filter_logits(logits, allowed, gen.Sampling(top_k=5))).sum(-1)
    assert kept.tolist() == [5, 5, 5]
    one = gen.filter_logits(logits, allowed, gen.Sampling(top_k=0, top_p=1e-6))
    assert torch.isfinite(one).sum(-1).tolist() == [1, 1, 1]
    assert torch.equal(one.argmax(-1), logits.masked_fill(~allowed, -1e9).argmax(-1))
    # top-p keeps the smallest head of the distribution whose mass reaches p
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    flt = gen.filter_logits(probs, torch.ones(4, dtype=torch.bool), gen.Sampling(top_k=0, top_p=0.7))
    assert torch.isfinite(flt).tolist() == [[True, True, False, False]]
    # sampling follows the filtered distribution (0.5/0.8, 0.3/0.8)
    draws = gen.pick(probs.expand(40000, -1), torch.ones(4, dtype=torch.bool), gen.Sampling(top_k=0, top_p=0.7),
                     torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4) / 40000
    assert torch.allclose(freq, torch.tensor([0.625, 0.375, 0, 0]), atol=0.01)


@pytest.mark.parametrize("kw, message", [(dict(temperature=0), "temperature"), (dict(top_k=-1), "top_k"),
                                         (dict(top_p=0), "top_p"), (dict(top_p=1.5), "top_p")])
def test_bad_sampling_settings(kw, message):
    with pytest.raises(gen.GenerationError, match=message):
        gen.Sampling(**kw)


def test_sequences_match_the_release():
    codes = torch.arange(256) % 1024
    cap = gen.image_prefix(B, "to-caption", codes)
    assert len(cap) == 262 and cap[:5] == [vocab.CLS, 2000, 14408, 3258, vocab.SEP] and cap[-1] == vocab.SEP
    att = gen.image_prefix(B, "to-attributes", codes)
    assert len(att) == 261 and att[:4] == [vocab.CLS, 2000, 12332, vocab.SEP]
    img, note = gen.text_prefix(B, "word " * 200)
    assert img[:4] == [vocab.CLS, 2000, 3746, vocab.SEP] and len(img) == 4 + 71 + 1 and img[-1] == vocab.SEP
    assert note == "cut to 71 of 200 WordPiece ids at a word boundary: the text budget is 71 ids"
    assert len(img) + 256 + 1 <= 334 and B.seq_len == 334
    assert vocab.encode_text("; ;") == [gen.SEMICOLON] * 2
    ids, seg = gen._attribute_input(B, codes[None], "fairface race:")
    assert seg[0, :261].eq(1).all() and seg[0, 261:].eq(2).all() and ids.shape[1] == 261 + 4
    for prompt, codes_ in (("to-video", codes), ("to-image", codes), ("to-caption", torch.full((256,), 1024)),
                           ("to-caption", torch.zeros(255))):
        with pytest.raises(gen.GenerationError):
            gen.image_prefix(B, prompt, codes_)
    with pytest.raises(gen.GenerationError, match="needs a text"):
        gen.text_prefix(B, " ")
    with pytest.raises(gen.GenerationError, match="key"):
        gen._attribute_input(B, codes[None], "race")


def test_no_invalid_id_is_ever_emitted():
    """End to end: a model that wants the wrong modality everywhere still yields only image codes
    for faces and only WordPiece text for captions and attribute values."""
    g = torch.Generator().manual_seed(0)
    wants_text = adversarial("text")
    codes = gen.generate_images(wants_text, B, ["a man", "a smiling woman with long hair"], gen.Sampling(temperature=3.0), g)
    assert codes.shape == (2, 256) and codes.min() >= 0 and codes.max() < 1024
    prefix = torch.tensor([gen.text_prefix(B, "a man")[0]])
    for s in (gen.GREEDY, gen.Sampling(top_k=0, top_p=0.5)):
        new = gen.decode(wants_text, prefix, torch.ones_like(prefix), 24, "image", s, g)
        assert ((new >= vocab.IMAGE_OFFSET) & (new < V)).all()
    wants_image = adversarial("image")
    prefix = torch.tensor([gen.image_prefix(B, "to-caption", codes[0])])
    for s in (gen.Sampling(), gen.GREEDY, gen.Sampling(temperature=3.0, top_k=0)):
        new = gen.decode(wants_image, prefix, torch.ones_like(prefix), 24, "text", s, g)
        assert is_text(new).all()
    assert all(c and "[" not in c for c in gen.generate_captions(wants_image, B, codes[:1], gen.Sampling(), g))


@pytest.mark.parametrize("s", [gen.GREEDY, gen.Sampling(top_p=0.9)], ids=["greedy", "top-p"])
def test_cache_gives_the_same_tokens_as_rerunning_everything(s):
    model = tiny(1)
    prefix = torch.tensor([gen.text_prefix(B, "an old man with a beard")[0]] * 2)
    with_cache = gen.decode(model, prefix, torch.ones_like(prefix), 16, "image", s, torch.Generator().manual_seed(3))
    without = gen.decode(model, prefix, torch.ones_like(prefix), 16, "image", s, torch.Generator().manual_seed(3),
                         use_cache=False)
    assert torch.equal(with_cache, without)


def test_text_rows_stop_at_sep():
    model = tiny()
    head = torch.nn.Linear(model.cfg.d_model, model.cfg.vocab_size, bias=True)
    head.weight.data.zero_()
    head.bias.data.zero_()
    head.bias.data[vocab.SEP] = 50.0
    model.lm_head = head
    prefix = torch.tensor([gen.image_prefix(B, "to-caption", torch.zeros(256))])
    out = gen.decode(model, prefix, torch.ones_like(prefix), 30, "text", gen.GREEDY, stop=(vocab.SEP,))
    assert out.tolist() == [[vocab.SEP]]                       # stopped at once, not 30 steps
    assert gen.generate_captions(model, B, torch.zeros(1, 256, dtype=torch.long), gen.GREEDY) == [""]


def test_rank_values_scores_are_the_chain_rule_of_the_full_model():
    model = tiny(2)
    codes = torch.randint(0, 1024, (2, 256), generator=torch.Generator().manual_seed(0))
    candidates = ["white", "east asian", "black"]
    best, scores = gen.rank_values(model, B, codes, "fairface race:", candidates)
    ids, seg = gen._attribute_input(B, codes, "fairface race:")
    with torch.no_grad():
        for c, value in enumerate(candidates):
            seq, sseg, total = ids, seg, torch.zeros(2)
            for tok in vocab.encode_text(value):  # one full forward per token, no cache
                total += model(seq, sseg)[:, -1].log_softmax(-1)[:, tok]
                seq = torch.cat([seq, torch.full((2, 1), tok)], 1)
                sseg = torch.cat([sseg, torch.full((2, 1), 2)], 1)
            end = model(seq, sseg)[:, -1].softmax(-1)[:, [vocab.SEP, gen.SEMICOLON]].sum(-1).log()
            assert torch.allclose(scores[:, c], total + end, atol=1e-4)
    assert best == [candidates[i] for i in scores.argmax(1).tolist()]


def write_run(tmp_path, model: Talk2Face) -> object:
    save_run(tmp_path / "run", model)
    return tmp_path / "run"


def test_generate_cli_all_three_prompts(tmp_path):
    from facecorpus.trainer.generate_cli import generate

    run = write_run(tmp_path, tiny())
    runner = CliRunner()
    res = runner.invoke(generate, [str(run), "--prompt", "to-image", "--text", "a young woman", "--num-samples", "2",
                                   "--top-p", "0.9", "--out", str(tmp_path / "img")])
    assert res.exit_code == 0, res.output
    pngs = sorted((tmp_path / "img").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (256, 256)
    face = tmp_path / "face.png"
    Image.open(pngs[0]).resize((300, 200)).save(face)   # any size: preprocessing makes it 256x256
    res = runner.invoke(generate, [str(run), "--prompt", "to-caption", "--image", str(face), "--greedy",
                                   "--out", str(tmp_path / "cap")])
    assert res.exit_code == 0, res.output
    caption = json.loads((tmp_path / "cap" / "results.json").read_text())[0]["output"]
    assert isinstance(caption, str) and caption == caption.strip()
    res = runner.invoke(generate, [str(run), "--prompt", "to-attributes", "--image", str(face), "--key", "fairface race:",
                                   "--candidates", "white,black,east asian", "--out", str(tmp_path / "att")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "att" / "results.json").read_text())[0]["output"] in ("white", "black", "east asian")
    res = runner.invoke(generate, [str(run), "--prompt", "to-attributes", "--image", str(face), "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--key" in res.output


def test_static_decode_step_matches_the_growing_cache():
    """`decode_step` (fixed shapes, device position, attention over every slot) gives the states of
    `hidden` with the growing cache, step by step, even in a cache with stale slots from a longer
    earlier sequence (what a reused CUDA-graph cache holds)."""
    model = tiny(1)
    ids = torch.tensor([gen.text_prefix(B, "a woman with glasses")[0]] * 2)
    seg, p = torch.ones_like(ids), ids.shape[1]
    new = torch.randint(vocab.IMAGE_OFFSET, V, (2, 6), generator=torch.Generator().manual_seed(0))
    two = torch.full((2, 1), 2)
    with torch.no_grad():
        grow = model.new_cache(2, p + 6)
        static = model.new_cache(2, B.seq_len)
        model.hidden(torch.randint(0, 30000, (2, 300)), torch.ones(2, 300, dtype=torch.long), static)  # stale
        static.reset()
        assert torch.allclose(model.hidden(ids, seg, grow), model.hidden(ids, seg, static))
        pos = torch.tensor([p])
        for t in range(6):
            want = model.hidden(new[:, t:t + 1], two, grow)
            got = model.decode_step(new[:, t:t + 1], two, static, pos)
            assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5), t
            pos += 1
    assert grow.length == p + 6 and torch.equal(grow.seg, static.seg[:, :p + 6]) and static.seg[:, p + 6:].eq(0).all()


@pytest.mark.parametrize("s", [gen.GREEDY, gen.Sampling(top_k=70)], ids=["greedy", "top-k"])
def test_reused_graph_step_gives_the_same_tokens(s):
    """The CUDA-graph path without CUDA: on CPU `decode(graph=True)` keeps and reuses its step (static
    max-length cache, reset between calls) but runs it eagerly. Same tokens as a fresh step and as
    no cache at all, same random draws, and one kept step per batch shape and sampling."""
    model = tiny(2)
    long_ = torch.tensor([gen.text_prefix(B, "a very old man with a long white beard and a hat")[0]] * 3)
    short = torch.tensor([gen.text_prefix(B, "a child")[0]] * 3)
    for prefix in (long_, short, long_):    # the short one runs on a cache that held the long one
        kw = {"seg": torch.ones_like(prefix), "steps": 12, "modality": "image", "s": s, "seq_len": B.seq_len}
        fast = gen.decode(model, prefix, generator=torch.Generator().manual_seed(5), graph=True, **kw)
        eager = gen.decode(model, prefix, generator=torch.Generator().manual_seed(5), graph=False, **kw)
        bare = gen.decode(model, prefix, generator=torch.Generator().manual_seed(5), use_cache=False, **kw)
        assert torch.equal(fast, eager) and torch.equal(fast, bare)
    kept = model.__dict__["_decode_graphs"]
    assert len(kept) == 1 and next(iter(kept.values())).cache.max_len % 16 == 0
    caption = torch.tensor([gen.image_prefix(B, "to-caption", torch.arange(256))])
    for stop in ((), (vocab.SEP, gen.SEMICOLON)):
        kw = {"seg": torch.ones_like(caption), "steps": 8, "modality": "text", "s": s, "stop": stop, "seq_len": B.seq_len}
        assert torch.equal(gen.decode(model, caption, generator=torch.Generator().manual_seed(6), graph=True, **kw),
                           gen.decode(model, caption, generator=torch.Generator().manual_seed(6), use_cache=False, **kw))
    assert len(kept) == 2 and all(step.graph is None for step in kept.values())
    assert not gen.graph_ok(model)      # CPU: decode's default is a fresh eager step
    gen.release_graphs(model)
    assert "_decode_graphs" not in model.__dict__


def test_decode_rejects_impossible_lengths():
    model = tiny()
    prefix = torch.tensor([gen.text_prefix(B, "a man")[0]])
    for steps in (0, model.cfg.n_positions):
        with pytest.raises(gen.GenerationError, match="n_positions"):
            gen.decode(model, prefix, torch.ones_like(prefix), steps, "image", gen.GREEDY)


LONG_CAPTION = " ".join(["the", "woman"] + ["unbelievably"] * 30)     # un ##bel ##ie ##va ##bly: 5 ids a word
LONG_ATTRIBUTES = "celeba " + "; ".join(f"attribute number {i}: true" for i in range(20))


def test_long_prompt_is_cut_like_training_and_says_so():
    ids, note = gen.text_prefix(B, LONG_CAPTION)
    text = ids[4:-1]
    assert text == B.caption(LONG_CAPTION) and len(text) == 67          # 71 would end inside the 14th word
    full = vocab.encode_text(LONG_CAPTION)
    assert not vocab.wordpiece().id_to_token(full[len(text)]).startswith("##")   # the next id starts a word
    assert note == f"cut to 67 of {len(full)} WordPiece ids at a word boundary: the text budget is 71 ids"
    ids, note = gen.text_prefix(B, LONG_ATTRIBUTES)
    kept = vocab.decode_text(ids[4:-1]).replace(" : ", ": ").replace(" ;", ";")
    n = kept.count(":")
    assert kept == "celeba " + "; ".join(f"attribute number {i}: true" for i in range(n))   # the first pairs, whole
    assert 0 < n < 20 and note == f"kept the first {n} of 20 key-value pairs: the text budget is 71 ids"
    assert gen.text_prefix(B, "a young woman")[1] is None


def test_generate_cli_notes_a_cut_prompt(tmp_path):
    from facecorpus.cli import main

    run = write_run(tmp_path, tiny())
    res = CliRunner().invoke(main, ["generate", str(run), "--prompt", "to-image", "--text", LONG_CAPTION,
                                    "--text", "a man", "--greedy", "--out", str(tmp_path / "img")])
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "img" / "results.json").read_text())
    assert results[0]["note"].startswith("cut to 67 of") and "note" not in results[1]
    assert "note: input 1" in res.output


def bomb_png(path, width: int, height: int):
    """A PNG header claiming width x height pixels (PIL judges decompression bombs by the header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("case", ["batch-size-0", "no-cuda", "no-such-device", "bomb", "bomb-warning"])
def test_generate_cli_bad_input_is_one_clear_message(tmp_path, monkeypatch, case):
    from facecorpus.cli import main

    run = write_run(tmp_path, tiny())
    face = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (200, 150, 120)).save(face)
    args = ["generate", str(run), "--prompt", "to-caption", "--image", str(face), "--out", str(tmp_path / "out")]
    if case == "batch-size-0":
        args, expected = args + ["--batch-size", "0"], ["--batch-size", "0 is not in the range x>=1"]
    elif case == "no-cuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # a machine without CUDA
        args, expected = args + ["--device", "cuda"], ["--device cuda: this machine has no usable CUDA device"]
    elif case == "no-such-device":
        args, expected = args + ["--device", "gpu0"], ["--device 'gpu0': not a device; use cpu, cuda, cuda:N or auto"]
    else:
        bomb = bomb_png(tmp_path / "bomb.png", *((20000, 20000) if case == "bomb" else (10000, 10000)))
        args[5] = str(bomb)
        expected = [f"{bomb.name}: cannot use this input image", "could be decompression bomb"]
    clean_failure(CliRunner().invoke(main, args), *expected)


def test_generate_refuses_a_damaged_step_and_falls_back_from_a_run(tmp_path):
    from facecorpus.cli import main

    run = write_run(tmp_path, tiny())
    newest = save_run(run, tiny(1), step=2)
    data = bytearray((newest / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0x01                       # one flipped bit in the weights
    (newest / "model.pt").write_bytes(bytes(data))
    face = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (200, 150, 120)).save(face)
    args = ["--prompt", "to-caption", "--image", str(face), "--greedy", "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(main, ["generate", str(newest), *args])
    clean_failure(res, "step-00000002: damaged checkpoint: model.pt has another sha256 than checksums.json records")
    res = CliRunner().invoke(main, ["generate", str(run), *args])
    assert res.exit_code == 0, res.output
    assert "skipping damaged checkpoint step-00000002: model.pt has another sha256" in res.output
