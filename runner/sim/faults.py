"""Faults the simulator injects, scripted or at random, in OpenAI's shapes.

400 invalid_request_error · 500 server_error · 503 server_is_overloaded · 429 rate_limit_exceeded (with
Retry-After) · 429 slow_down · 429 insufficient_quota · a 200 that is not JSON (a proxy's page) · a connection
reset · a timeout (no answer for ``hang_seconds``, then a reset). Random faults (``fault_rate``) draw from
``FAULT_KINDS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from runner.sim.http import Http

__all__ = ["FAULT_KINDS", "inject", "quota_error"]

FAULT_KINDS = ("500", "503", "reset", "timeout")


def quota_error(http: Http) -> web.Response:
    return http.error(
        429,
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
        "insufficient_quota",
    )


async def inject(http: Http, fault: dict[str, Any], drop: Callable[[], None]) -> web.StreamResponse:
    """The answer for ``fault``, or the connection dropped (``drop``, then ConnectionResetError)."""
    kind = fault["kind"]
    if kind == "500":
        return http.error(
            500, "The server had an error while processing your request. Sorry about that!", "server_error"
        )
    if kind == "503":
        return http.error(
            503, "The server is overloaded or not ready yet.", "service_unavailable_error", "server_is_overloaded"
        )
    if kind == "slow_down":
        return http.error(
            429, "Please reduce your rate of requests.", "rate_limit_error", "slow_down", headers={"retry-after": "1"}
        )
    if kind == "429":
        wait = float(fault.get("retry_after", 1.0))
        return http.error(
            429,
            f"Rate limit reached for requests. Please try again in {wait:g}s.",
            "requests",
            "rate_limit_exceeded",
            headers={"retry-after": str(max(1, round(wait))), "retry-after-ms": str(round(wait * 1000))},
        )
    if kind == "400":  # a request OpenAI refuses as written: no retry can cure it
        return http.error(
            400,
            "Invalid value for 'temperature': expected a number between 0 and 2.",
            "invalid_request_error",
            "invalid_value",
            "temperature",
        )
    if kind == "garbage":  # a 200 that is not an API answer, as a misbehaving proxy sends
        return web.Response(status=200, text="<html>502 Bad Gateway</html>", content_type="text/html")
    if kind == "quota":
        return quota_error(http)
    http.stats.errors[kind] += 1
    if kind == "timeout":
        await asyncio.sleep(float(fault.get("seconds", http.config.hang_seconds)))
    drop()
    raise ConnectionResetError(kind)
