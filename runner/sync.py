"""The sync executor: claim pending requests, pass each through its model's gate, send, record.

One dispatcher claims due requests in small batches (lease), waits for an in-flight slot and the gate, and
starts one task per request. Each task sends, classifies the answer with the retry table and queues an
``Outcome``; a writer commits outcomes in groups (state, result and spend of each in one transaction). The
in-flight bound follows Little's law: admitted rate x observed latency x 1.5, between 8 and ``concurrency``.

The run stops early, resumably, on insufficient_quota, a refused key, --max-spend, --deadline, the daily request
limit, or cancellation; requests in flight then go back to pending.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from runner.errors import AuthError, BudgetReached, DeadlineReached, QuotaExhausted, RunnerError, StoppedEarly
from runner.limits import Limits, ModelInfo, RateLimits
from runner.pricing import cost, price_table, usage_of
from runner.ratelimit import Gate, retry_after_seconds
from runner.retry import Action, Failure, RetryPolicy, decide
from runner.store import Claimed, Outcome, Store
from runner.transport import Reply, Transport, TransportError

__all__ = ["RunSettings", "Snapshot", "SyncExecutor"]


@dataclass
class RunSettings:
    tier: str = "tier-1"
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    batch_queue_tokens: int | None = None  # instead of the tier's batch queue limit
    headroom: float = 0.03
    burst_seconds: float = 1.0
    concurrency: int = 2048
    max_spend: int | None = None  # picodollars
    deadline: float | None = None  # wall clock (time.time) by which to stop
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    request_timeout: float = 600.0
    lease_seconds: float = 900.0
    heartbeat_seconds: float = 5.0
    flush_seconds: float = 0.05
    seed: int | None = None

    @property
    def explicit_limits(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.rpd))


@dataclass(frozen=True)
class Snapshot:
    """Live figures for the progress display."""

    done: int
    failed: int
    total: int
    in_flight: int
    requests_per_min: float
    tokens_per_min: float
    rpm_limit: int | None
    tpm_limit: int | None
    spend: int
    eta_seconds: float | None
    paused_for: float
    notices: tuple[str, ...]
    detail: str = ""
    mode: str = "sync"


class SyncExecutor:
    def __init__(
        self,
        store: Store,
        run: str,
        owner: str,
        limits: Limits,
        settings: RunSettings,
        transport: Transport,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.run, self.owner, self.limits = store, run, owner, limits
        self.settings, self.transport = settings, transport
        self.clock, self.monotonic = clock, monotonic
        self.rng = random.Random(settings.seed)
        self.gates: dict[tuple[str, bool], Gate] = {}
        self.rate_limits: dict[tuple[str, bool], RateLimits] = {}
        self.outcomes: list[Outcome] = []
        self.daily: dict[tuple[str, str], list[int]] = {}
        self.in_flight = 0
        self.max_in_flight = 8
        self.latency = 1.0
        self.stop: RunnerError | None = None
        self.slot_freed = anyio.Event()
        self.recent: deque[tuple[float, int]] = deque()  # (monotonic, tokens) of answers in the last minute
        counts = store.counts(run)
        self.total = sum(counts.values())
        self.done = counts["succeeded"]
        self.failed = counts["failed"] + counts["cancelled"]
        self.spend = store.total_cost(run)
        self.started = monotonic()
        self.done_at_start = self.done + self.failed
        self.notices: list[str] = []

    # -- gates ------------------------------------------------------------------------------------------------

    def gate_for(self, model: ModelInfo, prompt_tokens: int) -> tuple[Gate, RateLimits]:
        raw = model.limits_for(self.settings.tier, prompt_tokens)
        key = (model.name, raw is not model.limits.get(self.settings.tier))
        if key not in self.gates:
            s = self.settings
            own = raw.override(s.rpm, s.tpm, s.rpd)
            self.rate_limits[key] = own
            self.gates[key] = Gate(
                own.rpm,
                own.tpm,
                headroom=s.headroom,
                burst_seconds=s.burst_seconds,
                explicit=s.explicit_limits,
                clock=self.monotonic,
            )
        return self.gates[key], self.rate_limits[key]

    # -- the run ----------------------------------------------------------------------------------------------

    async def execute(self) -> RunnerError | None:
        """Work until no request is pending; returns why it stopped before that (StoppedEarly, AuthError), or None."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._background)
                async with anyio.create_task_group() as senders:
                    await self._dispatch(senders)
                tg.cancel_scope.cancel()
        finally:
            self._flush()
        return self.stop

    async def _background(self) -> None:
        last_beat = self.monotonic()
        while True:
            await anyio.sleep(self.settings.flush_seconds)
            self._flush()
            if self.monotonic() - last_beat >= self.settings.heartbeat_seconds:
                self.store.heartbeat(self.run, self.owner, self.settings.lease_seconds)
                last_beat = self.monotonic()

    async def _dispatch(self, senders: anyio.abc.TaskGroup) -> None:
        while self.stop is None:
            if self.settings.deadline is not None and self.clock() >= self.settings.deadline:
                self.stop = DeadlineReached("deadline reached with requests still pending; re-run to continue")
                break
            free = self.max_in_flight - self.in_flight
            if free <= 0:
                await self._wait_for_slot(1.0)
                continue
            claimed = self.store.claim(self.run, self.owner, min(free, self._claim_size()), self.settings.lease_seconds)
            if not claimed:
                if self.in_flight == 0:
                    self._flush()
                    due = self.store.next_due(self.run)
                    if due is None:
                        return
                    await anyio.sleep(min(max(due - self.clock(), 0.01), 1.0))
                else:
                    await self._wait_for_slot(0.5)
                continue
            for i, request in enumerate(claimed):
                if self.stop is not None:
                    self._put_back(claimed[i:])
                    break
                await self._admit(request, senders)

    def _claim_size(self) -> int:
        rpm = min((g.rpm for g in self.gates.values() if g.rpm), default=600)
        return max(1, min(256, math.ceil(rpm / 60 * 0.25)))

    async def _wait_for_slot(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self.slot_freed.wait()
        self.slot_freed = anyio.Event()

    def _put_back(self, requests: list[Claimed]) -> None:
        self.outcomes.extend(
            Outcome(r.id, r.custom_id, "retry", error_message="not sent: run stopping") for r in requests
        )

    async def _admit(self, request: Claimed, senders: anyio.abc.TaskGroup) -> None:
        model = self.limits.model(request.model)
        reserved = request.prompt_tokens + request.output_tokens * request.n
        gate, limits = self.gate_for(model, request.prompt_tokens)
        if limits.tpm is not None and reserved > limits.tpm:
            self._fail(
                request,
                "request_too_large",
                f"line {request.line}: needs {reserved:,} tokens (prompt {request.prompt_tokens:,} + output "
                f"{request.output_tokens:,} x {request.n}), over {model.name}'s limit of {limits.tpm:,} "
                f"tokens per minute at {self.settings.tier}: it can never be admitted; lower max_tokens",
            )
            return
        day = dt.datetime.fromtimestamp(self.clock(), dt.UTC).date().isoformat()
        if limits.rpd is not None:
            stored, _ = self.store.daily(model.name, day)
            unflushed = self.daily.get((model.name, day), [0, 0])[0]
            if stored + unflushed >= limits.rpd:
                self._put_back([request])
                self.stop = StoppedEarly(
                    f"daily limit of {limits.rpd:,} requests for {model.name} reached; "
                    "re-run after 00:00 UTC to continue"
                )
                return
        await gate.acquire(reserved)
        counter = self.daily.setdefault((model.name, day), [0, 0])
        counter[0] += 1
        counter[1] += reserved
        self.in_flight += 1
        senders.start_soon(self._send, request, model, gate, reserved)

    def _fail(self, request: Claimed, code: str, message: str) -> None:
        self.outcomes.append(Outcome(request.id, request.custom_id, "failed", error_code=code, error_message=message))
        self.failed += 1

    async def _send(self, request: Claimed, model: ModelInfo, gate: Gate, reserved: int) -> None:
        try:
            try:
                reply = await self.transport.post(request.endpoint, request.body.encode())
            except TransportError as exc:
                gate.settle(reserved, 0)
                self._after_failure(request, gate, reserved, Failure(kind=exc.kind), None, str(exc))
                return
            if reply.status == 200:
                self._after_success(request, model, gate, reserved, reply)
            else:
                self._after_error(request, gate, reserved, reply)
        finally:
            self.in_flight -= 1
            self.slot_freed.set()

    def _after_success(self, request: Claimed, model: ModelInfo, gate: Gate, reserved: int, reply: Reply) -> None:
        try:
            text = reply.body.decode()
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):  # a 200 that is not an API answer (a proxy's page, a cut body): try again
            gate.settle(reserved, 0)
            self._after_failure(
                request,
                gate,
                reserved,
                Failure(kind="connection"),
                None,
                f"a 200 answer that is not a JSON object: {reply.body[:80]!r}",
            )
            return
        usage = usage_of(data)
        gate.settle(reserved, usage.total)
        gate.observe(reply.headers)
        tier_name, prices = price_table(model, data)
        price = cost(prices, usage)
        self.spend += price
        self.done += 1
        now = self.monotonic()
        self.recent.append((now, usage.total))
        self.latency = 0.9 * self.latency + 0.1 * reply.seconds
        self._resize()
        self.outcomes.append(
            Outcome(
                request.id,
                request.custom_id,
                "succeeded",
                status_code=200,
                response_id=reply.headers.get("x-request-id"),
                body=text,
                model=model.name,
                service_tier=tier_name,
                prompt_tokens=usage.prompt_tokens,
                cached_tokens=usage.cached_tokens,
                output_tokens=usage.output_tokens,
                cost=price,
            )
        )
        if self.settings.max_spend is not None and self.spend >= self.settings.max_spend and self.stop is None:
            self.stop = BudgetReached("--max-spend reached; raise it and re-run to continue")

    def _after_error(self, request: Claimed, gate: Gate, reserved: int, reply: Reply) -> None:
        gate.settle(reserved, 0)
        gate.observe(reply.headers)
        error: dict[str, Any] = {}
        try:
            parsed = json.loads(reply.body)
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
                error = parsed["error"]
        except ValueError:
            pass
        message = str(error.get("message") or reply.body[:200].decode(errors="replace"))
        tpm_header = reply.headers.get("x-ratelimit-limit-tokens")
        failure = Failure(
            status=reply.status,
            type=error.get("type"),
            code=error.get("code"),
            retry_after=retry_after_seconds(reply.headers, message),
            reserved_tokens=reserved,
            server_tpm=int(tpm_header) if tpm_header and tpm_header.isdigit() else None,
        )
        self._after_failure(request, gate, reserved, failure, reply, message)

    def _after_failure(
        self, request: Claimed, gate: Gate, reserved: int, failure: Failure, reply: Reply | None, message: str
    ) -> None:
        decision = decide(failure, request.attempts, self.settings.retry, self.rng)
        label = f"{failure.status or failure.kind} {failure.code or failure.type or ''}".strip()
        if decision.action is Action.RETRY:
            if decision.pause_gate:
                gate.pause(decision.delay)
            if decision.slow_down:
                gate.slow_down()
            self.outcomes.append(
                Outcome(
                    request.id,
                    request.custom_id,
                    "retry",
                    not_before=self.clock() + decision.delay,
                    error_message=f"{label}: {message}"[:500],
                )
            )
            return
        if decision.action is Action.FAIL:
            self.outcomes.append(
                Outcome(
                    request.id,
                    request.custom_id,
                    "failed",
                    status_code=reply.status if reply else None,
                    response_id=reply.headers.get("x-request-id") if reply else None,
                    body=reply.body.decode(errors="replace") if reply else None,
                    error_code=failure.code or failure.type or failure.kind,
                    error_message=f"{label}: {message}"[:2000],
                )
            )
            self.failed += 1
            return
        self._put_back([request])
        if self.stop is None:
            if decision.action is Action.STOP_QUOTA:
                self.stop = QuotaExhausted(f"insufficient quota: {message} Add credit or raise the limit, then re-run.")
            else:
                self.stop = AuthError(f"the API refused the key ({failure.status}): {message}")

    def _resize(self) -> None:
        """In-flight bound from Little's law: admitted rate x latency x 1.5 (8 .. --concurrency)."""
        rate = 0.0
        for gate in self.gates.values():
            by_requests = (gate.rpm or 0) / 60
            rate = max(rate, by_requests)
        wanted = math.ceil(rate * self.latency * 1.5) + 8 if rate else self.settings.concurrency
        self.max_in_flight = max(8, min(self.settings.concurrency, wanted))

    def _flush(self) -> None:
        if self.outcomes:
            batch, self.outcomes = self.outcomes, []
            self.store.record(self.owner, batch)
        if self.daily:
            daily, self.daily = self.daily, {}
            for (model, day), (requests, tokens) in daily.items():
                self.store.count_daily(model, day, requests, tokens)

    # -- progress ---------------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        now = self.monotonic()
        while self.recent and now - self.recent[0][0] > 60:
            self.recent.popleft()
        span = min(60.0, max(now - self.started, 1e-3))
        rpm = len(self.recent) * 60 / span
        tpm = sum(t for _, t in self.recent) * 60 / span
        finished = self.done + self.failed
        remaining = self.total - finished
        rate = (finished - self.done_at_start) / max(now - self.started, 1e-3)
        eta = remaining / rate if rate > 0 else None
        gate = next(iter(self.gates.values()), None)
        notices = tuple(n for g in self.gates.values() for n in g.notices)
        return Snapshot(
            self.done,
            self.failed,
            self.total,
            self.in_flight,
            rpm,
            tpm,
            gate.rpm if gate else None,
            gate.tpm if gate else None,
            self.spend,
            eta,
            gate.statistics().paused_for if gate else 0.0,
            notices,
        )
