"""Which allocator Arrow's buffers come from in a process that streams a corpus (tokenize, shard).

pyarrow's default pool on Linux is mimalloc, which keeps the pages of freed buffers for reuse rather
than giving them back, and keeps more of them the more batches a process streams: reading a manifest
a batch at a time left the process ~32 MB bigger for 15,000 records and ~80 MB for 600,000, where the
system allocator (glibc malloc, which gives big buffers back to the kernel when they are freed) left
~5 MB and ~18 MB, the latter flat from 150,000 records on. So `tokenize` and `shard` switch the
process to the system pool (issue 11: the driver bounded by a batch, not by the corpus; figures in
docs/design.md, "Memory stays flat"). A user who names a pool in Arrow's own ARROW_DEFAULT_MEMORY_POOL
keeps it.
"""

from __future__ import annotations

import os

import pyarrow as pa

BACKEND = "system"
ENV = "ARROW_DEFAULT_MEMORY_POOL"  # Arrow's own switch, read when pyarrow starts


def use_returning_pool() -> str:
    """Make the system pool Arrow's default in this process, unless the user chose one through
    ARROW_DEFAULT_MEMORY_POOL; the backend now in use. Buffers already allocated stay valid: each
    holds a reference to the pool it came from."""
    if not os.environ.get(ENV):
        pa.set_memory_pool(pa.system_memory_pool())
    return pa.default_memory_pool().backend_name
