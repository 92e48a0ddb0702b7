"""The key-value text protocol: labels <-> `<dataset> <attribute>: <value>; <attribute>: <value>`.

Talk2Face section 3.2 turns every label set into one sentence so a language model can read and
write it. The protocol must parse back losslessly (evaluation reads the model's answers with it), so
values are restricted to what survives the round trip: booleans as `true`/`false`, integers as plain
digits, everything else as lower-case words without `;` or `:`.
"""

from __future__ import annotations

import functools
import json
import re

from facecorpus.excerpt import quote

Value = bool | int | str
_INT = re.compile(r"-?\d+")
_NAME = re.compile(r"[a-z0-9]+(?: [a-z0-9]+)*")


class ProtocolError(ValueError):
    """A label set that cannot be written, or a text that cannot be read, in the protocol."""


def attribute_name(raw: str) -> str:
    """`Wearing_Hat` -> `wearing hat`; `5_o_Clock_Shadow` -> `5 o clock shadow`."""
    return " ".join(re.split(r"[_\s]+", raw.strip())).lower()


def format_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _format_words(value)
    raise ProtocolError(f"value {quote(value)} is {type(value).__name__}; use bool, int or str")


@functools.lru_cache(maxsize=65536)  # label values repeat (male, female, 10-19, ...): check each once
def _format_words(value: str) -> str:
    text = " ".join(value.split()).lower()
    if not text or ";" in text or ":" in text:
        raise ProtocolError(f"value {quote(value)} is empty or holds ';' or ':'")
    if text in ("true", "false") or _INT.fullmatch(text):
        raise ProtocolError(f"value {quote(value)} would read back as a bool or an int")
    return text


@functools.lru_cache(maxsize=4096)
def _name_ok(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def parse_value(text: str) -> Value:
    if text == "true":
        return True
    if text == "false":
        return False
    if _INT.fullmatch(text):
        return int(text)
    return text


def to_text(dataset: str, labels: dict[str, Value]) -> str:
    """`to_text("cacd", {"age": 25})` -> `cacd age: 25`. Order follows the dict."""
    return text_and_json(dataset, labels)[0]


def text_and_json(dataset: str, labels: dict[str, Value]) -> tuple[str, str]:
    """(`to_text`, the labels as JSON), cached: label sets repeat across records (CACD has ~80 ages)."""
    # The types are part of the key because True == 1 would otherwise share an entry.
    key = (dataset, tuple(labels.items()), tuple(map(type, labels.values())))
    try:
        return _cached(key)
    except TypeError:  # an unhashable value: the plain path names the problem
        return _to_text(dataset, labels), json.dumps(labels, ensure_ascii=False)


@functools.lru_cache(maxsize=65536)
def _cached(key) -> tuple[str, str]:
    dataset, items, _ = key
    labels = dict(items)
    return _to_text(dataset, labels), json.dumps(labels, ensure_ascii=False)


def _to_text(dataset: str, labels: dict[str, Value]) -> str:
    if not labels:
        raise ProtocolError(f"{dataset}: an attribute record needs at least one label")
    parts = []
    for name, value in labels.items():
        if not _name_ok(name):
            raise ProtocolError(f"attribute name {quote(name)} must be lower-case words (see attribute_name)")
        parts.append(f"{name}: {format_value(value)}")
    return f"{dataset} " + "; ".join(parts)


def split_pairs(body: str) -> list[tuple[str, str]]:
    """`age: 25; gender: male` -> [("age", "25"), ("gender", "male")]; raises on a malformed pair."""
    pairs = []
    for part in body.split(";"):
        name, sep, value = part.partition(":")
        if not sep or not name.strip() or not value.strip():
            raise ProtocolError(f"malformed pair {quote(part.strip())} in {quote(body)}")
        pairs.append((name.strip(), value.strip()))
    return pairs


def from_text(text: str) -> tuple[str, dict[str, Value]]:
    """Inverse of `to_text`: `cacd age: 25` -> ("cacd", {"age": 25})."""
    dataset, sep, body = text.strip().partition(" ")
    if not sep or ":" in dataset:
        raise ProtocolError(f"text {quote(text)} does not start with a dataset name")
    return dataset, {name: parse_value(value) for name, value in split_pairs(body)}
