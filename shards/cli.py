"""Click commands `tokenize`, `shard` and `verify` (registered lazily by facecorpus/cli.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from facecorpus import storage

# A folder that may be a URI (s3://bucket/path, gs://..., file://...): checked when staged (facecorpus.storage).
LOCATION = "PATH|URI"


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


def table(title: str, items: dict) -> Table:
    t = Table(title=title)
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in items.items():
        if not isinstance(v, dict):
            t.add_row(k, str(v))
    return t


def _json_object(value: str | None, option: str) -> dict | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc})", param_hint=option) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object such as '{\"py_modules\": [...]}'", param_hint=option)
    return parsed


@click.command()
@click.argument("manifest", metavar="MANIFEST", callback=storage.fetch_param)
@click.option("--vqgan", "vqgan", default="tiny-f16", show_default=True,
              help="Preset (tiny-f16: bundled small VQGAN; ffhq-f16: Talk2Face's, needs --ckpt) or a "
                   "taming config file (.yaml/.json; VQModel or Net2NetTransformer).")
@click.option("--ckpt", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="VQGAN weights: a VQModel checkpoint or the Net2NetTransformer one (VQGAN under first_stage_model.).")
@click.option("--cache", metavar=LOCATION, required=True,
              help="Token cache folder (a path or URI); grows run by run, a rerun resumes.")
@click.option("--ray-address", envvar="RAY_ADDRESS", show_envvar=True,
              help="Join the running Ray cluster at HOST:PORT (the head's GCS port, 6379 for `ray start --head`); "
                   "default: Ray inside this process, ended with it. A cluster with token authentication "
                   "(Ray >= 2.59's default once a token exists) needs RAY_AUTH_MODE=token and its token here "
                   "(~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN).")
@click.option("--ray-runtime-env", callback=lambda _ctx, _p, v: _json_object(v, "--ray-runtime-env"),
              help="With --ray-address: Ray's runtime environment for this run's workers, as JSON, when the "
                   "nodes lack facecorpus, e.g. '{\"py_modules\": [\"dist/facecorpus-0.1.0-py3-none-any.whl\"]}' "
                   "(docs/cluster.md). Every node's workers are checked to import facecorpus before any image is read.")
@click.option("--allow-outside-links", is_flag=True,
              help="Read images whose path resolves (through a symlink) outside their dataset's raw folder; "
                   "by default they are refused and ledgered (stage `refused`). Either way they are counted.")
@click.option("--compile", "compile_", is_flag=False, flag_value="default", default=None,
              type=click.Choice(["default", "reduce-overhead", "max-autotune"]),
              help="GPUs: torch.compile the encoder, in this mode if given (reduce-overhead adds CUDA graphs; about "
                   "25 s or more per actor; doubled an H100's encode rate, worth it past ~50k images).")
@click.option("--inflight", type=click.IntRange(min=1),
              help="Batches each encoder actor holds at once (default 3 with GPUs: one encoding while the next is "
                   "copied to the GPU; 1 on CPU).")
@click.option("--engine", type=click.Choice(["ray", "local"]), default="ray", show_default=True,
              help="local: the same read and encode stages without Ray, on this machine alone (processes read, "
                   "this process encodes); for a machine without Ray. --ray-address needs ray.")
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow a legacy Lightning checkpoint that pickles objects besides tensors (runs its pickled code).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per encoder batch (default 256 per GPU, 32 on CPU).")
@click.option("--actors", type=click.IntRange(min=1), help="Encoder actors (default: one per GPU, else CPUs / --cpus-per-actor).")
@click.option("--cpus-per-actor", type=click.IntRange(min=1), help="CPU only: threads per encoder actor (default min(4, CPUs)).")
@click.option("--part-rows", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Images per cache part written: the most a killed run loses.")
@click.option("--raw-root", metavar=LOCATION, callback=storage.location_param,
              help="Where the raw dataset folders are now (RAW_ROOT/celeba, ...), if they moved since `convert`.")
def tokenize(manifest, vqgan, ckpt, cache, ray_address, ray_runtime_env, allow_outside_links, compile_, inflight, engine,
             trust_checkpoint, batch_size, actors, cpus_per_actor, part_rows, raw_root):
    """Encode every unique image of MANIFEST once with a VQGAN into the token cache.

    Images already in --cache are skipped, so a killed run resumes where it stopped. Ray tasks read,
    decode and preprocess (facecorpus.preprocess.POLICY: EXIF orientation, 16-bit and float pixels
    scaled, alpha over white, resized to the VQGAN's resolution); an actor pool encodes (one GPU per
    actor when there are GPUs, the encoder's weights in bf16 and the code search in float32; float32
    throughout on CPU). Images that fail (missing, not a regular file, outside their dataset folder,
    empty, corrupt, no faithful picture, encoder error) go to CACHE/ledger with the stage and reason;
    the run goes on and the counts add up.

    MANIFEST, --cache and --raw-root may be URIs (s3://, gs://, file://): remote folders are copied to
    a scratch folder (FACECORPUS_SCRATCH, default the system's temp folder) and the cache's new
    parts are published back as they are written (docs/design.md, "Object storage")."""
    from facecorpus.shards.tokenization import Options
    from facecorpus.shards.tokenization import tokenize as run
    from facecorpus.vqgan import VQGANError

    console = Console(stderr=True)
    opts = Options(vqgan=str(vqgan), ckpt=str(ckpt) if ckpt else None, trust_checkpoint=trust_checkpoint, compile=compile_ or "",
                   inflight=inflight, engine=engine, ray_address=ray_address,
                   ray_runtime_env=ray_runtime_env, batch_size=batch_size, actors=actors,
                   cpus_per_actor=cpus_per_actor,
                   part_rows=part_rows, allow_outside_links=allow_outside_links, raw_root=raw_root)
    try:
        with storage.staged(cache, first=("identity.json",)) as cache_dir:
            with progress_bar(console) as progress:
                summary = run(manifest, cache_dir, opts, progress)
    except (VQGANError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(table(f"tokenize -> {cache}", summary))
    _print_ledger(console, cache_dir)
    if not summary["accounted"]:
        raise click.ClickException("unique images != cached + ledgered: the run was incomplete")


def _print_ledger(console: Console, cache: Path, limit: int = 10) -> None:
    from facecorpus.shards.ledger import current

    rows = current(cache)  # looks up only the ledgered ids in the cache, never a set of all of them
    if not rows:
        return
    t = Table(title=f"ledger: {len(rows)} images not tokenized (first {min(limit, len(rows))}; all in {cache}/ledger)")
    for col in ("image_id", "stage", "message", "path"):
        t.add_column(col, overflow="fold")
    for r in rows[:limit]:
        t.add_row(r["image_id"], r["stage"], r["message"], r["path"])
    console.print(t)


@click.command()
@click.argument("manifest", metavar="MANIFEST", callback=storage.fetch_param)
@click.option("--cache", metavar=LOCATION, required=True, callback=storage.fetch_param,
              help="Token cache written by `facecorpus tokenize` for this manifest (a path or URI).")
@click.option("--out", metavar=LOCATION, required=True,
              help="Shard folder: <split>/<kind>-NNNNNN.tar + index.json (a path or URI; index.json published last).")
@click.option("--samples-per-shard", type=int, default=1000, show_default=True, help="Samples per tar (the last may hold fewer).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the global shuffle (recorded in index.json).")
def shard(manifest, cache, out, samples_per_shard, seed):
    """Join MANIFEST's records with their cached codes, shuffle globally, write WebDataset shards.

    Same inputs and seed -> byte-identical tars. Records whose image is in the ledger are skipped and
    counted (counts.skipped_ledgered_image). index.json is written last."""
    from facecorpus.shards.writer import shard as run

    console = Console(stderr=True)
    try:
        with storage.staged(out, last=("index.json",)) as out_dir, progress_bar(console) as progress:
            counts = run(manifest, cache, out_dir, samples_per_shard, seed, progress)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(table(f"shard -> {out}", counts))


@click.command()
@click.argument("shards", metavar="SHARDS", callback=storage.fetch_param)
def verify(shards):
    """Re-read every shard listed in SHARDS/index.json: paths inside SHARDS, bytes, sha256, sample
    counts, unique keys, and that every sample holds exactly its npy, json and txt and they decode.
    Exits 1 and lists the problems if any. SHARDS may be a URI (s3://, gs://, file://)."""
    from facecorpus.shards.verify import verify as run

    console = Console(stderr=True)
    try:
        with progress_bar(console) as progress:
            report = run(shards, progress)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(table(f"verify {shards}", {k: v for k, v in report.items() if k != "problems"} |
                        {"problems": len(report["problems"])}))
    for p in report["problems"][:50]:
        # Unwrapped, so paths can be copied; no markup: problems quote names read from the shards.
        console.print(p, style="red", markup=False, highlight=False, soft_wrap=True)
    if report["problems"]:
        sys.exit(1)
