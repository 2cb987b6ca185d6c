"""The sync executor and its parts: executor (the loop), inflight (how many may be unanswered), daily (the day's
requests, for RPD), replies (what a reply means), recorder (outcomes to the store), tally (what the run has done,
for progress)."""

from runner.sync.executor import SyncExecutor

__all__ = ["SyncExecutor"]
