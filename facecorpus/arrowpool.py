"""Which allocator Arrow's buffers come from in a process that streams a corpus (tokenize, shard).

pyarrow's default pool on Linux is mimalloc, which keeps the pages of freed buffers for reuse rather
than giving them back (and backs them with transparent huge pages), and keeps more of them the longer
a process streams: reading a manifest a batch at a time left a process ~32 MB bigger for 15,000
records and ~80 MB for 600,000, where the system allocator (glibc malloc, which gives big buffers
back to the kernel when they are freed) left ~5 MB and ~18 MB, the latter flat from 150,000 records
on; in tokenize's driver, mimalloc's region grew ~20 MB (34 MB of huge pages) over 72,000 images.
Issue 11: the driver bounded by a batch, not by the corpus (docs/design.md, "Memory stays flat").

Arrow's C++ code (Parquet, IPC, Ray Data's conversions) takes the pool that ARROW_DEFAULT_MEMORY_POOL
names when pyarrow starts; pyarrow's `set_memory_pool` changes only the pool its Python functions
default to. So the `facecorpus` command names the system pool in the environment before anything
imports pyarrow (`choose_for_process`; Ray's workers inherit it), and `tokenize`/`shard` called as
functions switch pyarrow's Python default (`use_returning_pool`). A pool the user names is kept.
"""

from __future__ import annotations

import os

BACKEND = "system"
ENV = "ARROW_DEFAULT_MEMORY_POOL"  # Arrow's own switch, read when pyarrow starts


def choose_for_process() -> None:
    """Name the system pool for this process and its children unless the user named one; effective
    for Arrow's C++ code only if pyarrow is not imported yet (the CLI calls this first)."""
    os.environ.setdefault(ENV, BACKEND)


def use_returning_pool() -> str:
    """Make the system pool pyarrow's default in this process, unless the user chose one through
    ARROW_DEFAULT_MEMORY_POOL; the backend now in use. Buffers already allocated stay valid: each
    holds a reference to the pool it came from."""
    import pyarrow as pa

    if os.environ.get(ENV, BACKEND) == BACKEND:
        pa.set_memory_pool(pa.system_memory_pool())
    return pa.default_memory_pool().backend_name
