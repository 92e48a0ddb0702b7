"""The `facecorpus` command line.

Each command lives beside the code it drives and is imported only when it runs, so
`facecorpus --help` answers at once and a user converting annotations never waits for torch or Ray.
"""

from __future__ import annotations

import importlib
import sys

import click

from facecorpus import arrowpool

# Before any command imports pyarrow: Arrow's C++ code reads its pool from the environment once.
arrowpool.choose_for_process()

# name -> "module:function" (a click.Command) and its one-line help, in pipeline order.
COMMANDS = {
    "prepare": ("facecorpus.converters.prepare_cli:prepare", "Web sets' URL lists for img2dataset (LAION-Face from FaRL's ids)."),
    "convert": ("facecorpus.converters.cli:convert", "Raw dataset downloads -> Parquet manifest of face-text records."),
    "report": ("facecorpus.reports.cli:report", "Label statistics of a manifest (and shards): report.json + report.html."),
    "tokenize": ("facecorpus.shards.cli:tokenize", "Encode every unique face once with a VQGAN on Ray into the token cache."),
    "shard": ("facecorpus.shards.cli:shard", "Join records with cached codes, shuffle, write WebDataset shards + index.json."),
    "verify": ("facecorpus.shards.cli:verify", "Re-read shards: counts, sha256 and that every sample decodes."),
    "train": ("facecorpus.trainer.train_cli:train", "Train the Talk2Face prefix-LM on shards (alone or under torchrun)."),
    "train-vqgan": ("facecorpus.trainer.vqgan_cli:train_vqgan", "Train a VQGAN tokenizer on a manifest's faces (alone or under torchrun)."),
    "generate": ("facecorpus.trainer.generate_cli:generate", "Sample faces, captions or attribute values from a checkpoint."),
    "evaluate": ("facecorpus.trainer.evaluate_cli:evaluate", "Evaluate a checkpoint with the paper's protocols."),
    "demo": ("facecorpus.demo:demo", "The whole job at toy scale on bundled sample data, no downloads."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (click docs, "Lazily Loading Subcommands")."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        # Help text from the table above, so `--help` needs no imports.
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="facecorpus")
def main():
    """facecorpus: rebuild the Talk2Face face-text corpus from raw downloads, tokenize it once,
    shard it, train the prefix-LM on it, and generate and evaluate.

    \b
    The pipeline, one command per stage:
      convert -> report -> tokenize -> shard -> verify -> train -> generate / evaluate
    `facecorpus demo OUT` runs all of it on generated sample data. `facecorpus COMMAND --help`
    explains each command.

    Folders may be object-store URIs (s3://bucket/path, gs://..., file://...), with credentials and
    endpoint from the standard environment (AWS_ENDPOINT_URL, ...; docs/design.md, "Object storage").
    """
    click.get_current_context().call_on_close(_forget_staging)


def _forget_staging() -> None:
    # Each command stages remote folders afresh: a long-lived caller (tests, a notebook) never reads
    # the mirror of an earlier command after the remote changed. storage is imported only if used.
    if "facecorpus.storage" in sys.modules:
        sys.modules["facecorpus.storage"].forget()


if __name__ == "__main__":  # `python -m facecorpus.cli ...`, e.g. under `torchrun -m`
    main()
