"""Progress on stderr: done/total, req/min and tok/min against the limits, dollars spent, ETA. Off when not a TTY."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import anyio
from rich.console import Console
from rich.live import Live
from rich.text import Text

from runner.durations import format_go
from runner.money import fmt_usd

__all__ = ["Progress", "Snapshot", "render"]


@dataclass(frozen=True)
class Snapshot:
    """Live figures of a run, as an executor sees them: for the progress line and the log."""

    done: int
    failed: int
    total: int
    in_flight: int
    requests_per_min: float
    tokens_per_min: float
    rpm_limit: int | None
    tpm_limit: int | None
    spend: int  # picodollars
    eta_seconds: float | None
    paused_for: float
    notices: tuple[str, ...]
    detail: str = ""
    mode: str = "sync"


def _rate(value: float, limit: int | None) -> str:
    shown = f"{value / 1000:,.1f}k" if value >= 10_000 else f"{value:,.0f}"
    if not limit:
        return shown
    return f"{shown} of {limit / 1000:,.0f}k" if limit >= 10_000 else f"{shown} of {limit:,}"


def render(s: Snapshot) -> Text:
    finished = s.done + s.failed
    parts = [f"{finished:,}/{s.total:,} done"]
    if s.failed:
        parts.append(f"{s.failed:,} failed")
    if s.mode == "batch":
        parts += [f"{s.in_flight:,} in batches", fmt_usd(s.spend)]
    else:
        parts += [
            f"{s.in_flight:,} in flight",
            f"{_rate(s.requests_per_min, s.rpm_limit)} req/min",
            f"{_rate(s.tokens_per_min, s.tpm_limit)} tok/min",
            fmt_usd(s.spend),
            f"ETA {format_go(round(s.eta_seconds))}" if s.eta_seconds is not None else "ETA -",
        ]
    if s.paused_for > 0:
        parts.append(f"paused {s.paused_for:.1f}s (429)")
    if s.detail:
        parts.append(s.detail)
    return Text(" · ".join(parts))


class Progress:
    """``async with Progress(snapshot)``: refreshes a live line on stderr 4 times a second when it is a TTY."""

    def __init__(self, snapshot: Callable[[], Snapshot], enabled: bool | None = None) -> None:
        self.snapshot = snapshot
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.console = Console(stderr=True)
        self.live: Live | None = None
        self.scope: anyio.CancelScope | None = None
        self.seen_notices = 0

    async def __aenter__(self) -> Progress:
        if self.enabled:
            self.live = Live(Text(""), console=self.console, transient=False, auto_refresh=False)
            self.live.start()
        return self

    async def tick(self) -> None:
        while True:
            self.refresh()
            await anyio.sleep(0.25)

    def refresh(self) -> None:
        if self.live is None:
            return
        s = self.snapshot()
        for notice in s.notices[self.seen_notices :]:
            self.console.print(f"[yellow]note:[/] {notice}")
        self.seen_notices = len(s.notices)
        self.live.update(render(s), refresh=True)

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.live is not None:
            self.refresh()
            self.live.stop()
