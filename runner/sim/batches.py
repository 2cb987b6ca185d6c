"""Batches endpoints of the simulator, on a fast clock (files: ``runner.sim.files``).

``POST /v1/batches`` refuses a wrong ``completion_window``, an unknown endpoint or file and metadata over
16 pairs / 64-char keys / 512-char values with a 400. Everything about the file's content is found while
``validating`` and reported the way OpenAI does: the batch ends ``failed`` with ``errors.data[{code, line,
message, param}]`` (``invalid_json_line``, ``duplicate_custom_id``, ``url_mismatch``, ``model_mismatch``,
``empty_file``, ``too_many_tasks``), or ``token_limit_exceeded`` when the model's unfinished batches would hold
more input tokens than the tier's batch queue limit.

Life cycle, lazily computed from the clock, ``B = batch_seconds``: validating for 0.1 B, in_progress until 0.8 B
(lines finish evenly), finalizing until B, then completed. ``batch_expire_seconds`` plays the 24 h window: a
batch still running then ends ``expired``. Cancel moves it to ``cancelling`` and, 0.1 B later, ``cancelled``.
Expired and cancelled batches keep the lines finished before that in the output file (billed); the others go to
the error file with ``batch_expired`` / ``batch_cancelled``. ``batch_line_error_rate`` makes some lines fail with
a 500 in the error file; a request the model cannot take (unknown model, too long) is a 4xx in the output file.
Lines are billed at batch prices.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from runner.errors import ConfigError
from runner.limits import Limits, ModelInfo
from runner.sim.batch_input import line_error, read_input
from runner.sim.config import SimConfig
from runner.sim.files import FileService, page
from runner.sim.http import Accepted, Http, Refused

__all__ = ["Answerer", "BatchService"]


class Answerer(Protocol):
    """What batches need of the simulator: the same judgement and answers as the sync endpoints."""

    config: SimConfig
    limits: Limits

    def problem(self, endpoint: str, body: dict[str, Any]) -> Accepted | Refused: ...

    def answer(
        self,
        endpoint: str,
        body: dict[str, Any],
        text: str,
        model: ModelInfo,
        prompt: int,
        service_tier: str = "standard",
    ) -> tuple[dict[str, Any], int]: ...


ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions", "/v1/moderations")
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")


@dataclass
class SimBatch:
    id: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str]
    created: float
    status: str = "validating"
    model: str | None = None
    lines: list[tuple[str, dict[str, Any], str]] = field(default_factory=list[tuple[str, dict[str, Any], str]])
    input_tokens: int = 0
    errors: list[dict[str, Any]] | None = None
    stamps: dict[str, float] = field(default_factory=dict[str, float])
    cancel_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    usage: dict[str, Any] | None = None


class BatchService:
    def __init__(self, http: Http, sim: Answerer) -> None:
        self.http, self.sim = http, sim
        self.file_service = FileService(http, self.now, sim.config.max_file_bytes)
        self.files = self.file_service.files
        self.batches: dict[str, SimBatch] = {}
        self.rng = random.Random(sim.config.seed + 1)
        self.created = 0  # batches created, for tests

    def install(self, app: web.Application) -> None:
        guard = self.http.guard
        self.file_service.install(app)
        app.router.add_post("/v1/batches", guard(self.create))
        app.router.add_get("/v1/batches", guard(self.list_batches))
        app.router.add_get("/v1/batches/{id}", guard(self.get_batch))
        app.router.add_post("/v1/batches/{id}/cancel", guard(self.cancel))

    async def stop(self) -> None:
        return None

    def now(self) -> float:
        return self.sim.config.clock()

    def bad(self, message: str, param: str | None = None, status: int = 400) -> web.Response:
        return self.http.bad(message, param, status)

    # -- batches -----------------------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        try:
            spec = await request.json()
        except ValueError:
            return self.bad("We could not parse the JSON body of your request.")
        if not isinstance(spec, dict):
            return self.bad("The body of your request must be a JSON object.")
        if spec.get("completion_window") != "24h":
            return self.bad(
                f"Invalid completion_window: {spec.get('completion_window')!r}. Supported: '24h'.", "completion_window"
            )
        if spec.get("endpoint") not in ENDPOINTS:
            return self.bad(f"Invalid endpoint: {spec.get('endpoint')!r}.", "endpoint")
        if spec.get("input_file_id") not in self.files:
            return self.bad(f"No such File object: {spec.get('input_file_id')}", "input_file_id", 404)
        metadata = spec.get("metadata") or {}
        if (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or any(
                not isinstance(k, str) or not isinstance(v, str) or len(k) > 64 or len(v) > 512
                for k, v in metadata.items()
            )
        ):
            return self.bad(
                "Invalid metadata: at most 16 string pairs, keys up to 64 and values up to 512 characters.", "metadata"
            )
        batch = SimBatch(
            f"batch_{uuid.uuid4().hex[:24]}", spec["endpoint"], spec["input_file_id"], metadata, self.now()
        )
        self.batches[batch.id] = batch
        self.created += 1
        return web.json_response(self.view(batch))

    def _batch(self, request: web.Request) -> SimBatch | web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return self.bad(f"No such batch: {request.match_info['id']}", "id", 404)
        self.advance(batch)
        return batch

    async def get_batch(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch(request)
        return batch if isinstance(batch, web.Response) else web.json_response(self.view(batch))

    async def list_batches(self, request: web.Request) -> web.StreamResponse:
        items = sorted(self.batches.values(), key=lambda b: (b.created, b.id), reverse=True)
        for batch in items:
            self.advance(batch)
        return web.json_response(page([self.view(b) for b in items], request))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        batch = self._batch(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.status not in ("validating", "in_progress", "finalizing"):
            return self.bad(f"Cannot cancel a batch with status {batch.status}.", None, 409)
        batch.cancel_at = self.now()
        batch.status = "cancelling"
        batch.stamps["cancelling_at"] = batch.cancel_at
        return web.json_response(self.view(batch))

    # -- the life cycle ----------------------------------------------------------------------------------------

    def advance(self, batch: SimBatch) -> None:
        """Bring ``batch`` to the state the clock says it is in."""
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return
        cfg, now = self.sim.config, self.now()
        span = cfg.batch_seconds
        start = batch.created + 0.1 * span
        if batch.status == "validating" and batch.cancel_at is None and now >= start:
            self.validate(batch, start)
            if batch.status == "failed":
                return
        if batch.cancel_at is not None:
            if now >= batch.cancel_at + 0.1 * span:
                self.finish(batch, "cancelled", batch.cancel_at + 0.1 * span, self._done_by(batch, batch.cancel_at))
            return
        expire_at = batch.created + cfg.batch_expire_seconds
        if now >= expire_at and now < batch.created + span:
            self.finish(batch, "expired", expire_at, self._done_by(batch, expire_at))
        elif now >= batch.created + span:
            if expire_at < batch.created + span:
                self.finish(batch, "expired", expire_at, self._done_by(batch, expire_at))
            else:
                self.finish(batch, "completed", batch.created + span, len(batch.lines))
        elif now >= batch.created + 0.8 * span:
            batch.status = "finalizing"
            batch.stamps.setdefault("finalizing_at", batch.created + 0.8 * span)
            batch.counts["completed"] = len(batch.lines)

    def _done_by(self, batch: SimBatch, moment: float) -> int:
        """Lines finished by ``moment``: line k of n finishes at the middle of its share of in_progress
        (0.1 B .. 0.8 B), so even a one-line batch finishes half way through."""
        if not batch.lines:
            return 0
        span = self.sim.config.batch_seconds
        fraction = (moment - (batch.created + 0.1 * span)) / (0.7 * span)
        return max(0, min(len(batch.lines), int(len(batch.lines) * fraction + 0.5)))

    def validate(self, batch: SimBatch, at: float) -> None:
        lines, models, errors = read_input(self.files[batch.input_file_id].content, batch.endpoint)
        batch.stamps["in_progress_at"] = at
        if errors:
            batch.status, batch.errors = "failed", errors
            batch.stamps["failed_at"] = at
            return
        batch.lines = lines
        batch.model = next(iter(models))
        batch.counts["total"] = len(lines)
        batch.input_tokens = sum(self._prompt(batch.endpoint, body) for _, body, _ in lines)
        limit = self._queue_limit(batch.model)
        queued = sum(
            b.input_tokens
            for b in self.batches.values()
            if b is not batch and b.model == batch.model and b.status in ("in_progress", "finalizing")
        )
        if limit is not None and queued + batch.input_tokens > limit:
            batch.status = "failed"
            batch.stamps["failed_at"] = at
            batch.errors = [
                line_error(
                    "token_limit_exceeded",
                    f"Enqueued token limit reached for {batch.model} in organization org-sim. Limit: {limit:,} "
                    "enqueued tokens. Please try again once some in_progress batches have been completed.",
                )
            ]
            batch.input_tokens = 0
            return
        batch.status = "in_progress"

    def _prompt(self, endpoint: str, body: dict[str, Any]) -> int:
        checked = self.sim.problem(endpoint, body)
        return checked.prompt if isinstance(checked, Accepted) else 0

    def _queue_limit(self, model_name: str) -> int | None:
        cfg = self.sim.config
        if cfg.batch_queue_tokens is not None:
            return cfg.batch_queue_tokens
        try:
            return self.sim.limits.model(model_name).limits_for(cfg.tier).batch_queue_tokens
        except ConfigError:
            return None

    def finish(self, batch: SimBatch, status: str, at: float, done: int) -> None:
        """Write the output and error files: lines up to ``done`` answered (billed), the rest unfinished."""
        output: list[str] = []
        failures: list[str] = []
        usage = {"input_tokens": 0, "cached": 0, "output_tokens": 0}
        unfinished = {
            "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
            "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
        }
        for index, (custom_id, body, raw) in enumerate(batch.lines):
            line_id = f"batch_req_{uuid.uuid4().hex[:24]}"
            if index >= done:
                code, message = unfinished.get(status, ("batch_failed", "not executed"))
                failures.append(
                    json.dumps(
                        {
                            "id": line_id,
                            "custom_id": custom_id,
                            "response": None,
                            "error": {"code": code, "message": message},
                        }
                    )
                )
                continue
            if self.rng.random() < self.sim.config.batch_line_error_rate:
                failures.append(
                    json.dumps(
                        {
                            "id": line_id,
                            "custom_id": custom_id,
                            "response": {
                                "status_code": 500,
                                "request_id": uuid.uuid4().hex,
                                "body": {
                                    "error": {
                                        "message": "The server had an error while processing your request.",
                                        "type": "server_error",
                                        "param": None,
                                        "code": None,
                                    }
                                },
                            },
                            "error": None,
                        }
                    )
                )
                continue
            checked = self.sim.problem(batch.endpoint, body)
            if isinstance(checked, Refused):
                status_code, error = checked.status, checked.body
                output.append(
                    json.dumps(
                        {
                            "id": line_id,
                            "custom_id": custom_id,
                            "response": {"status_code": status_code, "request_id": uuid.uuid4().hex, "body": error},
                            "error": None,
                        }
                    )
                )
                continue
            model, prompt = checked.model, checked.prompt
            result, out = self.sim.answer(batch.endpoint, body, raw, model, prompt, "batch")
            cached = result.get("usage", {}).get("prompt_tokens_details", {}).get("cached_tokens", 0) or 0
            usage["input_tokens"] += int(prompt)
            usage["cached"] += int(cached)
            usage["output_tokens"] += out
            output.append(
                json.dumps(
                    {
                        "id": line_id,
                        "custom_id": custom_id,
                        "response": {"status_code": 200, "request_id": uuid.uuid4().hex, "body": result},
                        "error": None,
                    }
                )
            )
        name = batch.id
        if output:
            batch.output_file_id = self.file_service.add_file(
                f"{name}_output.jsonl", "batch_output", ("\n".join(output) + "\n").encode()
            ).id
        if failures:
            batch.error_file_id = self.file_service.add_file(
                f"{name}_error.jsonl", "batch_output", ("\n".join(failures) + "\n").encode()
            ).id
        batch.counts = {"total": len(batch.lines), "completed": len(output), "failed": len(failures)}
        batch.usage = {
            "input_tokens": usage["input_tokens"],
            "input_tokens_details": {"cached_tokens": usage["cached"]},
            "output_tokens": usage["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
        }
        batch.status = status
        batch.stamps.setdefault("finalizing_at", at)
        batch.stamps[f"{status}_at"] = at

    def view(self, b: SimBatch) -> dict[str, Any]:
        stamp = {k: int(v) for k, v in b.stamps.items()}
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "model": b.model,
            "errors": None if b.errors is None else {"object": "list", "data": b.errors},
            "input_file_id": b.input_file_id,
            "completion_window": "24h",
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": int(b.created),
            "in_progress_at": stamp.get("in_progress_at"),
            "expires_at": int(b.created + self.sim.config.batch_expire_seconds),
            "finalizing_at": stamp.get("finalizing_at"),
            "completed_at": stamp.get("completed_at"),
            "failed_at": stamp.get("failed_at"),
            "expired_at": stamp.get("expired_at"),
            "cancelling_at": stamp.get("cancelling_at"),
            "cancelled_at": stamp.get("cancelled_at"),
            "request_counts": dict(b.counts),
            "metadata": b.metadata,
            "usage": b.usage,
        }
