"""Which tier an account is at, from what servers stated, and a project's own limits from OpenAI's admin API.

Real limits beat the table: the ``x-ratelimit-limit-requests`` / ``-tokens`` headers of answers (the sync executor
stores them per model) name a tier when they match a row of tier_limits.json; with ``OPENAI_ADMIN_KEY`` set,
``GET /v1/organization/projects/{project_id}/rate_limits`` gives the project's limits per model (requests and
tokens per minute, requests per day, batch input tokens per day), which the planner uses for the current tier.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio

from runner.errors import ConfigError
from runner.limits import Limits, RateLimits
from runner.store import StatedLimits, Store

__all__ = ["Detection", "admin_limits", "detect", "tier_for", "tier_matching"]


@dataclass(frozen=True)
class Detection:
    """What the stored statements say: the ``tier`` they match (None: none or no statement), and in words."""

    tier: str | None
    said: str


def tier_for(limits: Limits, model: str, rpm: int | None, tpm: int | None) -> str | None:
    """The tier whose table row for ``model`` has these requests and tokens per minute."""
    for tier, row in limits.model(model).limits.items():
        if (row.rpm, row.tpm) == (rpm, tpm):
            return tier
    return None


def tier_matching(limits: Limits, stated: StatedLimits) -> str | None:
    """The tier whose table row for the model has the stated requests and tokens per minute."""
    return tier_for(limits, stated.model, stated.rpm, stated.tpm)


def detect(store: Store, limits: Limits, models: list[str], claimed: str | None = None) -> Detection:
    """The tier the limits stated for ``models`` point to (the first model with a statement decides), and a line
    saying so; a warning when it is not ``claimed`` (the --tier given)."""
    for model in models:
        for stated in store.history.stated_limits(model):
            tier = tier_matching(limits, stated)
            age = _age(time.time() - stated.seen_at)
            what = f"{model}: {_count(stated.rpm)} RPM, {_count(stated.tpm)} TPM ({stated.source}, {age} ago)"
            if stated.source == "admin":
                return Detection(claimed or tier, f"your project's limits: {what}")
            if tier is None:
                return Detection(claimed, f"warning: the server stated {what}: no tier in tier_limits.json has those")
            if claimed is not None and tier != claimed:
                return Detection(claimed, f"warning: the server stated {what}: {tier}'s limits, not {claimed}'s")
            return Detection(tier, f"tier detected: {tier} ({what})")
    return Detection(claimed, "" if claimed else "tier unknown: pass --tier, or run a --pilot to read the headers")


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def admin_limits(base_url: str, project: str | None = None, admin_key: str | None = None) -> dict[str, RateLimits]:
    """The project's rate limits per model from the admin API (``OPENAI_ADMIN_KEY``, ``OPENAI_PROJECT_ID``)."""
    key = admin_key or os.environ.get("OPENAI_ADMIN_KEY")
    project = project or os.environ.get("OPENAI_PROJECT_ID")
    if not key:
        raise ConfigError("OPENAI_ADMIN_KEY is not set")
    if not project:
        raise ConfigError("the admin API needs the project: set OPENAI_PROJECT_ID or pass --project")
    items = anyio.run(_fetch, base_url.rstrip("/"), project, key, backend="asyncio")
    out: dict[str, RateLimits] = {}
    for item in items:
        out[str(item["model"])] = RateLimits(
            rpm=_int(item.get("max_requests_per_1_minute")),
            tpm=_int(item.get("max_tokens_per_1_minute")),
            rpd=_int(item.get("max_requests_per_1_day")),
            batch_queue_tokens=_int(item.get("batch_1_day_max_input_tokens")),
        )
    return out


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


async def _fetch(base_url: str, project: str, key: str) -> list[dict[str, Any]]:
    url = f"{base_url}/organization/projects/{project}/rate_limits"
    items: list[dict[str, Any]] = []
    after: str | None = None
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for _ in range(1000):  # pages of 100: far more models than exist
            params = {"limit": "100", **({"after": after} if after else {})}
            try:
                async with session.get(url, headers=headers, params=params) as reply:
                    body = await reply.json(content_type=None)
                    status = reply.status
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"the admin API at {url} did not answer ({exc or type(exc).__name__})") from exc
            if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
                error = body.get("error") if isinstance(body, dict) else None
                message = error.get("message") if isinstance(error, dict) else str(body)[:200]
                raise ConfigError(f"the admin API refused GET {url} ({status}): {message}")
            items += [d for d in body["data"] if isinstance(d, dict) and "model" in d]
            if not body.get("has_more") or not body["data"]:
                return items
            after = str(body["data"][-1]["id"])
    return items
