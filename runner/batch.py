"""The batch executor: the same job through the Batch API at half price, in waves, crash-safe.

Each turn of the loop: pack pending requests into files that fit what is left of each model's batch queue limit;
upload and create (each behind an intent row, see ``batchbook``); poll submitted batches with backoff; collect
finished ones. Collecting joins the output and error files by custom_id: answered lines become results with spend
at batch prices; lines that failed for good become failed results; lines that expired, were cancelled, hit a
server error or are missing go back to pending (at most ``max_resubmits`` times). A batch that fails with
``token_limit_exceeded`` is not a failure of its requests: they go back to pending uncounted and packing waits
for the queue to drain.

On start, ``reconcile`` settles intents a killed process left behind: an upload is found by file name, a batch by
its metadata (``runner_store``, ``runner_run``, ``runner_chunk``), so no chunk is ever created twice; uploaded files
of this run that no batch uses are deleted.

``RUNNER_CRASH_AT`` (after_upload, after_create, polling, downloading, recording) kills the process at that point:
the crash-safety tests use it.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
from openai.types import Batch

from runner.batch_api import BatchAPI, BatchAPIError
from runner.batchbook import BatchBook, BatchRow
from runner.errors import BudgetReached, DeadlineReached, RunnerError
from runner.limits import Limits
from runner.packing import pack
from runner.pricing import cost, price_table, usage_of
from runner.store import Outcome, Store
from runner.sync import RunSettings, Snapshot

__all__ = ["BatchExecutor", "BatchSettings"]

FINAL = ("completed", "failed", "expired", "cancelled")
T = TypeVar("T")
_LIMIT_HINT = re.compile(r"Limit: ([\d,]+) enqueued tokens")


@dataclass
class BatchSettings:
    poll_min: float = 10.0  # seconds between the first polls of a batch
    poll_max: float = 300.0  # backoff cap
    max_resubmits: int = 3  # times a request may go back to pending from a batch before it fails
    count_output: bool = True  # count max output tokens in the queue estimate (OpenAI does not say; be safe)
    queue_wait: float = 60.0  # after token_limit_exceeded, wait this long (or for a batch to finish)


def crash_point(name: str) -> None:
    if os.environ.get("RUNNER_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


class BatchExecutor:
    def __init__(
        self,
        store: Store,
        run: str,
        owner: str,
        limits: Limits,
        settings: RunSettings,
        batch: BatchSettings,
        api: BatchAPI,
        spool: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.run, self.owner, self.limits = store, run, owner, limits
        self.settings, self.batch, self.api, self.spool, self.clock = settings, batch, api, spool, clock
        self.book = BatchBook(store)
        self.blocked_until = 0.0
        self.learned: dict[str, int] = {}  # queue limits the server showed to be lower than configured
        self.notices: list[str] = []
        self._snapshot: Snapshot | None = None
        self._snapshot_at = 0.0

    # -- the loop ---------------------------------------------------------------------------------------------

    async def execute(self) -> RunnerError | None:
        """Work until every request is final; returns why it stopped before that, or None."""
        await self.reconcile()
        self._fail_unqueueable()
        while True:
            self.store.heartbeat(self.run, self.owner, self.settings.lease_seconds)
            if self.settings.deadline is not None and self.clock() >= self.settings.deadline:
                return DeadlineReached("deadline reached; submitted batches keep running: re-run to collect them")
            if self.settings.max_spend is not None and self.store.total_cost(self.run) >= self.settings.max_spend:
                return BudgetReached("--max-spend reached; raise it and re-run to continue")
            if self.clock() >= self.blocked_until:
                pack(self.book, self.run, self.spool, self._budget, self.batch.count_output, now=self.clock)
            for row in self.book.rows(self.run, ["packed"]):
                await self.upload(row)
            for row in self.book.rows(self.run, ["uploaded"]):
                await self.create(row)
            for row in self.book.rows(self.run, ["submitted"]):
                if row.next_poll_at <= self.clock():
                    await self.poll(row)
            open_rows = self.book.rows(self.run, ["packed", "uploading", "uploaded", "creating", "submitted"])
            pending = self.store.counts(self.run)["pending"]
            if not open_rows and not pending:
                return None
            wake = [r.next_poll_at for r in open_rows if r.state == "submitted"]
            if pending and self.blocked_until > self.clock():
                wake.append(self.blocked_until)
            if pending and not open_rows and self.blocked_until <= self.clock():
                due = self.store.next_due(self.run)
                wake.append(due if due is not None else self.clock())
            delay = min(wake, default=self.clock() + self.batch.poll_min) - self.clock()
            await anyio.sleep(min(max(delay, 0.01), self.batch.poll_max))

    def queue_limit(self, model: str) -> int | None:
        own = self.settings.batch_queue_tokens
        limit = own if own is not None else self.limits.model(model).limits_for(self.settings.tier).batch_queue_tokens
        learned = self.learned.get(model)
        return learned if limit is None or (learned is not None and learned < limit) else limit

    def _learn_queue_limit(self, row: BatchRow, errors: list[Any]) -> None:
        """After token_limit_exceeded: if the batch was alone in the queue, the server's limit is lower than ours.
        Take the limit the error states ("Limit: N enqueued tokens") as a hint, else halve the batch."""
        alone = self.book.queued_tokens(row.model, self.run) - row.est_tokens <= 0
        if not alone:
            return
        hints = [int(m.group(1).replace(",", "")) for e in errors if (m := _LIMIT_HINT.search(str(e.message or "")))]
        learned = min(hints) if hints else row.est_tokens // 2
        if learned < (self.queue_limit(row.model) or learned + 1):
            self.learned[row.model] = max(1, learned)
            self._fail_unqueueable()
            self.notices.append(
                f"{row.model}: the server's batch queue limit is lower than configured; packing to {learned:,} tokens"
            )

    def _budget(self, model: str) -> int | None:
        limit = self.queue_limit(model)
        return None if limit is None else limit - self.book.queued_tokens(model, self.run)

    def _fail_unqueueable(self) -> None:
        """A request whose estimate alone exceeds the queue limit could never be enqueued: fail it."""
        extra = "output_tokens * n" if self.batch.count_output else "0"
        models = [
            m
            for (m,) in self.store.conn.execute(
                "SELECT DISTINCT model FROM requests WHERE run=? AND state='pending'", (self.run,)
            )
        ]
        for model in models:
            limit = self.queue_limit(model)
            if limit is None:
                continue
            for custom_id, line, est in self.store.conn.execute(
                f"SELECT custom_id, line, prompt_tokens + {extra} AS est FROM requests WHERE run=? AND model=?"
                " AND state='pending' AND est > ?",
                (self.run, model, limit),
            ).fetchall():
                self.store.fail_pending(
                    self.run,
                    custom_id,
                    "request_too_large",
                    f"line {line}: needs {est:,} tokens, over {model}'s batch queue limit of "
                    f"{limit:,} at {self.settings.tier}",
                )

    # -- one batch through its life ---------------------------------------------------------------------------

    def filename(self, row: BatchRow) -> str:
        return f"runner-{self.book.store_id}-{row.filename.removeprefix('runner-')}"

    def metadata(self, row: BatchRow) -> dict[str, str]:
        return {
            "runner_store": self.book.store_id,
            "runner_run": self.run[:512],
            "runner_chunk": str(row.chunk),
            "runner_sha256": row.sha256[:16],
        }

    async def upload(self, row: BatchRow) -> None:
        path = Path(row.spool_path)
        if not path.is_file():
            self.book.collect(
                row,
                [],
                [(rid, False, "batch file lost before upload") for rid, _, _ in self.book.members(row)],
                "not_submitted",
                "spool file missing",
                None,
            )
            return
        row = self.book.move(row, "uploading")
        file_id = await self.api.upload(path, self.filename(row))
        crash_point("after_upload")
        self.book.move(row, "uploaded", input_file_id=file_id)

    async def create(self, row: BatchRow) -> None:
        row = self.book.move(row, "creating")
        assert row.input_file_id is not None
        created = await self.api.create(row.input_file_id, row.endpoint, self.metadata(row))
        crash_point("after_create")
        self.book.move(
            row,
            "submitted",
            batch_id=created.id,
            status=created.status,
            next_poll_at=self.clock() + self.batch.poll_min,
        )

    async def poll(self, row: BatchRow) -> None:
        crash_point("polling")
        assert row.batch_id is not None
        batch = await self.api.retrieve(row.batch_id)
        if batch.status in FINAL:
            await self.collect(row, batch)
            return
        wait = min(self.batch.poll_max, self.batch.poll_min * 1.5**row.polls)
        counts = batch.request_counts.model_dump() if batch.request_counts else None
        self.book.note_poll(row, batch.status, counts, self.clock() + wait)

    async def collect(self, row: BatchRow, batch: Batch) -> None:
        lines: dict[str, dict[str, Any]] = {}
        for file_id, suffix in ((batch.error_file_id, ".err"), (batch.output_file_id, ".out")):
            if not file_id:
                continue
            dest = Path(row.spool_path + suffix)
            await self.api.download(file_id, dest)
            crash_point("downloading")
            with dest.open("rb") as f:
                for raw in f:
                    if raw.strip():
                        item = json.loads(raw)
                        lines[str(item.get("custom_id"))] = item  # output read last: a 200 wins
        members = self.book.members(row)
        model = self.limits.model(row.model)
        outcomes: list[Outcome] = []
        requeue: list[tuple[int, bool, str]] = []
        errors = list(batch.errors.data or []) if batch.errors else []
        error_codes = [e.code for e in errors]
        if batch.status == "failed" and "token_limit_exceeded" in error_codes:
            self._learn_queue_limit(row, errors)
            requeue = [(rid, False, "batch queue full (token_limit_exceeded): waiting") for rid, _, _ in members]
            self.blocked_until = self.clock() + self.batch.queue_wait
            note = "token_limit_exceeded: requeued, waiting for the queue to drain"
            self.notices.append(f"chunk {row.chunk}: {note}")
        elif batch.status == "failed":
            by_line = {e.line: f"{e.code}: {e.message}" for e in errors if e.line}
            for number, (rid, custom_id, _) in enumerate(members, 1):
                if number in by_line:
                    outcomes.append(
                        Outcome(
                            rid,
                            custom_id,
                            "failed",
                            error_code="batch_validation",
                            error_message=f"line {number} of the batch file: {by_line[number]}",
                        )
                    )
                else:
                    requeue.append((rid, True, f"batch failed: {', '.join(map(str, error_codes)) or 'no reason'}"))
            note = f"failed: {', '.join(map(str, error_codes))}"
        else:
            for rid, custom_id, resubmits in members:
                self._settle_line(rid, custom_id, resubmits, lines.get(custom_id), model, outcomes, requeue)
            note = batch.status
            self._check_usage(row, batch, outcomes)
        crash_point("recording")
        counts = batch.request_counts.model_dump() if batch.request_counts else None
        self.book.collect(row, outcomes, requeue, batch.status, note, counts)
        for suffix in ("", ".out", ".err"):  # settled: requeued requests go into new files
            Path(row.spool_path + suffix).unlink(missing_ok=True)
        if batch.status in ("completed", "expired", "cancelled"):
            self.blocked_until = 0.0  # the queue drained a little: packing may resume

    def _settle_line(
        self,
        rid: int,
        custom_id: str,
        resubmits: int,
        line: dict[str, Any] | None,
        model: Any,
        outcomes: list[Outcome],
        requeue: list[tuple[int, bool, str]],
    ) -> None:
        response = line.get("response") if line else None
        status = response.get("status_code") if isinstance(response, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        if status == 200 and isinstance(body, dict):
            usage = usage_of(body)
            tier, prices = price_table(model, body, mode="batch")
            outcomes.append(
                Outcome(
                    rid,
                    custom_id,
                    "succeeded",
                    status_code=200,
                    response_id=response.get("request_id"),  # type: ignore[union-attr]
                    body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                    model=model.name,
                    service_tier=tier,
                    prompt_tokens=usage.prompt_tokens,
                    cached_tokens=usage.cached_tokens,
                    output_tokens=usage.output_tokens,
                    cost=cost(prices, usage),
                )
            )
            return
        error = (line or {}).get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
        code = str(error.get("code") or error.get("type") or ("missing" if line is None else "error"))
        message = str(error.get("message") or ("no line for it in the output or error file" if line is None else ""))
        retryable = line is None or status is None or status in (408, 409, 429) or status >= 500
        if retryable and resubmits < self.batch.max_resubmits:
            requeue.append((rid, True, f"{code}: {message}"[:500]))
            return
        if retryable:
            message = f"gave up after {resubmits + 1} batches: {message}"
        outcomes.append(
            Outcome(
                rid,
                custom_id,
                "failed",
                status_code=status,
                body=json.dumps(body) if body else None,
                error_code=code,
                error_message=f"{code}: {message}"[:2000],
            )
        )

    def _check_usage(self, row: BatchRow, batch: Batch, outcomes: list[Outcome]) -> None:
        """Cross-check the lines' usage against the batch object's own usage, when it has one."""
        if batch.usage is None:
            return
        lines_in = sum(o.prompt_tokens for o in outcomes)
        lines_out = sum(o.output_tokens for o in outcomes)
        if (lines_in, lines_out) != (batch.usage.input_tokens, batch.usage.output_tokens):
            self.notices.append(
                f"chunk {row.chunk}: lines report {lines_in:,} in / {lines_out:,} out, the batch says "
                f"{batch.usage.input_tokens:,} / {batch.usage.output_tokens:,}; spend follows the lines"
            )

    # -- progress ---------------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Figures for the progress line, refreshed at most every two seconds (counting is a scan)."""
        now = self.clock()
        if self._snapshot is None or now - self._snapshot_at >= 2.0:
            counts = self.store.counts(self.run)
            states: dict[str, int] = {}
            for row in self.book.rows(self.run, ["packed", "uploading", "uploaded", "creating", "submitted"]):
                key = row.status or row.state
                states[key] = states.get(key, 0) + 1
            detail = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no batch running"
            if counts["pending"] and self.clock() < self.blocked_until:
                detail += "; queue full, next wave waits"
            self._snapshot = Snapshot(
                done=counts["succeeded"],
                failed=counts["failed"] + counts["cancelled"],
                total=sum(counts.values()),
                in_flight=counts["batched"],
                requests_per_min=0.0,
                tokens_per_min=0.0,
                rpm_limit=None,
                tpm_limit=None,
                spend=self.store.total_cost(self.run),
                eta_seconds=None,
                paused_for=0.0,
                notices=tuple(self.notices),
                detail=f"batches: {detail}",
                mode="batch",
            )
            self._snapshot_at = now
        return self._snapshot

    # -- start-up -----------------------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Settle intents a killed process left behind, and delete this run's orphaned uploads."""
        self.book.poll_now(self.run)
        for row in self.book.rows(self.run, ["uploading"]):
            found = await self._listing(self.api.find_file(self.filename(row), row.bytes), None)
            if found:
                self.book.move(row, "uploaded", input_file_id=found)
            else:
                self.book.move(row, "packed")
        for row in self.book.rows(self.run, ["creating"]):
            match = {k: v for k, v in self.metadata(row).items() if k != "runner_sha256"}
            batch = await self.api.find_batch(match, newer_than=math.floor(row.created_at) - 3600)
            if batch is not None:
                self.book.move(row, "submitted", batch_id=batch.id, status=batch.status, next_poll_at=0.0)
            else:
                self.book.move(row, "uploaded")
        used = {r.input_file_id for r in self.book.rows(self.run, ["uploaded", "creating", "submitted"])}
        prefix = f"runner-{self.book.store_id}-{self.run}-"
        for file_id, _name in await self._listing(self.api.files_named(prefix), []):
            if file_id not in used:
                await self.api.delete_file(file_id)
                self.notices.append(f"deleted orphaned upload {file_id}")

    async def _listing(self, call: Awaitable[T], fallback: T) -> T:
        """A file listing, or ``fallback`` where the server has none (some OpenAI-compatible servers)."""
        try:
            return await call
        except BatchAPIError as exc:
            if exc.status not in (404, 405):
                raise
            if not any("cannot list files" in n for n in self.notices):
                self.notices.append(f"the server cannot list files ({exc}); orphaned uploads are not cleaned up")
            return fallback

    async def poll_once(self) -> None:
        """Collect whatever batches of the run have finished (used before a sync run and by ``runner batches``)."""
        await self.reconcile()
        for row in self.book.rows(self.run, ["submitted"]):
            await self.poll(row)

    async def cancel_all(self) -> int:
        """Ask the server to cancel every submitted batch of the run; returns how many."""
        rows = self.book.rows(self.run, ["submitted"])
        for row in rows:
            assert row.batch_id is not None
            batch = await self.api.retrieve(row.batch_id)
            if batch.status not in FINAL and batch.status != "cancelling":
                await self.api.cancel(row.batch_id)
        return len(rows)
