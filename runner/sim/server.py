"""The simulator's HTTP server: an OpenAI stand-in on loopback (aiohttp).

Serves /v1/chat/completions, /v1/responses, /v1/embeddings and /v1/models in the official shapes, enforces a
tier's limits (``buckets``), models latency (time to first token + output tokens / speed, per model, times
``latency_scale``), bills usage at standard prices, and injects faults: at random (``fault_rate``) or scripted
(``script``, or ``POST /_sim/faults``): 500, 503, reset (connection dropped), timeout (no answer for
``hang_seconds``), 429 (rate-limit storm), slow_down, quota (insufficient_quota). ``quota_usd`` turns every
request into insufficient_quota once that much has been billed. ``GET /_sim/stats`` counts what happened, from
the server's side. Batch endpoints live in ``runner.sim.batches``, the admin rate-limits endpoint in
``runner.sim.admin``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import random
from collections.abc import Callable
from typing import Any

from aiohttp import web

from runner.durations import format_go
from runner.encodings import encoding
from runner.errors import ConfigError
from runner.limits import ModelInfo, load_limits
from runner.money import from_usd
from runner.sim.admin import AdminService
from runner.sim.answers import SHAPES, seed_of
from runner.sim.batches import BatchService
from runner.sim.buckets import ENFORCEMENTS, READINGS, Admission, ModelBuckets
from runner.sim.cache import PrefixCache
from runner.sim.config import HEADER_TIMES, SimConfig, SimStats
from runner.sim.counting import choices_of, counting, output_cap, prompt_tokens
from runner.sim.faults import FAULT_KINDS, inject, quota_error
from runner.sim.http import Accepted, Http, Refused, error_body

__all__ = ["Accepted", "Refused", "SimConfig", "Simulator", "error_body"]


class Simulator:
    """One simulated OpenAI organisation. ``app`` is the aiohttp application; ``start`` serves it."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        for value, known, what in (
            (self.config.headers, READINGS, "header reading"),
            (self.config.enforcement, ENFORCEMENTS, "enforcement"),
            (self.config.header_time, HEADER_TIMES, "header time"),
        ):
            if value not in known:
                raise ConfigError(f"unknown {what} {value!r} (known: {', '.join(known)})")
        try:
            self.counting = counting(self.config.counting)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.limits = self.config.limits or load_limits()
        self.limits.tier(self.config.tier)
        # the tokenizers are loaded before the port opens: a first request that waits a second for them reaches the
        # buckets together with the next few, as if the client had sent them all at once
        for tokenizer in sorted({model.tokenizer for model in self.limits.models.values()}):
            encoding(tokenizer)
        self.stats = SimStats()
        self.started = self.config.clock()
        self.http = Http(self.config, self.stats)
        self.rng = random.Random(self.config.seed)
        self.scripted: collections.deque[dict[str, Any]] = collections.deque()
        self.buckets: dict[tuple[str, bool], ModelBuckets] = {}
        self.cache = PrefixCache()
        self.counter = 0
        self.app = web.Application(client_max_size=256 * 1024 * 1024)
        for path in SHAPES:
            self.app.router.add_post(path, self.http.guard(self._endpoint(path)))
        self.app.router.add_get("/v1/models", self.http.guard(self.models))
        self.app.router.add_get("/v1/models/{model}", self.http.guard(self.model))
        self.app.router.add_get("/_sim/stats", self.get_stats)
        self.app.router.add_post("/_sim/faults", self.post_faults)
        self.batches = BatchService(self.http, self)
        self.batches.install(self.app)
        AdminService(self.http, self.limits).install(self.app)
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    # -- life cycle ------------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        self.base_url = f"http://{host}:{bound}/v1"
        return self.base_url

    async def stop(self) -> None:
        await self.batches.stop()
        if self.runner is not None:
            await self.runner.cleanup()

    def script(self, kind: str, times: int = 1, **params: Any) -> None:
        """Queue a fault for the next ``times`` requests: 400, 500, 503, reset, timeout, 429, slow_down, quota,
        garbage."""
        for _ in range(times):
            self.scripted.append({"kind": kind, **params})

    # -- plumbing ---------------------------------------------------------------------------------------------

    def buckets_for(self, model: ModelInfo, prompt_tokens: int) -> ModelBuckets:
        limits = model.limits_for(self.config.tier, prompt_tokens)
        long = limits is not model.limits.get(self.config.tier)
        key = (model.name, long)
        if key not in self.buckets:
            own = limits.override(self.config.rpm, self.config.tpm, self.config.rpd)
            c = self.config
            stops = math.inf if c.background_seconds is None else self.started + c.background_seconds
            self.buckets[key] = ModelBuckets(
                own.rpm, own.tpm, own.rpd, c.window, c.clock, c.headers, c.background, stops, c.enforcement
            )
        return self.buckets[key]

    async def _fault(self, drop: Callable[[], None]) -> web.StreamResponse | None:
        fault = self.scripted.popleft() if self.scripted else None
        if fault is None and self.config.fault_rate and self.rng.random() < self.config.fault_rate:
            fault = {"kind": self.rng.choice(FAULT_KINDS)}
        return None if fault is None else await inject(self.http, fault, drop)

    def _body(self, raw: bytes) -> tuple[dict[str, Any], str] | web.Response:
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self.http.error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        if not isinstance(body, dict):
            return self.http.error(400, "The body of your request must be a JSON object.", "invalid_request_error")
        return body, raw.decode()

    # -- the answering pipeline shared by chat, responses and embeddings ------------------------------------

    def problem(self, endpoint: str, body: dict[str, Any]) -> Accepted | Refused:
        """What the request will be answered with: ``Accepted`` (its model and prompt tokens), or ``Refused`` (the
        status and error body of a request that cannot be answered)."""
        name = body.get("model")
        if not isinstance(name, str):
            return Refused(
                400, error_body("you must provide a model parameter", "invalid_request_error", None, "model")
            )
        try:
            model = self.limits.model(name)
        except ConfigError:
            return Refused(
                404,
                error_body(
                    f"The model `{name}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                ),
            )
        if endpoint not in model.endpoints:
            message = f"{model.name} does not support {endpoint}."
            return Refused(400, error_body(message, "invalid_request_error", None, "model"))
        prompt = prompt_tokens(endpoint, body, encoding(model.tokenizer))
        if prompt > model.input_limit:
            return Refused(
                400,
                error_body(
                    f"This model's maximum context length is {model.input_limit} tokens. However, your messages "
                    f"resulted in {prompt} tokens. Please reduce the length of the messages.",
                    "invalid_request_error",
                    "context_length_exceeded",
                    "messages",
                ),
            )
        return Accepted(model, prompt)

    def answer(
        self,
        endpoint: str,
        body: dict[str, Any],
        text: str,
        model: ModelInfo,
        prompt: int,
        service_tier: str = "standard",
    ) -> tuple[dict[str, Any], int]:
        """The answer body for a valid request, billed at ``service_tier``; returns it and its output tokens.

        The seed is the body's canonical JSON: the same request gets the same answer in sync and batch mode."""
        seed = seed_of(json.dumps(body, sort_keys=True, separators=(",", ":")))
        self.counter += 1
        generates = endpoint != "/v1/embeddings"  # prompt caching is for generation, not embeddings
        cached = self.cache.hit(model.name, body, encoding(model.tokenizer), prompt) if generates else 0
        result, output = SHAPES[endpoint](
            seed, self.counter, model, body, prompt, cached, self.config.answer_words, self.config.flawed_rate
        )
        tier = str(body.get("service_tier")) if service_tier == "standard" else service_tier
        prices = model.prices.get(tier, model.prices["standard"])
        self.stats.spend += (prompt - cached) * prices.input + cached * prices.cached_input + output * prices.output
        self.stats.answered += 1
        self.stats.prompt_tokens += prompt
        self.stats.cached_tokens += cached
        self.stats.output_tokens += output
        return result, output

    async def _serve(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        def drop() -> None:
            if request.transport is not None:
                request.transport.abort()

        return await self.respond(endpoint, await request.read(), drop)

    async def call(self, endpoint: str, raw: bytes) -> web.StreamResponse:
        """One request without HTTP (``endpoint`` as ``/v1/chat/completions``, the raw body): what the server would
        answer, counted in the stats. A fault that drops the connection raises ConnectionResetError. It runs on the
        caller's loop and the simulator's clock, so a whole run can play out on virtual time."""
        with self.http.counted():
            return await self.respond(endpoint, raw, lambda: None)

    async def respond(self, endpoint: str, raw: bytes, drop: Callable[[], None]) -> web.StreamResponse:
        """The answer to one request's raw body: an API answer, an error, or a fault (``drop`` cuts the line)."""
        parsed = self._body(raw)
        if isinstance(parsed, web.Response):
            return parsed
        body, text = parsed
        checked = self.problem(endpoint, body)
        if isinstance(checked, Refused):
            e = checked.body["error"]
            return self.http.error(checked.status, e["message"], e["type"], e["code"], e["param"])
        model, prompt = checked.model, checked.prompt
        fault = await self._fault(drop)
        if fault is not None:
            return fault
        if self.config.quota_usd is not None and self.stats.spend >= from_usd(self.config.quota_usd):
            return quota_error(self.http)
        cap = output_cap(endpoint, body, self.limits.output_reservation_tokens, model.max_output_tokens)
        reserved = self.counting.admitted(prompt, text, cap, choices_of(body))
        buckets = self.buckets_for(model, prompt)
        admission = buckets.admit(reserved, self.config.count_rejected)
        if not admission.ok:
            return self._rate_limited(model, buckets, admission, reserved)
        self.stats.counted_tokens += reserved
        admitted_at = admission.at
        early = buckets.headers() if self.config.header_time == "sent" else None
        result, output = self.answer(endpoint, body, text, model, prompt)
        delay = self._latency(model, output)
        if delay > 0:
            await asyncio.sleep(delay)
        if self.counting.refunds:
            final = self.counting.answered(prompt, text, output)
            buckets.settle(reserved, final, admitted_at)
            self.stats.counted_tokens += final - reserved
        headers = {**self.http.headers(), **(early if early is not None else buckets.headers())}
        return web.Response(body=json.dumps(result).encode(), content_type="application/json", headers=headers)

    def _latency(self, model: ModelInfo, output: int) -> float:
        """First token + output tokens at the model's speed (or the configured ones), times ``latency_scale``."""
        c = self.config
        first = float(model.first_token_seconds) if c.first_token_seconds is None else c.first_token_seconds
        speed = float(model.output_tokens_per_second) if c.tokens_per_second is None else c.tokens_per_second
        return (first + (output / speed if speed else 0.0)) * c.latency_scale

    def _rate_limited(self, model: ModelInfo, buckets: ModelBuckets, a: Admission, reserved: int) -> web.Response:
        headers = buckets.headers()
        if a.too_large:
            limit = buckets.tokens.limit if buckets.tokens else 0
            return self.http.error(
                429,
                f"Request too large for {model.name} in organization org-sim on tokens per min (TPM): "
                f"Limit {limit}, Requested {reserved}. The input or output tokens must be reduced in order to run "
                "successfully. Visit https://platform.openai.com/account/rate-limits to learn more.",
                "tokens",
                "rate_limit_exceeded",
                headers=headers,
            )
        unit = {"requests": "RPM" if a.period == "min" else "RPD", "tokens": "TPM"}[a.dimension]
        per = "min" if a.period == "min" else "day"
        bucket = buckets.requests if a.dimension == "requests" else buckets.tokens
        limit = (buckets.rpd if a.period == "day" else bucket.limit if bucket else 0) or 0
        asked = reserved if a.dimension == "tokens" else 1
        headers["retry-after"] = str(max(1, int(a.retry_after + 0.999)))
        headers["retry-after-ms"] = str(max(1, round(a.retry_after * 1000)))
        return self.http.error(
            429,
            f"Rate limit reached for {model.name} in organization org-sim on {a.dimension} per {per} ({unit}): "
            f"Limit {limit}, Used {a.used}, Requested {asked}. Please try again in {format_go(a.retry_after)}. "
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            a.dimension,
            "rate_limit_exceeded",
            headers=headers,
        )

    # -- endpoints --------------------------------------------------------------------------------------------

    def _endpoint(self, path: str) -> Any:
        async def serve(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, path)

        return serve

    def _model_object(self, info: ModelInfo) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": info.name,
            "object": "model",
            "created": 1744588800,
            "owned_by": "system",
        }
        if info.shutdown_date:
            entry["shutdown_date"] = info.shutdown_date
        return entry

    async def models(self, request: web.Request) -> web.StreamResponse:
        data = [self._model_object(m) for m in self.limits.models.values()]
        return web.json_response({"object": "list", "data": data}, headers=self.http.headers())

    async def model(self, request: web.Request) -> web.StreamResponse:
        try:
            info = self.limits.model(request.match_info["model"])
        except ConfigError:
            return self.http.error(
                404,
                f"The model '{request.match_info['model']}' does not exist",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        return web.json_response(self._model_object(info), headers=self.http.headers())

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats.as_dict())

    async def post_faults(self, request: web.Request) -> web.StreamResponse:
        spec = await request.json()
        params = {k: v for k, v in spec.items() if k not in ("kind", "times")}
        self.script(str(spec["kind"]), int(spec.get("times", 1)), **params)
        return web.json_response({"queued": len(self.scripted)})
