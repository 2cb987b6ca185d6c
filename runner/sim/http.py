"""What every endpoint of the simulator shares: the key check, the counters, and OpenAI's error shape and headers.

Each service (``server``, ``files``, ``batches``) wraps its handlers with ``Http.guard`` and answers errors with
``Http.error``; none of them imports another's module.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from runner.limits import ModelInfo
from runner.sim.config import SimConfig, SimStats

__all__ = ["Accepted", "Handler", "Http", "Refused", "error_body"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass(frozen=True)
class Accepted:
    """A request the simulator will answer (rate limits permitting)."""

    model: ModelInfo
    prompt: int  # tokens, as its usage will report them


@dataclass(frozen=True)
class Refused:
    """A request the simulator refuses whatever the limits: the status and the API's error body."""

    status: int
    body: dict[str, Any]


class Http:
    def __init__(self, config: SimConfig, stats: SimStats) -> None:
        self.config, self.stats = config, stats

    def headers(self) -> dict[str, str]:
        """Headers every answer carries."""
        return {
            "x-request-id": f"req_{uuid.uuid4().hex}",
            "openai-version": "2020-10-01",
            "openai-organization": "org-sim",
            "openai-processing-ms": "1",
        }

    def guard(self, handler: Handler) -> Handler:
        """``handler`` counted in the stats, behind the key check (401 for another key, as OpenAI words it)."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            with self.counted():
                key = self.config.api_key
                if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
                    given = request.headers.get("Authorization", "").removeprefix("Bearer ")
                    shown = f"{given[:3]}***{given[-4:]}" if len(given) > 8 else "***"
                    return self.error(
                        401, f"Incorrect API key provided: {shown}.", "invalid_request_error", "invalid_api_key"
                    )
                return await handler(request)

        return wrapped

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """One request in the stats, from its arrival to its answer."""
        self.stats.requests += 1
        if self.stats.first_request_at is None:
            self.stats.first_request_at = time.time()
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            yield
        finally:
            self.stats.in_flight -= 1
            self.stats.last_reply_at = time.time()

    def error(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """An error answer in OpenAI's shape, counted in the stats."""
        self.stats.errors[f"{status}:{code or type_}"] += 1
        if status == 429 and type_ in ("tokens", "requests"):
            self.stats.rate_limited += 1
        return web.json_response(
            error_body(message, type_, code, param), status=status, headers={**self.headers(), **(headers or {})}
        )

    def bad(self, message: str, param: str | None = None, status: int = 400) -> web.Response:
        """An ``invalid_request_error``."""
        return self.error(status, message, "invalid_request_error", None, param)
