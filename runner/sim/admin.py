"""The admin endpoint of the simulator: ``GET /v1/organization/projects/{project_id}/rate_limits``.

It lists the project's rate limits per model in OpenAI's ``ProjectRateLimitListResponse`` shape: the simulated
tier's row of tier_limits.json for every model that has one (with the simulator's ``rpm`` / ``tpm`` / ``rpd`` /
``batch_queue_tokens`` overrides), paged by ``limit`` and ``after``. Only an admin key (``sk-admin-...``, or
exactly ``admin_key`` when set) may read it; the project must be ``project_id``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runner.limits import Limits
from runner.sim.http import Http

__all__ = ["AdminService"]

ADMIN_PREFIX = "sk-admin-"


class AdminService:
    def __init__(self, http: Http, limits: Limits) -> None:
        self.http, self.limits = http, limits

    def install(self, app: web.Application) -> None:
        app.router.add_get("/v1/organization/projects/{project_id}/rate_limits", self.rate_limits)

    def allowed(self, request: web.Request) -> bool:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        wanted = self.http.config.admin_key
        return key == wanted if wanted is not None else key.startswith(ADMIN_PREFIX)

    def rows(self) -> list[dict[str, Any]]:
        c = self.http.config
        rows = []
        for name, model in sorted(self.limits.models.items()):
            if c.tier not in model.limits:
                continue
            own = model.limits[c.tier].override(c.rpm, c.tpm, c.rpd)
            row: dict[str, Any] = {
                "object": "project.rate_limit",
                "id": f"rl-{name}",
                "model": name,
                "max_requests_per_1_minute": own.rpm or 0,
                "max_tokens_per_1_minute": own.tpm or 0,
            }
            if own.rpd is not None:
                row["max_requests_per_1_day"] = own.rpd
            queue = c.batch_queue_tokens or own.batch_queue_tokens
            if queue is not None:
                row["batch_1_day_max_input_tokens"] = queue
            rows.append(row)
        return rows

    async def rate_limits(self, request: web.Request) -> web.StreamResponse:
        self.http.stats.requests += 1
        if not self.allowed(request):
            return self.http.error(
                403,
                "You have insufficient permissions for this operation. Missing scopes: api.management.read. "
                "Use an admin key.",
                "invalid_request_error",
            )
        project = request.match_info["project_id"]
        if project != self.http.config.project_id:
            return self.http.error(404, f"No such project: '{project}'.", "invalid_request_error")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return self.http.bad("limit must be an integer", "limit")
        if not 1 <= limit <= 100:
            return self.http.bad("limit must be between 1 and 100", "limit")
        rows = self.rows()
        after = request.query.get("after")
        if after is not None:
            ids = [r["id"] for r in rows]
            if after not in ids:
                return self.http.bad(f"No such object: '{after}'.", "after")
            rows = rows[ids.index(after) + 1 :]
        page = rows[:limit]
        body = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(rows) > limit,
        }
        return web.json_response(body, headers=self.http.headers())
