"""facecorpus: the Talk2Face face-text corpus, rebuilt from raw downloads."""

__version__ = "0.1.0"
