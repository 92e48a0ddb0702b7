"""Checks on a command's result shared by the CLI tests."""

from __future__ import annotations


def clean_failure(res, *expected: str) -> None:
    """The CLI stopped with one clear message: click's own exit (no exception escaped), no traceback."""
    assert res.exit_code not in (0, None) and isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output
    for text in expected:
        assert text in res.output, res.output
