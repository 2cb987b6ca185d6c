"""Log lines that scan, on stderr, with ``-v``: one event per line, terminal or not (CI, nohup, systemd).

    12:00:01 req-0042 -> 200 1.2s
    12:00:01 req-0043 retry in 3.0s (503, 2/6)
    12:00:02 gate gpt-4.1-mini paused 1.1s (429 tokens)
    12:00:05 batch_ab12 submitted: 50,000 requests (chunk 3)

Without ``-v`` nothing is logged; the progress line (terminals only) and the closing summary still show.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure", "log"]

log = logging.getLogger("runner")


def configure(verbose: bool) -> None:
    """Send ``log`` to stderr when ``verbose``; otherwise keep it quiet."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.propagate = False
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    else:
        log.setLevel(logging.WARNING)
