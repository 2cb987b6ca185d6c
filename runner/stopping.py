"""Why a run stops before its work is done, shared by both executors.

A run stops early on a signal (``interrupt``, then ``abort`` on a second one), at ``--deadline``, when another
process takes the run over, or for a reason an executor finds (quota, a refused key, the budget, the daily limit,
a full disk). The first reason wins and is what the run reports; every later one is dropped. What a stop means for
the work differs by mode (the sync executor lets what is in flight finish; batches keep running on the server),
so each executor says so in ``after``, and wakes or cancels what it waits on through ``on_stop`` and the scope
that ``abort`` cancels.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from runner.errors import DeadlineReached, Interrupted, RunnerError, TakenOver
from runner.store import Store

__all__ = ["Stops"]


class Stops:
    """The first reason a run stops early, and the handles that act on it.

    ``after`` ends every message the user reads, e.g. ``"re-run the same command to resume"``; ``on_stop`` wakes
    the executor's loop when a reason is set from outside it (a signal); ``scope`` (set while the work runs) is what
    ``abort`` and a takeover cancel."""

    def __init__(self, after: str, *, deadline: float | None = None, on_stop: Callable[[], None] | None = None) -> None:
        self.after, self.deadline = after, deadline
        self.reason: RunnerError | None = None
        self.on_stop = on_stop
        self.scope: anyio.CancelScope | None = None

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def set(self, reason: RunnerError) -> None:
        """Stop for ``reason`` unless the run is already stopping for another."""
        if self.reason is None:
            self.reason = reason
        if self.on_stop is not None:
            self.on_stop()

    def overrule(self, reason: RunnerError) -> None:
        """Stop for ``reason`` whatever the run was stopping for: nothing else can be done (the disk is full)."""
        if type(self.reason) is not type(reason):
            self.reason = None
        self.set(reason)

    def interrupt(self, reason: str) -> None:
        """A first SIGINT or SIGTERM: stop starting new work."""
        self.set(Interrupted(f"{reason}: stopped; {self.after}"))

    def abort(self) -> None:
        """A second signal: stop at once, cancelling the work under way."""
        self.interrupt("interrupted twice")
        self.cancel()

    def cancel(self) -> None:
        if self.scope is not None:
            self.scope.cancel()

    def past_deadline(self, now: float) -> bool:
        """Whether ``--deadline`` has passed at ``now`` (then the run stops for it)."""
        if self.deadline is None or now < self.deadline:
            return False
        self.set(DeadlineReached(f"deadline reached with work still to do; {self.after}"))
        return True

    def still_owned(self, store: Store, run: str, owner: str, lease_seconds: float) -> bool:
        """Renew this process's lease on the run; if another process took it over, stop at once and say who."""
        if store.runs.heartbeat(run, owner, lease_seconds):
            return True
        other, _ = store.runs.owner_of(run)
        self.set(TakenOver(f"another process ({other}) took this run over: this one stopped"))
        self.cancel()
        return False
