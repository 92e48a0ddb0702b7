"""GPTFace's training data: shard samples of the chosen kinds -> GPTFaceBatcher batches, built in
the DataLoader workers, resumable at an exact position.

The readers, shard slices and data positions are Talk2Face's (trainer/batches.py): logical worker
`g` of `G` reads its own endless, seeded stream per kind, and the rank's data position is the number
of micro-batches it consumed. What differs is the batch: one task, no balancing of four; records
of `data.gptface_records` (captions, attribute texts, or half of each in every micro-batch).

The masks and the ITM pairing are functions of (seed, optimizer step, position in the global batch)
(trainer/gptface_masking.py). This rank's micro-batch number `n` gives both: step `n // accum`, and
micro-step `n % accum`, whose rows sit at positions `((micro x world) + rank) x micro_batch + i` of
the step's global batch. So a resumed run, which continues at the checkpointed `n`, draws exactly
what the uninterrupted run drew, without storing any mask state.
"""

from __future__ import annotations

from facecorpus.records import KINDS
from facecorpus.shards import format as fmt
from facecorpus.shards.stream import ShardSequence

from .batches import ShardBatches, StreamSpec, training_index
from .config import RunConfig
from .gptface_batch import GPTFaceBatcher, Layout

RECORD_KINDS = {"caption": ("caption",), "attributes": ("attributes",), "both": ("caption", "attributes")}


def layout(cfg: RunConfig) -> Layout:
    return Layout(cfg.model.grid, cfg.model.max_text)


class GPTFaceStream(ShardBatches):
    """Endless GPTFaceBatch micro-batches of one rank (`spec`: its readers and data position)."""

    def __init__(self, spec: StreamSpec, cfg: RunConfig, accum: int):
        super().__init__()
        self.spec, self.accum = spec, accum
        self.kinds = RECORD_KINDS[cfg.data.gptface_records]
        why = f"data.gptface_records={cfg.data.gptface_records!r} trains on them"
        self.index = training_index(spec.shards, spec.split, self.kinds, why)
        self.batcher = GPTFaceBatcher(layout(cfg), cfg.masking, cfg.train.seed, cfg.data.pad_to_multiple)

    def _batches(self):
        sp = self.spec
        W, logical, j, g, G = self.reader()
        per_kind = sp.micro_batch // len(self.kinds)
        streams = {k: ShardSequence(self.index, self.index.select(sp.split, k), g, G, (sp.seed, KINDS.index(k)),
                                    sp.shuffle_shards, sp.check_sha256).samples(j * per_kind)
                   for k in self.kinds}
        while True:
            step, micro = divmod(j * W + logical, self.accum)
            first = (micro * sp.world + sp.rank) * sp.micro_batch
            samples = [next(streams[k]) for k in self.kinds for _ in range(per_kind)]
            try:
                batch = self.batcher.build([_record(s) for s in samples], step, first)
            except ValueError as exc:   # a record the batcher cannot use: the data's fault, named by shard and key
                raise fmt.FormatError(f"{_shards_of(samples)}: sample {exc}") from None
            yield batch
            j += 1


def _record(s: fmt.Sample) -> dict:
    return {"key": s.key, "image_id": s.image_id, "codes": s.codes, "text": s.text, "kind": s.kind}


def _shards_of(samples: list[fmt.Sample]) -> str:
    shards = sorted({s.shard for s in samples})
    return ", ".join(shards[:3]) + (f" (and {len(shards) - 3} more shards)" if len(shards) > 3 else "")
