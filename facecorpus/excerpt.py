"""Short quotes of user data for messages, notes and ledger rows.

A raw file can hold anything, including a 100 MB line: echoed whole, it became 106 MB of terminal
output and a 100 MB ledger row. Every message that quotes what it read goes through `quote` (one
value) or `shorten` (a finished message, e.g. an exception's text), so none carries more than a
couple of hundred characters of the input, and each says how long the original was.
"""

from __future__ import annotations

QUOTE_CHARS = 200     # of one quoted value
MESSAGE_CHARS = 500   # of a whole message: a few quoted values and the words around them


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)`, or for a long value the repr of its first `limit` characters with the full length said."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(value)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def shorten(message: str, limit: int = MESSAGE_CHARS) -> str:
    """`message` cut to `limit` characters, saying how much was left out."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}... ({len(message) - limit:,} more characters)"
