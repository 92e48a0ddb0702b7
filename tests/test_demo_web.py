"""The demo's web set: an img2dataset-format folder generated without network (tars + parquet + stats,
a few failed URLs), converted together with the curated sample datasets, its images read from the tars."""

from __future__ import annotations

from collections import Counter

import numpy as np
from rich.console import Console

from facecorpus import imageref, manifest, summary
from facecorpus.converters import demo
from facecorpus.converters.samples import img2dataset as web_sample
from facecorpus.converters.samples.faces import look_from_captions
from facecorpus.shards.plan import plan
from facecorpus.shards.reading import OK, read_batch


def test_the_demo_converts_its_web_set_beside_the_curated_ones_and_reads_its_tars(tmp_path):
    demo.run(tmp_path, Console(quiet=True), seed=0, celeba_images=20)
    want = web_sample.write(tmp_path / "again", seed=0)   # what a correct conversion gives
    s = summary.read(tmp_path / "manifest")
    web = s.datasets["web"]
    assert (web.rows_read, web.records, web.filtered, web.unavailable) == \
        (want["rows"], want["records"], want["filtered"], want["unavailable"])
    assert {"celeba", "ffhqtext", "web"} <= set(s.datasets) and "web" not in s.not_converted
    recs = manifest.read_table(tmp_path / "manifest", ["web"]).to_pylist()
    assert {imageref.parse(r["image"]).kind for r in recs} == {"tar"} and all(r["bbox"] for r in recs)
    todo = plan(tmp_path / "manifest")
    todo = todo[todo["image_id"].str.startswith("web/")]
    out = read_batch({c: todo[c].to_numpy() for c in todo.columns}, 64)
    assert Counter(out["stage"]) == Counter({OK: want["records"]})
    assert all(np.ptp(px) > 0 for px in out["pixels"])     # a face, not a blank crop


def test_each_web_caption_states_its_face():
    rng = np.random.default_rng(3)
    for _ in range(200):
        look, female = web_sample.some_look(rng)
        assert look_from_captions([web_sample.caption(look, female)], rng) == look
