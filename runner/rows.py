"""A request as ingest stores it: a plain tuple, made by the million and passed between processes.

Its own module, free of the store's dependencies, so the parser processes (``runner.parsers``) start light.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["RequestRow", "RowValues"]

RowValues = tuple[str, int, str, str, str, str, int, int, int]  # a RequestRow's values, in its order


class RequestRow(NamedTuple):
    """A request as ingest stores it (a tuple: millions are made at ingest)."""

    custom_id: str
    line: int
    endpoint: str
    model: str
    body: str
    body_hash: str
    prompt_tokens: int
    output_tokens: int
    n: int
