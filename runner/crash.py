"""Named crash points, for the crash harness (``bench/crash.py``) and the kill -9 tests.

``RUNNER_CRASH_AT=name`` kills the process (SIGKILL: no clean-up, as a power cut) the first time it passes the
point ``name``; ``name@N`` the N-th time. The variable is read when the process starts; without it a crash point
costs one comparison.

Sync: ``sending`` (claimed and about to send), ``answered`` (an answer came, not yet recorded), ``recorded``
(answers just committed). Batch: ``after_upload``, ``after_create``, ``polling``, ``downloading``, ``recording``.
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "crash_point"]

POINTS = ("sending", "answered", "recorded", "after_upload", "after_create", "polling", "downloading", "recording")
_passed: dict[str, int] = {}
_WANTED = os.environ.get("RUNNER_CRASH_AT", "")


def crash_point(name: str) -> None:
    """Die here if ``RUNNER_CRASH_AT`` names this point (and its count is reached)."""
    if not _WANTED or not _WANTED.startswith(name):
        return
    point, _, nth = _WANTED.partition("@")
    if point != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
