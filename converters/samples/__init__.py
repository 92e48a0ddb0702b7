"""Tiny raw trees in each dataset's real layout, for the converter tests and `facecorpus demo`.

One module per dataset, each with `write(root: Path, seed: int = 0) -> dict` that writes the
dataset's annotation files (and small generated face images) under `root` exactly as the real
download lays them out, and returns what a correct conversion must give (per-split record counts,
and anything else its tests assert).
"""
