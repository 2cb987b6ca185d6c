"""The organisation's batch queue per model: its limit (configured, or lower as the server shows), the room left
in it for this run's next wave, and what the run's batches are doing, for the progress line.

The limit counts the tokens of every batch not yet finished, of every runner on the key: the room is the limit
less what this database has queued and what other databases on the key told the shared gate they have queued.
A ``token_limit_exceeded`` failure of a batch that was alone in the queue shows the server's limit is lower than
configured: the limit its error states is learned (else half the batch), and requests that could never fit are
failed with their reason.
"""

from __future__ import annotations

from collections.abc import Iterable

from runner.batch.collect import queue_limit_hint
from runner.gates import SharedGate
from runner.limits import Limits
from runner.progress import Snapshot
from runner.settings import RunSettings
from runner.store import BatchRow, BatchState, Store

__all__ = ["OPEN", "BatchQueue", "batch_snapshot"]

OPEN = (BatchState.PACKED, BatchState.UPLOADING, BatchState.UPLOADED, BatchState.CREATING, BatchState.SUBMITTED)


class BatchQueue:
    def __init__(
        self, store: Store, run: str, limits: Limits, settings: RunSettings, shared: SharedGate | None
    ) -> None:
        self.store, self.run, self.limits, self.settings, self.shared = store, run, limits, settings, shared
        self.learned: dict[str, int] = {}  # queue limits the server showed to be lower than configured
        self.models: set[str] = set()  # models this run has had batches of
        self.notices: list[str] = []

    def limit(self, model: str) -> int | None:
        own = self.settings.batch_queue_tokens
        limit = own if own is not None else self.limits.model(model).limits_for(self.settings.tier).batch_queue_tokens
        learned = self.learned.get(model)
        return learned if limit is None or (learned is not None and learned < limit) else limit

    def room(self, model: str) -> int | None:
        """Tokens the next wave may put in ``model``'s queue; None: no limit."""
        limit = self.limit(model)
        return (
            None if limit is None else limit - self.store.batches.queued_tokens(model, self.run) - self.by_others(model)
        )

    def by_others(self, model: str) -> int:
        """Tell the shared gate what this database has in ``model``'s queue; what other databases have."""
        if self.shared is None:
            return 0
        return self.shared.tell(
            f"{model} batch queue tokens", self.store.store_id, self.store.batches.queued_tokens(model)
        )

    def tell(self, open_models: Iterable[str]) -> None:
        """Keep the other databases' figures current as batches come and go."""
        self.models |= set(open_models)
        for model in self.models:
            self.by_others(model)

    def learn(self, row: BatchRow, messages: Iterable[str], count_output: bool, upto: int | None) -> None:
        """After token_limit_exceeded: if the batch was alone in the queue, the server's limit is lower than ours.
        Take the limit the error states ("Limit: N enqueued tokens") as a hint, else halve the batch."""
        if self.store.batches.queued_tokens(row.model, self.run) - row.est_tokens > 0:
            return
        learned = queue_limit_hint(messages) or row.est_tokens // 2
        if learned < (self.limit(row.model) or learned + 1):
            self.learned[row.model] = max(1, learned)
            self.fail_unqueueable(count_output, upto)
            self.notices.append(
                f"{row.model}: the server's batch queue limit is lower than configured; packing to {learned:,} tokens"
            )

    def fail_unqueueable(self, count_output: bool, upto: int | None) -> None:
        """A request whose estimate alone exceeds the queue limit could never be enqueued: fail it."""
        for model in self.store.requests.pending_models(self.run):
            limit = self.limit(model)
            if limit is None:
                continue
            for custom_id, line, est in self.store.requests.pending_larger_than(
                self.run, model, limit, count_output, upto
            ):
                self.store.requests.refuse(
                    self.run,
                    custom_id,
                    "request_too_large",
                    f"line {line}: needs {est:,} tokens, over {model}'s batch queue limit of "
                    f"{limit:,} at {self.settings.tier}",
                )


def batch_snapshot(store: Store, run: str, queue_full: bool, notices: list[str]) -> Snapshot:
    """The progress line's figures for a batch run: states of the requests, and of the batches not yet final."""
    counts = store.requests.counts(run)
    states: dict[str, int] = {}
    for row in store.batches.batch_rows(run, OPEN):
        key = row.status or row.state.value
        states[key] = states.get(key, 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no batch running"
    if counts["pending"] and queue_full:
        detail += "; queue full, next wave waits"
    return Snapshot(
        done=counts["succeeded"],
        failed=counts["failed"] + counts["cancelled"],
        total=sum(counts.values()),
        in_flight=counts["batched"],
        requests_per_min=0.0,
        tokens_per_min=0.0,
        rpm_limit=None,
        tpm_limit=None,
        spend=store.results.total_cost(run),
        eta_seconds=None,
        paused_for=0.0,
        notices=tuple(notices),
        detail=f"batches: {detail}",
        mode="batch",
    )
