"""What a killed process left half-done, settled on start: intents found on the server by name or metadata.

An upload is found by its file name (``runner-<store>-<run>-<chunk>-...``), a batch by its metadata
(``runner_store``, ``runner_run``, ``runner_chunk``), so no chunk is ever uploaded or created twice; uploaded files
of this run that no batch uses are deleted.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from runner.errors import BatchAPIError
from runner.store import BatchRow, BatchState, Store

if TYPE_CHECKING:
    from runner.batch.api import BatchAPI

__all__ = ["batch_metadata", "file_name", "reconcile"]

T = TypeVar("T")


def file_name(store: Store, row: BatchRow) -> str:
    """The name a chunk's file is uploaded under: this database's id and the chunk's own name."""
    return f"runner-{store.store_id}-{row.filename}"


def batch_metadata(store: Store, run: str, row: BatchRow) -> dict[str, str]:
    """The metadata a chunk's batch is created with: how a later run finds it."""
    return {
        "runner_store": store.store_id,
        "runner_run": run[:512],
        "runner_chunk": str(row.chunk),
        "runner_sha256": row.sha256[:16],
    }


async def reconcile(store: Store, run: str, api: BatchAPI) -> list[str]:
    """Settle the run's intents left behind, and delete its orphaned uploads; returns what to tell the user."""
    notices: list[str] = []

    async def listing(call: Awaitable[T], fallback: T) -> T:
        """A file listing, or ``fallback`` where the server has none (some OpenAI-compatible servers)."""
        try:
            return await call
        except BatchAPIError as exc:
            if exc.status not in (404, 405):
                raise
            notices.append(f"the server cannot list files ({exc}); orphaned uploads are not cleaned up")
            return fallback

    store.batches.poll_now(run)
    for row in store.batches.batch_rows(run, [BatchState.UPLOADING]):
        found = await listing(api.find_file(file_name(store, row), row.bytes), None)
        if found:
            store.batches.move_batch(row, BatchState.UPLOADED, input_file_id=found)
        else:
            store.batches.move_batch(row, BatchState.PACKED)
    for row in store.batches.batch_rows(run, [BatchState.CREATING]):
        match = {k: v for k, v in batch_metadata(store, run, row).items() if k != "runner_sha256"}
        batch = await api.find_batch(match, newer_than=math.floor(row.created_at) - 3600)
        if batch is not None:
            store.batches.move_batch(
                row, BatchState.SUBMITTED, batch_id=batch.id, status=batch.status, next_poll_at=0.0
            )
        else:
            store.batches.move_batch(row, BatchState.UPLOADED)
    kept = (BatchState.UPLOADED, BatchState.CREATING, BatchState.SUBMITTED)
    used = {r.input_file_id for r in store.batches.batch_rows(run, kept)}
    prefix = f"runner-{store.store_id}-{run}-"
    for file_id, _name in await listing(api.files_named(prefix), []):
        if file_id not in used:
            await api.delete_file(file_id)
            notices.append(f"deleted orphaned upload {file_id}")
    return notices
