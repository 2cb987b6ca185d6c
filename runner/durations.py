"""Go-style durations, as OpenAI writes them in ``x-ratelimit-reset-*`` (``1s``, ``6m0s``, ``913ms``,
``19m45.394s``) and as users write deadlines (``90s``, ``2h``, ``1h30m``)."""

from __future__ import annotations

import re

__all__ = ["format_go", "parse_duration"]

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (``1m30.5s``); a bare number is seconds. Raises ValueError when unreadable."""
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    try:
        return float(value)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value):
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 1m30s, 2h, 120ms)")
    return total


def format_go(seconds: float) -> str:
    """Go's ``time.Duration.String`` rounded to the millisecond: ``913ms``, ``1.146s``, ``6m0s``, ``1h2m3s``."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
