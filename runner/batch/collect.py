"""What a finished batch means for its requests: its output and error files joined by custom_id.

Answered lines become results with spend at batch prices (COLLECT); lines that failed for good become failed
results with the server's answer kept (REJECT); lines that expired, were cancelled, hit a server error or are
missing go back to pending (REQUEUE), at most ``max_resubmits`` times (``retry.decide_line``). A batch that
failed as a whole fails the lines its errors name and requeues the rest; ``token_limit_exceeded`` is not a
failure of its requests at all: they go back uncounted while the queue drains.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from runner.limits import ModelInfo
from runner.pricing import cost, price_table, usage_of
from runner.retry import Action, decide_line
from runner.store import Move, Outcome

if TYPE_CHECKING:
    from openai.types import Batch  # the openai SDK only when batch mode runs

__all__ = ["Lines", "Settled", "queue_limit_hint", "settle", "settle_failed", "usage_mismatch"]

_LIMIT_HINT = re.compile(r"Limit: ([\d,]+) enqueued tokens")


@dataclass
class Settled:
    """How a batch's requests end: final outcomes, and ``(request id, counts as a resubmission, reason)`` to
    requeue."""

    outcomes: list[Outcome] = field(default_factory=list[Outcome])
    requeue: list[tuple[int, bool, str]] = field(default_factory=list[tuple[int, bool, str]])


class Lines:
    """The lines of a batch's error and output files by custom_id; files later in ``files`` win (the output: a
    200). Only where each line starts is kept: a line is read again and parsed when its request is settled, so an
    output file of 50,000 answers is never held parsed all at once (it was 200 MB and more)."""

    def __init__(self, files: Iterable[Path]) -> None:
        self.files = list(files)
        self.where: dict[str, tuple[int, int]] = {}  # custom_id -> (file index, byte offset)
        for index, path in enumerate(self.files):
            with path.open("rb") as f:
                offset = 0
                for raw in f:
                    if raw.strip():
                        self.where[str(json.loads(raw).get("custom_id"))] = (index, offset)
                    offset += len(raw)
        self.handles: dict[int, BinaryIO] = {}

    def get(self, custom_id: str) -> dict[str, Any] | None:
        found = self.where.get(custom_id)
        if found is None:
            return None
        index, offset = found
        if index not in self.handles:
            self.handles[index] = self.files[index].open("rb")
        handle = self.handles[index]
        handle.seek(offset)
        item: dict[str, Any] = json.loads(handle.readline())
        return item

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles.values():
            handle.close()


def queue_limit_hint(messages: Iterable[str]) -> int | None:
    """The queue limit a ``token_limit_exceeded`` error states ("Limit: N enqueued tokens"), if any."""
    hints = [int(m.group(1).replace(",", "")) for text in messages if (m := _LIMIT_HINT.search(text))]
    return min(hints) if hints else None


def settle(
    members: list[tuple[int, str, int]],
    lines: Lines,
    model: ModelInfo,
    path: str,
    max_resubmits: int,
) -> Settled:
    """Outcomes of a completed, expired or cancelled batch's ``members`` (request id, custom_id, resubmits)."""
    settled = Settled()
    for request_id, custom_id, resubmits in members:
        _settle_line(settled, request_id, custom_id, resubmits, lines.get(custom_id), model, path, max_resubmits)
    return settled


def settle_failed(members: list[tuple[int, str, int]], errors: list[Any]) -> Settled:
    """A batch that failed as a whole: lines its errors name fail with the reason, the others are requeued."""
    settled = Settled()
    codes = ", ".join(str(e.code) for e in errors) or "no reason"
    by_line = {e.line: f"{e.code}: {e.message}" for e in errors if e.line}
    for number, (request_id, custom_id, _) in enumerate(members, 1):
        if number in by_line:
            message = f"line {number} of the batch file: {by_line[number]}"
            settled.outcomes.append(
                Outcome(request_id, custom_id, Move.REJECT, error_code="batch_validation", error_message=message)
            )
        else:
            settled.requeue.append((request_id, True, f"batch failed: {codes}"))
    return settled


def _settle_line(
    settled: Settled,
    request_id: int,
    custom_id: str,
    resubmits: int,
    line: dict[str, Any] | None,
    model: ModelInfo,
    path: str,
    max_resubmits: int,
) -> None:
    response = line.get("response") if line else None
    response = response if isinstance(response, dict) else {}
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, dict):
        usage = usage_of(body, path)
        tier, prices = price_table(model, body, mode="batch")
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        settled.outcomes.append(Outcome.answered((request_id, custom_id), Move.COLLECT,
                                                 response_id=response.get("request_id"), body=text, model=model.name,
                                                 service_tier=tier, usage=usage, cost=cost(prices, usage)))  # fmt: skip
        return
    error = (line or {}).get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
    code = str(error.get("code") or error.get("type") or ("missing" if line is None else "error"))
    message = str(error.get("message") or ("no line for it in the output or error file" if line is None else ""))
    decision = decide_line(status if line is not None else None, resubmits, max_resubmits)
    if decision.action is Action.RETRY:
        settled.requeue.append((request_id, True, f"{code}: {message}"[:500]))
        return
    if decision.exhausted:
        message = f"gave up after {resubmits + 1} batches: {message}"
    settled.outcomes.append(
        Outcome(
            request_id,
            custom_id,
            Move.REJECT,
            status_code=status,
            body=json.dumps(body) if body else None,
            error_code=code,
            error_message=f"{code}: {message}"[:2000],
        )
    )


def usage_mismatch(batch: Batch, settled: Settled) -> str | None:
    """The lines' usage against the batch object's own, when it has one: what differs, or None."""
    if batch.usage is None:
        return None
    lines_in = sum(o.prompt_tokens for o in settled.outcomes)
    lines_out = sum(o.output_tokens for o in settled.outcomes)
    if (lines_in, lines_out) == (batch.usage.input_tokens, batch.usage.output_tokens):
        return None
    return (f"lines report {lines_in:,} in / {lines_out:,} out, the batch says {batch.usage.input_tokens:,} / "
            f"{batch.usage.output_tokens:,}; spend follows the lines")  # fmt: skip
