"""The Talk2Face vocabulary: BERT uncased WordPiece (30,522 ids) followed by one id per VQGAN code.

The image part's size is the VQGAN's codebook (`facecorpus.codes.CodeGrid.codebook_size`: 1,024 for
Talk2Face's tokenizer, 31,546 ids in all), so the layout is a function of it, never a constant here.

The WordPiece file ships with the package (no download at run time). It is the bert-base-uncased
vocabulary as redistributed with all-MiniLM-L6-v2 (Apache-2.0); its sha256 is pinned below and in
the tests, and goes into every shard index so a trainer can refuse shards made with another one.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

VOCAB_FILE = "bert-base-uncased-vocab.txt"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
TEXT_VOCAB_SIZE = 30522
IMAGE_OFFSET = TEXT_VOCAB_SIZE          # image code c has id 30522 + c, whatever the codebook size
# The first real WordPiece: ids 1..99 are [unused0..98], 100..103 [UNK] [CLS] [SEP] [MASK] and
# 104..998 [unused99..993]. A model asked for text may produce only ids from here on.
FIRST_WORDPIECE = 999


def vocab_size(codebook_size: int) -> int:
    """Ids of a model over this codebook: the WordPiece ids, then one per code (1,024 codes: 31,546)."""
    return TEXT_VOCAB_SIZE + codebook_size


def image_rows(codebook_size: int) -> slice:
    """The ids of the image codes, as a slice of the vocabulary."""
    return slice(IMAGE_OFFSET, vocab_size(codebook_size))


def vocab_path() -> str:
    return str(resources.files("facecorpus") / "data" / VOCAB_FILE)


def vocab_sha256() -> str:
    return hashlib.sha256(resources.files("facecorpus").joinpath("data", VOCAB_FILE).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def wordpiece():
    """The BERT uncased WordPiece tokenizer, with no padding, truncation or special tokens added."""
    from tokenizers import BertWordPieceTokenizer

    if vocab_sha256() != VOCAB_SHA256:
        raise RuntimeError(f"{vocab_path()}: sha256 differs from the pinned BERT uncased vocabulary")
    tok = BertWordPieceTokenizer(vocab_path(), lowercase=True)
    tok.no_padding()
    tok.no_truncation()
    return tok


def encode_text(text: str) -> list[int]:
    """WordPiece ids of `text` without [CLS]/[SEP]."""
    return wordpiece().encode(text, add_special_tokens=False).ids


def encode_batch(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in wordpiece().encode_batch(texts, add_special_tokens=False)]


def decode_text(ids: list[int]) -> str:
    """Text of WordPiece ids; image ids and special tokens are dropped, '##' pieces are joined."""
    text_ids = [i for i in ids if 0 <= i < TEXT_VOCAB_SIZE]
    return wordpiece().decode(text_ids, skip_special_tokens=True)


def image_ids(codes) -> list[int]:
    return [IMAGE_OFFSET + int(c) for c in codes]
