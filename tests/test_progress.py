"""The live progress line: rates against the limits in sync mode, batch states in batch mode."""

from __future__ import annotations
