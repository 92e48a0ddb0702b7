"""`facecorpus tokenize`: every unique image of a manifest, encoded once, on Ray Data.

    manifest -> unique image_ids not in the cache, streamed in blocks (plan.py; on Ray by a Feeder actor)
             -> [Ray tasks] read, decode, preprocess (uint8; reading.py)
             -> [actor pool, one GPU per actor when there are GPUs] VQGAN encode (encoder.py)
             -> driver: codes appended to the cache, failures to the ledger, part by part

Ray Data streams with backpressure, so the work in flight is bounded by its object-store budget and
memory stays flat however large the manifest is. On CPU the read stage carries the same resources
as the encoder, so Ray fuses both into the actor (no image crosses processes); with GPUs the
resources differ, Ray keeps them apart and the CPUs decode while the GPUs encode. A read task takes
`read_rows` images (a whole fraction of the encoder batch, several tasks per CPU so every core
decodes), never imports torch (seconds of start-up per worker), and ships uint8 pixels, which the
encoder converts to float on its own device. Ray itself comes from raysession.py; `engine="local"`
runs the same stages without Ray on one machine (localengine.py).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecorpus import arrowpool
from facecorpus.preprocess import POLICY
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import digests, ledger, localengine
from facecorpus.shards import plan as plan_mod
from facecorpus.shards.encoder import Encoder
from facecorpus.shards.raysession import ray_session
from facecorpus.shards.reading import OK, REFUSED, read_batch

ENGINES = ("ray", "local")


@dataclass
class Options:
    vqgan: str = "tiny-f16"
    ckpt: str | None = None
    trust_checkpoint: bool = False
    ray_address: str | None = None
    ray_runtime_env: dict | None = None  # Ray's runtime environment for a joined cluster's workers (py_modules...)
    batch_size: int | None = None     # default: 256 per GPU, 32 on CPU
    part_rows: int = 4096             # rows per cache part: what a kill can lose at most
    actors: int | None = None         # default: one per GPU, else cluster CPUs // cpus_per_actor
    cpus_per_actor: int | None = None  # CPU only; default min(4, the largest node's CPUs)
    compile: str = ""                 # GPUs: a torch.compile mode for the encoder ("" = eager; ~25 s or more per actor)
    inflight: int | None = None       # batches each encoder actor holds at once; default 3 with GPUs, 1 on CPU
    allow_outside_links: bool = False  # read images whose path resolves outside their dataset's folder
    raw_root: Path | None = None      # where the raw dataset folders are now, if moved since `convert`
    engine: str = "ray"               # "ray", or "local": the same stages in processes and threads of this machine


def _dataset(manifest: Path, index: plan_mod.Index, opts: Options, size: int, load_model):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours is the one bar
    ctx.print_on_execution_start = False
    # Data flows once every encoder actor is up: on a cluster each node's actor takes part from the first
    # block (else the first ready actor may take a small plan alone), and a pool the nodes cannot place
    # (an actor asking for more CPUs than any node has) fails with Ray's "Timed out while starting
    # actors" instead of waiting forever.
    ctx.wait_for_min_actors_s = 600
    # Input blocks are a few bytes (a plan block's number): where one lives says nothing about where its
    # images are, yet Ray Data queues every block on the actors of the node that holds it (the driver's),
    # and a two-node test cluster saw one node read everything. Ray 2.60 deprecates this switch (removal
    # after January 2027) but still obeys it; its warning is Ray's, not the user's concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.execution_options.actor_locality_enabled = False
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    # An actor lives on one node: it cannot hold more CPUs than the largest node has.
    node_cpus = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [1]) or 1
    if gpus:
        actors, batch = opts.actors or gpus, opts.batch_size or 256
        read_args, enc_args, threads = {"num_cpus": 1}, {"num_cpus": 1, "num_gpus": 1}, 1
        # One batch encoding, one staged (its copy to the GPU overlapping), one being assembled by Ray.
        inflight = opts.inflight or 3
    else:
        threads = opts.cpus_per_actor or min(4, node_cpus)
        actors, batch = opts.actors or max(1, cpus // threads), opts.batch_size or 32
        read_args = enc_args = {"num_cpus": threads}  # equal resources -> Ray fuses read into the actor
        inflight = opts.inflight or 1  # the CPU that decodes also encodes: nothing to overlap
    rows = read_rows(index.todo, batch, cpus)
    # The plan is not built ahead in the driver (from_items held ~1 KB per image): a Feeder actor on
    # this node streams it from the manifest, and each read task asks it for its block of `rows`.
    feeder = ray.remote(plan_mod.Feeder).options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=False)).remote(
            str(manifest), index, rows, opts.raw_root)
    blocks = -(-index.todo // rows)
    # Input rows are built here, one tiny row per plan block (not ray.data.range, whose read tasks would
    # wait for CPUs that the encoder actors hold; from_arrow starts a remote task per block for metadata).
    # The driver keeps ~2.7 KB per input *block* for the whole run (its ref and metadata): one row a block
    # cost ~90 bytes per image at 32 images a plan block, the CPU default (issue 11). On CPU the fused
    # read+encode task takes `batch` rows anyway (Ray bundles input rows up to the encoder's batch_size),
    # so they come as one block: the same tasks, 1/batch of the blocks. With GPUs each read task is one
    # block, so one row a block (and 256 images a row) keeps every CPU reading; a small plan also keeps
    # a row a block while there are under four blocks per CPU, so every node's actor gets some (a
    # two-node test cluster saw one node take both of two blocks).
    per_block = 1 if gpus else max(1, min(batch, blocks // (4 * cpus)))
    ds = ray.data.from_items([{"id": i} for i in range(blocks)], override_num_blocks=-(-blocks // per_block))
    # One read task per input block (batch_size=None: no bundling); read_fed yields one plan block per row.
    ds = ds.map_batches(read_fed, batch_size=None, batch_format="numpy",
                        fn_kwargs={"feeder": feeder, "size": size, "allow_outside": opts.allow_outside_links},
                        **read_args)
    # Several calls run at once in each actor (threads; Ray queues 4x as many batches per actor):
    # the Encoder stages one batch while its compute thread encodes another. A compiled encoder gets
    # every call padded to `batch` rows (one shape: compiled once, CUDA graphs replayed).
    pool = ray.data.ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=inflight,
                                      enable_true_multi_threading=inflight > 1)
    fixed = batch if opts.compile else None
    return ds.map_batches(
        Encoder, batch_size=batch, batch_format="numpy", compute=pool,
        fn_constructor_args=(opts.vqgan, opts.ckpt, opts.trust_checkpoint, threads, opts.compile, load_model, fixed),
        **enc_args)


def read_rows(n: int, batch: int, cpus: int) -> int:
    """Images per read task: the encoder batch split in 2, 4, 8... until there are at least four read
    tasks per CPU (every core decodes, and the last wave is short), but not under 16 images (a task
    costs ~ms to schedule; an image ~3 ms to decode). Dividing the batch evenly lets the encoder
    gather whole read blocks into its batches."""
    rows = batch
    while rows > 16 and -(-n // rows) < 4 * cpus:
        rows //= 2
    return max(1, rows)


def read_fed(batch: dict, feeder, size: int, allow_outside: bool) -> Iterator[dict]:
    """Ray read task: for each row of its input block, the next plan block from the Feeder, read
    (reading.read_batch) and handed on before the next is asked for: a task holds one plan block's
    pixels, however many rows its block has."""
    import ray

    yielded = False
    for _ in batch["id"]:
        block = ray.get(feeder.next.remote())
        if block is not None:
            yielded = True
            yield read_batch(block, size, allow_outside)
    if not yielded:  # more rows than blocks (never planned so; kept safe): an empty block
        yield read_batch({k: np.array([], object) for k in plan_mod.BLOCK}, size, allow_outside)


class _Sink:
    """Driver side: buffer results, write a cache part and a ledger part every `part_rows` rows."""

    def __init__(self, cache: Path, identity: dict, part_rows: int):
        self.cache, self.identity, self.part_rows = cache, identity, part_rows
        self.ids, self.codes, self.failed = [], [], []
        self.encoded = self.ledgered = self.retried = self.outside = 0
        self.by_node: Counter = Counter()  # images read per node (Ray node id, or host without Ray)

    def add(self, batch: dict) -> None:
        self.retried += int(batch["retried"].sum())
        self.by_node.update(dict(zip(*np.unique(batch["node"].astype(str), return_counts=True))))
        # Links out of a dataset's folder read because the user allowed them: counted, never silent.
        self.outside += int(sum(o and s != REFUSED for o, s in zip(batch["outside"], batch["stage"])))
        for i, image_id in enumerate(batch["image_id"]):
            if batch["stage"][i] == OK:
                self.ids.append(str(image_id))
                self.codes.append(batch["codes"][i])
            else:
                self.failed.append({"image_id": str(image_id), "path": str(batch["path"][i]),
                                    "stage": str(batch["stage"][i]), "message": str(batch["message"][i])})
        if len(self.ids) + len(self.failed) >= self.part_rows:
            self.flush()

    def flush(self) -> None:
        if self.ids:
            cache_mod.write_part(self.cache / "codes",
                                 cache_mod.codes_table(self.ids, np.stack(self.codes), self.identity))
        ledger.append(self.cache, self.failed)
        self.encoded += len(self.ids)
        self.ledgered += len(self.failed)
        self.ids, self.codes, self.failed = [], [], []


def tokenize(manifest: Path, cache: Path, opts: Options, progress=None, load_model=None) -> dict:
    """Encode what the cache lacks; return the counts (unique images == cached + ledgered).

    `load_model` builds the VQGAN in the driver (for its identity and code grid) and in each encoder
    actor, with facecorpus.vqgan.load_vqgan's signature (the default); tests and benchmarks inject
    stand-ins here. It must pickle: Ray ships it to the actors."""
    from facecorpus.vqgan import load_vqgan

    if opts.engine not in ENGINES:
        raise ValueError(f"engine {opts.engine!r}: choose one of {', '.join(ENGINES)}")
    if opts.engine == "local" and opts.ray_address:
        raise ValueError("--ray-address joins a Ray cluster and --engine local runs without Ray: choose one")
    if opts.ray_runtime_env and not opts.ray_address:
        raise ValueError("--ray-runtime-env ships facecorpus to a cluster's workers: it needs --ray-address "
                         "(the Ray this process starts already imports it)")
    arrowpool.use_returning_pool()  # the driver streams the manifest and the cache: flat memory
    load_model = load_model or load_vqgan
    model = load_model(opts.vqgan, opts.ckpt, trust_checkpoint=opts.trust_checkpoint)
    identity, size = model.identity, model.code_grid.resolution
    del model  # the actors load their own
    cache = cache_mod.open_cache(Path(cache), identity, POLICY)
    index = plan_mod.scan(Path(manifest), cache)
    before = int(index.cached.sum())
    sink = _Sink(cache, identity, opts.part_rows)
    t0 = time.perf_counter()
    if index.todo:
        with _encoded(Path(manifest), index, opts, size, load_model) as batches:
            task = progress.add_task("tokenize", total=index.todo) if progress else None
            for batch in batches:
                sink.add(batch)
                if progress:
                    progress.advance(task, len(batch["image_id"]))
            sink.flush()
    return {**summarize(cache, index, before, sink, time.perf_counter() - t0, identity), "engine": opts.engine}


@contextlib.contextmanager
def _encoded(manifest: Path, index: plan_mod.Index, opts: Options, size: int, load_model):
    """The encoder's output batches, from Ray (joined or embedded) or from the local engine."""
    if opts.engine == "local":
        yield localengine.batches(manifest, index, opts, size, load_model, read_rows)
        return
    with ray_session(opts.ray_address, opts.ray_runtime_env):
        yield _dataset(manifest, index, opts, size, load_model).iter_batches(batch_size=None, batch_format="numpy")


def summarize(cache: Path, index: plan_mod.Index, before: int, sink: _Sink, seconds: float, identity: dict) -> dict:
    """The run's counts. The cache is streamed part by part into the plan's flags and only ledgered ids
    are looked up as strings, so no set of every image_id is built."""
    cached = plan_mod.mark_cached(index, cache)
    failures = ledger.current(cache)
    mine = digests.lookup(index.ids, digests.of([r["image_id"] for r in failures])) >= 0  # this manifest's
    failures = [r for r, m in zip(failures, mine) if m]
    by_stage = {s: sum(r["stage"] == s for r in failures) for s in ledger.STAGES}
    out = {"unique_images": len(index.ids), "cached_before": before, "encoded": sink.encoded,
           "ledgered_now": sink.ledgered, "encode_retried": sink.retried, "read_outside_links": sink.outside,
           "read_nodes": len(sink.by_node), "images_by_node": {str(k)[:12]: int(v) for k, v in sorted(sink.by_node.items())},
           "cached": cached, "ledgered": len(failures),
           **{f"ledgered_{s}": n for s, n in by_stage.items()}, "seconds": round(seconds, 2),
           "images_per_s": round(sink.encoded / seconds, 1) if seconds and sink.encoded else 0.0,
           "vqgan": identity["name"]}
    out["accounted"] = out["unique_images"] == out["cached"] + out["ledgered"]
    return out
