"""What the converter tests share: a failed download saved under a label file's name, in-place edits."""

from __future__ import annotations

from pathlib import Path

# What Google Drive serves instead of a large file; saved under the label file's name it must be refused.
HTML = b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>\n"


def edit(path: Path, change) -> None:
    """Rewrite a text file through `change(text) -> text` (bytes in and out: line endings stay)."""
    path.write_bytes(change(path.read_bytes().decode()).encode())
