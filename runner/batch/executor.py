"""The batch executor: the same job through the Batch API at half price, in waves, crash-safe.

Each turn of the loop: pack pending requests into files that fit what is left of each model's batch queue limit;
upload and create (each behind an intent row, see ``runner.store.batches``); poll submitted batches with backoff;
collect finished ones (``collect``). A batch that fails with ``token_limit_exceeded`` is not a failure of its
requests: they go back to pending uncounted and packing waits for the queue to drain; if it was alone in the
queue, the server's limit is lower than configured and packing follows the limit its error states.

On start, ``reconcile`` settles intents a killed process left behind: an upload is found by file name, a batch by
its metadata (``runner_store``, ``runner_run``, ``runner_chunk``), so no chunk is ever created twice; uploaded files
of this run that no batch uses are deleted.

Named crash points (``runner.crash``: after_upload, after_create, polling, downloading, recording) let the
crash-safety tests and ``bench/crash.py`` kill the process there. Time is injected (``clock``, ``sleep``): tests
run whole batch jobs on a fake clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import anyio

from runner.batch.collect import Lines, Settled, settle, settle_failed, usage_mismatch
from runner.batch.packing import pack
from runner.batch.queue import OPEN, BatchQueue, batch_snapshot
from runner.batch.reconcile import batch_metadata, file_name, reconcile
from runner.budget import Budget, worst_case
from runner.crash import crash_point
from runner.errors import (
    AuthError,
    BatchAPIError,
    BudgetReached,
    RunnerError,
    StoppedEarly,
)
from runner.gates import SharedGate
from runner.limits import Limits
from runner.logs import log
from runner.money import fmt_usd
from runner.progress import Snapshot
from runner.settings import BatchSettings, Lane, RunSettings
from runner.stopping import Stops
from runner.store import BatchRow, BatchState, Store
from runner.transport import Credentials

if TYPE_CHECKING:
    from openai.types import Batch

    from runner.batch.api import BatchAPI

__all__ = ["BatchExecutor"]

FINAL = ("completed", "failed", "expired", "cancelled")
T = TypeVar("T")


class BatchExecutor:
    """``async with BatchExecutor(...) as executor: await executor.execute()``; it holds its own API client."""

    def __init__(
        self,
        store: Store,
        run: str,
        owner: str,
        limits: Limits,
        settings: RunSettings,
        batch: BatchSettings,
        credentials: Credentials,
        spool: Path,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        *,
        lane: Lane | None = None,
        shared: SharedGate | None = None,
    ) -> None:
        self.store, self.run, self.owner, self.limits = store, run, owner, limits
        self.settings, self.batch, self.credentials, self.spool = settings, batch, credentials, spool
        self.shared = shared  # the batch queue is the organisation's: other runners' batches take room in it
        self.clock, self.sleep = clock, sleep
        self.lane = lane or Lane()
        self._api: BatchAPI | None = None
        self.blocked_until = 0.0
        self.queue = BatchQueue(store, run, limits, settings, shared)
        self._notices: list[str] = []
        self._snapshot: Snapshot | None = None
        self._snapshot_at = -math.inf
        self.stops = Stops("submitted batches keep running on the server: re-run the same command to collect them",
                           deadline=settings.deadline, on_stop=self._wake)  # fmt: skip
        self._nap: anyio.CancelScope | None = None

    async def __aenter__(self) -> BatchExecutor:
        from runner.batch.api import BatchAPI  # the openai SDK only when batch mode runs

        api = BatchAPI(self.credentials, calls_per_second=self.batch.calls_per_second, sleep=self.sleep,
                       seed=self.settings.seed)  # fmt: skip
        self._api = await api.__aenter__()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._api is not None:
            await self._api.__aexit__(t, e, tb)
            self._api = None

    @property
    def api(self) -> BatchAPI:
        assert self._api is not None, "use BatchExecutor as an async context manager"
        return self._api

    @property
    def notices(self) -> list[str]:
        return list(dict.fromkeys(self._notices + self.queue.notices))

    # -- the loop ---------------------------------------------------------------------------------------------

    async def execute(self) -> RunnerError | None:
        """Work until every request is final; returns why it stopped before that, or None."""
        try:
            with anyio.CancelScope() as self.stops.scope:
                return await self._loop()
        except (StoppedEarly, AuthError) as exc:  # quota, a refused key, an API that does not answer
            return exc
        return self.stops.reason

    async def _loop(self) -> RunnerError | None:
        await self.reconcile()
        self.queue.fail_unqueueable(self.batch.count_output, self.lane.upto)
        while True:
            if (
                self.stops.stopped
                or not self.stops.still_owned(self.store, self.run, self.owner, self.settings.lease_seconds)
                or self.stops.past_deadline(self.clock())
            ):
                return self.stops.reason
            budget = self._budget_now()
            if self.clock() >= self.blocked_until:
                spend = (budget, self.limits.model) if budget.cap is not None else None
                packed = pack(self.store, self.run, self.spool, self.queue.room, self.batch.count_output,
                              now=self.clock, spend=spend, upto=self.lane.upto)  # fmt: skip
                if not packed and self._over_budget(budget):
                    return BudgetReached(f"--max-spend: {fmt_usd(budget.left or 0)} is left of the cap, less than "
                                         "the next request could cost; raise it and re-run to continue")  # fmt: skip
            for row in self.store.batches.batch_rows(self.run, [BatchState.PACKED]):
                await self.upload(row)
            for row in self.store.batches.batch_rows(self.run, [BatchState.UPLOADED]):
                await self.create(row)
            for row in self.store.batches.batch_rows(self.run, [BatchState.SUBMITTED]):
                if row.next_poll_at <= self.clock():
                    await self.poll(row)
            open_rows = self.store.batches.batch_rows(self.run, OPEN)
            self.queue.tell(row.model for row in open_rows)
            pending = self.store.requests.pending_count(self.run, self.lane.upto)
            if not open_rows and not pending:
                return None
            with anyio.CancelScope() as self._nap:
                await self.sleep(self._until_next(open_rows, pending))

    def interrupt(self, reason: str) -> None:
        """Stop (SIGINT or SIGTERM): submitted batches keep running on the server; the next run collects them."""
        self.stops.interrupt(reason)

    def abort(self) -> None:
        """Stop at once (a second signal), even inside an API call: its intent row makes the next run reconcile."""
        self.stops.abort()

    def _wake(self) -> None:
        if self._nap is not None:
            self._nap.cancel()

    def _over_budget(self, budget: Budget) -> bool:
        """Nothing is in a batch and the first request due does not fit in what is left of the cap: waiting frees
        nothing."""
        if budget.cap is None or self.store.batches.batch_rows(self.run, OPEN):
            return False
        first = self.store.batches.first_due(self.run, self.clock(), self.lane.upto)
        if first is None:
            return False
        model, line = first
        return not budget.reserve(worst_case(self.limits.model(model), line.prompt_tokens, line.output_tokens, line.n,
                                             "batch"))  # fmt: skip

    def _budget_now(self) -> Budget:
        """What may still be spent: the cap, less what is recorded and the worst case of what is in batches."""
        reserved = sum(
            worst_case(self.limits.model(model), prompt, output, 1, "batch")
            for model, prompt, output in self.store.batches.batched_tokens(self.run)
        )
        return Budget(self.settings.max_spend, self.store.results.total_cost(self.run), reserved)

    def _until_next(self, open_rows: list[BatchRow], pending: int) -> float:
        now = self.clock()
        wake = [r.next_poll_at for r in open_rows if r.state is BatchState.SUBMITTED]
        if pending and self.blocked_until > now:
            wake.append(self.blocked_until)
        if pending and not open_rows and self.blocked_until <= now:
            due = self.store.requests.next_due(self.run, upto=self.lane.upto)
            wake.append(due if due is not None else now)
        delay = min(wake, default=now + self.batch.poll_min) - now
        return min(max(delay, 0.01), self.batch.poll_max)

    # -- one batch through its life ---------------------------------------------------------------------------

    async def upload(self, row: BatchRow) -> None:
        path = Path(row.spool_path)
        if not path.is_file():
            lost = [
                (rid, False, "batch file lost before upload") for rid, _, _ in self.store.batches.batch_members(row)
            ]
            self.store.batches.collect_batch(row, [], lost, "not_submitted", "spool file missing", None)
            return
        row = self.store.batches.move_batch(row, BatchState.UPLOADING)
        try:
            file_id = await self.api.upload(path, file_name(self.store, row))
        except BatchAPIError as exc:  # refused for good: the server kept no file
            self._give_back(self.store.batches.move_batch(row, BatchState.PACKED), exc)
            raise
        crash_point("after_upload")
        self.store.batches.move_batch(row, BatchState.UPLOADED, input_file_id=file_id)

    async def create(self, row: BatchRow) -> None:
        row = self.store.batches.move_batch(row, BatchState.CREATING)
        assert row.input_file_id is not None
        try:
            created = await self.api.create(row.input_file_id, row.endpoint, batch_metadata(self.store, self.run, row))
        except BatchAPIError as exc:  # refused for good: no batch (its upload is deleted as an orphan next run)
            self._give_back(self.store.batches.move_batch(row, BatchState.UPLOADED), exc)
            raise
        crash_point("after_create")
        self.store.batches.move_batch(
            row,
            BatchState.SUBMITTED,
            batch_id=created.id,
            status=created.status,
            next_poll_at=self.clock() + self.batch.poll_min,
        )
        log.info("%s submitted: %s requests (chunk %d)", created.id, f"{row.requests:,}", row.chunk)

    def _give_back(self, row: BatchRow, refusal: BatchAPIError) -> None:
        """The server refused ``row`` for good: its requests go back to pending, uncharged, for any later run."""
        back = [(rid, False, f"batch not submitted: {refusal}") for rid, _, _ in self.store.batches.batch_members(row)]
        self.store.batches.collect_batch(row, [], back, "not_submitted", str(refusal), None)

    async def poll(self, row: BatchRow) -> None:
        crash_point("polling")
        assert row.batch_id is not None
        batch = await self.api.retrieve(row.batch_id)
        if batch.status in FINAL:
            await self.collect(row, batch)
            return
        wait = min(self.batch.poll_max, self.batch.poll_min * 1.5**row.polls)
        counts = batch.request_counts.model_dump() if batch.request_counts else None
        self.store.batches.note_poll(row, batch.status, counts, self.clock() + wait)
        log.info("%s %s: %s; next look in %.0fs", row.batch_id, batch.status, counts or {}, wait)

    async def collect(self, row: BatchRow, batch: Batch) -> None:
        files = []
        for file_id, suffix in ((batch.error_file_id, ".err"), (batch.output_file_id, ".out")):
            if file_id:
                dest = Path(row.spool_path + suffix)
                await self.api.download(file_id, dest)
                crash_point("downloading")
                files.append(dest)
        members = self.store.batches.batch_members(row)
        errors = list(batch.errors.data or []) if batch.errors else []
        codes = [str(e.code) for e in errors]
        if batch.status == "failed" and "token_limit_exceeded" in codes:
            self.queue.learn(row, (str(e.message or "") for e in errors), self.batch.count_output, self.lane.upto)
            waiting = "batch queue full (token_limit_exceeded): waiting"
            settled = Settled(requeue=[(rid, False, waiting) for rid, _, _ in members])
            self.blocked_until = self.clock() + self.batch.queue_wait
            note = "token_limit_exceeded: requeued, waiting for the queue to drain"
            self._notices.append(f"chunk {row.chunk}: {note}")
        elif batch.status == "failed":
            settled = settle_failed(members, errors)
            note = f"failed: {', '.join(codes)}"
        else:
            model = self.limits.model(row.model)
            with Lines(files) as lines:
                settled = settle(members, lines, model, row.endpoint, self.batch.max_resubmits)
            note = batch.status
            mismatch = usage_mismatch(batch, settled)
            if mismatch:
                self._notices.append(f"chunk {row.chunk}: {mismatch}")
        crash_point("recording")
        counts = batch.request_counts.model_dump() if batch.request_counts else None
        took = batch.completed_at - batch.created_at if batch.completed_at and batch.created_at else None
        self.store.batches.collect_batch(row, settled.outcomes, settled.requeue, batch.status, note, counts, took)
        for suffix in ("", ".out", ".err"):  # settled: requeued requests go into new files
            Path(row.spool_path + suffix).unlink(missing_ok=True)
        if batch.status in ("completed", "expired", "cancelled"):
            self.blocked_until = 0.0  # the queue drained a little: packing may resume
        log.info(
            "%s %s: %d answered, %d failed, %d back to pending",
            row.batch_id,
            note,
            sum(1 for o in settled.outcomes if o.cost is not None),
            sum(1 for o in settled.outcomes if o.cost is None),
            len(settled.requeue),
        )

    # -- progress ---------------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Figures for the progress line, refreshed at most every two seconds (counting is a scan)."""
        now = self.clock()
        if self._snapshot is None or now - self._snapshot_at >= 2.0:
            self._snapshot = batch_snapshot(self.store, self.run, now < self.blocked_until, self.notices)
            self._snapshot_at = now
        return self._snapshot

    # -- start-up and management ------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Settle intents a killed process left behind, and delete this run's orphaned uploads."""
        self._notices += await reconcile(self.store, self.run, self.api)

    async def poll_once(self) -> None:
        """Collect whatever batches of the run have finished (used before a sync run and by ``runner batches``)."""
        await self.reconcile()
        for row in self.store.batches.batch_rows(self.run, [BatchState.SUBMITTED]):
            await self.poll(row)

    async def cancel_all(self) -> int:
        """Ask the server to cancel every submitted batch of the run; returns how many."""
        rows = self.store.batches.batch_rows(self.run, [BatchState.SUBMITTED])
        for row in rows:
            assert row.batch_id is not None
            batch = await self.api.retrieve(row.batch_id)
            if batch.status not in FINAL and batch.status != "cancelling":
                await self.api.cancel(row.batch_id)
        return len(rows)
