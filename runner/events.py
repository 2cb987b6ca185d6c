"""What a run says as it goes (lines refused at ingest, failed requests retried, answers reused, the auto mode's
decision, a signal received): lines handed to a ``Say`` callback. The command prints them on stderr
(``to_stderr``); the Python API is silent (``silent``) unless given a callback. Nothing below the CLI prints."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["Say", "silent", "to_stderr"]

Say = Callable[[str], None]


def silent(line: str) -> None:
    """Say nothing (the Python API's default)."""


def to_stderr(line: str) -> None:
    """The command's way: one line on stderr."""
    print(line, file=sys.stderr)
