"""The sync executor: claim pending requests, pass each through its model's gate, send, record.

One dispatcher claims due requests in small batches (lease), waits for an in-flight slot and the gate, and starts
one task per request. Each task sends, classifies the answer with the retry table and queues an ``Outcome``; a
writer commits outcomes in groups (state, result and spend of each in one transaction). The in-flight bound
follows Little's law from the first second (``_bound``), at most ``concurrency`` when the user sets it and what
the process may hold open.

The run stops early, resumably, on insufficient_quota, a refused key, --max-spend, --deadline, the daily request
limit, or cancellation; requests in flight then go back to pending. Time is injected (``clock``, ``monotonic``,
``sleep``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

import anyio

from runner.budget import Budget, worst_case
from runner.crash import crash_point
from runner.errors import (
    AuthError,
    BudgetReached,
    DeadlineReached,
    DiskFull,
    Interrupted,
    QuotaExhausted,
    RunnerError,
    StoppedEarly,
    TakenOver,
    Unreachable,
)
from runner.evidence import stated_limit
from runner.gate import Ticket
from runner.gates import Gates, Pacing, SharedGate
from runner.limits import Limits, ModelInfo
from runner.logs import log
from runner.money import fmt_usd
from runner.pricing import cost, price_table, usage_of
from runner.progress import Snapshot
from runner.retry import Action, Decision, Failure, decide, rate_limit_detail, retry_after_seconds
from runner.settings import Lane, RunSettings
from runner.store import Claimed, Move, Outcome, Store
from runner.tokens import admission_tokens
from runner.transport import Credentials, Reply, Transport, TransportError, open_files_allowed

MEASURED = 32  # replies after which their latency, not the model's typical speed, sizes the in-flight bound
RAMP_START, RAMP_PER_SECOND = 256, 1000  # the in-flight bound's pace: 256 at once, then 1,000 more a second

__all__ = ["SyncExecutor"]


class SyncExecutor:
    """``async with SyncExecutor(...) as executor: await executor.execute()``; it holds its own connection pool."""

    def __init__(
        self,
        store: Store,
        run: str,
        owner: str,
        limits: Limits,
        settings: RunSettings,
        credentials: Credentials,
        gates: Gates | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        *,
        lane: Lane | None = None,
        shared: SharedGate | None = None,
    ) -> None:
        self.store, self.run, self.owner, self.limits = store, run, owner, limits
        self.lane = lane or Lane()
        self.sent = 0  # requests sent in this pass
        self.settings, self.credentials = settings, credentials
        self.clock, self.monotonic, self.sleep = clock, monotonic, sleep
        self.shared = shared  # the gate shared with the other runners on the key (entered by the caller)
        self.source = store.store_id  # this database, in the shared gate's ledger
        self.gates = gates or Gates(settings, clock=monotonic, sleep=sleep, shared=shared)
        self.said: list[str] = []
        self.transport = Transport(credentials, settings.request_timeout, settings.concurrency)
        self.rng = random.Random(settings.seed)
        self.outcomes: list[Outcome] = []
        self.daily: dict[tuple[str, str], list[int]] = {}
        self.daily_stored: dict[tuple[str, str], int] = {}  # requests stored per (model, day), read once a flush
        self.others_today: dict[tuple[str, str], int] = {}  # requests other databases on the key told, per day
        self.in_flight = 0
        self.sent_at: dict[int, float] = {}  # request id -> when it was sent (monotonic)
        self.latency = 0.0  # moving average of answers' seconds
        self.expected = 0.0  # what tier_limits.json's speeds expect of the requests sent
        self.answers = 0  # replies received (the latency average is trusted from MEASURED on)
        self.first_sent = 0.0  # monotonic time of the first admission (the in-flight ramp starts there)
        self.answered_at: deque[float] = deque()  # monotonic times of the replies of the last second
        self.quickest: deque[tuple[float, float]] = deque()  # (when, seconds): the quickest reply of the last 10 s
        self.ceiling = open_files_allowed() - 256  # each request in flight holds a connection
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
        self.budget = Budget(settings.max_spend, self.spend)
        self.held: dict[int, int] = {}  # request id -> budget reserved for it
        self.unreachable: tuple[float, int, str] | None = None  # (since, failures, last error) without an answer
        self._senders: anyio.CancelScope | None = None
        self.dropped = 0  # answers that arrived after another process took the run over
        self.stated: dict[str, tuple[int | None, int | None]] = {}  # model -> (rpm, tpm) the headers state
        self.unsaved_stated: dict[str, tuple[int | None, int | None]] = {}

    async def __aenter__(self) -> SyncExecutor:
        await self.transport.__aenter__()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.transport.__aexit__(t, e, tb)

    @property
    def notices(self) -> list[str]:
        dropped = [f"{self.dropped:,} answers arrived after another process took the run over: not recorded"]
        return list(dict.fromkeys(self.said + self.gates.notices + (dropped if self.dropped else [])))

    # -- the run ----------------------------------------------------------------------------------------------

    async def execute(self) -> RunnerError | None:
        """Work until no request is pending; returns why it stopped before that (StoppedEarly, AuthError), or None.

        After a stop, what is in flight may finish for ``grace_seconds`` and is recorded; what is left then is
        handed back when the run is released."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._background)
                async with anyio.create_task_group() as senders:
                    self._senders = senders.cancel_scope
                    await self._dispatch(senders)
                    if self.stop is not None and self.in_flight:
                        with anyio.move_on_after(self.settings.grace_seconds):
                            while self.in_flight:
                                await self._wait_for_slot(0.1)
                        senders.cancel_scope.cancel()
                tg.cancel_scope.cancel()
        finally:
            self._flush()
        return self.stop

    def interrupt(self, reason: str) -> None:
        """Stop admitting (a first SIGINT or SIGTERM): what is in flight may finish within the grace period."""
        if self.stop is None:
            self.stop = Interrupted(f"{reason}: stopped sending; re-run the same command to resume")
        self.slot_freed.set()

    def abort(self) -> None:
        """Stop at once (a second signal): what is in flight is handed back unrecorded (its answers may be paid)."""
        self.interrupt("interrupted twice")
        if self._senders is not None:
            self._senders.cancel()

    async def _background(self) -> None:
        last_beat = self.monotonic()
        while True:
            await self.sleep(self.settings.flush_seconds)
            self._flush()
            if self.monotonic() - last_beat >= self.settings.heartbeat_seconds:
                if not self.store.heartbeat(self.run, self.owner, self.settings.lease_seconds):
                    self._taken_over()
                last_beat = self.monotonic()

    def _taken_over(self) -> None:
        owner, _ = self.store.owner_of(self.run)
        self.stop = TakenOver(f"another process ({owner}) took this run over: this one stopped sending")
        if self._senders is not None:
            self._senders.cancel()

    async def _dispatch(self, senders: anyio.abc.TaskGroup) -> None:
        while self.stop is None:
            if self.settings.deadline is not None and self.clock() >= self.settings.deadline:
                self.stop = DeadlineReached("deadline reached with requests still pending; re-run to continue")
                break
            free = min(self._bound() - self.in_flight, self._left_in_pass())
            if free <= 0:
                if self._left_in_pass() <= 0 and self.in_flight == 0:
                    return  # the pilot's share is answered
                await self._wait_for_slot(1.0)
                continue
            size = min(free, self._claim_size())
            claimed = self.store.claim(self.run, self.owner, size, self.settings.lease_seconds, self.lane.above)
            if not claimed:
                if self.in_flight == 0:
                    self._flush()
                    due = self.store.next_due(self.run, above=self.lane.above)
                    if due is None:
                        return
                    await self.sleep(min(max(due - self.clock(), 0.01), 1.0))
                else:
                    await self._wait_for_slot(0.5)
                continue
            for i, request in enumerate(claimed):
                if self.stop is not None:
                    self._put_back(claimed[i:])
                    break
                await self._admit(request, senders)

    def _left_in_pass(self) -> int:
        """Requests this pass may still send (``lane.most``: a pilot)."""
        return 2**62 if self.lane.most is None else self.lane.most - self.sent

    def _claim_size(self) -> int:
        rpm = min((g.rpm for g in self.gates.gates.values() if g.rpm), default=600)
        return max(1, min(256, math.ceil(rpm / 60 * 0.25)))

    def _bound(self) -> int:
        """Most requests in flight, from Little's law: the gates' request rate x latency x 1.5, plus slack.

        The latency is the larger of what answers took (moving average) and how long the oldest request in flight
        has waited; until enough answers are in, also what the model is expected to take (tier_limits.json
        speeds): before the first answer the bound grows with time, so it never holds back what the gate admits,
        and once answers come faster than the model's typical speed the bound follows them (thousands of idle
        connections to a fast server cost the client more than they bring)."""
        rate = self.gates.request_rate or 10.0
        now = self.monotonic()
        delivered = 2**62
        if self.answers >= MEASURED:  # as BBR does: what the answers delivered in the last second x the quickest
            # round trip of the last 10 s, doubled. Beyond it the client itself is the bottleneck, and more in
            # flight is only queueing that the client would measure as latency (and then want more in flight)
            while self.answered_at and now - self.answered_at[0] > 1.0:
                self.answered_at.popleft()
            while self.quickest and now - self.quickest[0][0] > 10.0:
                self.quickest.popleft()
            fastest = self.quickest[0][1] if self.quickest else self.latency
            delivered = max(RAMP_START, math.ceil(2.0 * len(self.answered_at) * fastest * 1.5))
        oldest = now - next(iter(self.sent_at.values())) if self.sent_at else 0.0  # sent in order
        expected = self.expected if self.answers < MEASURED else 0.0
        latency = max(self.latency, expected, oldest)
        wanted = math.ceil(rate * latency * 1.5) + 16
        # connections are opened at a bounded pace: a burst of thousands at once (limits far above what the
        # client or server can do) costs more than it brings, and at Tier 5 the gate's own start is slower
        self.first_sent = self.first_sent or now
        ramp = RAMP_START + math.ceil(RAMP_PER_SECOND * (now - self.first_sent))
        return min(wanted, ramp, delivered, self.settings.concurrency or wanted, self.ceiling)

    async def _wait_for_slot(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self.slot_freed.wait()
        self.slot_freed = anyio.Event()

    def _put_back(self, requests: list[Claimed]) -> None:
        self.outcomes.extend(
            Outcome(r.id, r.custom_id, Move.RELEASE, error_message="not sent: run stopping") for r in requests
        )

    async def _admit(self, request: Claimed, senders: anyio.abc.TaskGroup) -> None:
        model = self.limits.model(request.model)
        reserved = admission_tokens(request.prompt_tokens, request.output_tokens, request.n)
        gate, limits = self.gates.gate_for(model, request.prompt_tokens)
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
            ours = self._today(model.name, day)
            others = self.others_today.get((model.name, day), 0)
            if ours + others >= limits.rpd:
                self._put_back([request])
                by_others = f" ({others:,} of them by other runners on the key)" if others else ""
                self.stop = StoppedEarly(
                    f"daily limit of {limits.rpd:,} requests for {model.name} reached{by_others}; "
                    "re-run after 00:00 UTC to continue"
                )
                return
        worst = worst_case(model, request.prompt_tokens, request.output_tokens, request.n, _service_tier(request.body))
        fits = self.budget.reserve(worst)
        while not fits and self.held and self.stop is None:  # what is in flight frees room once its cost is known
            await self._wait_for_slot(1.0)
            fits = self.budget.reserve(worst)
        if not fits or self.stop is not None:  # no room, or stopped (a signal) while waiting for room
            if fits:
                self.budget.settle(worst, 0)
            self._put_back([request])
            if self.stop is None:
                left = fmt_usd(self.budget.left or 0)
                self.stop = BudgetReached(
                    f"--max-spend: the next request could cost up to {fmt_usd(worst)} and only {left} is left of "
                    "the cap; raise it and re-run to continue"
                )
            return
        self.held[request.id] = worst
        self.expected = 0.9 * self.expected + 0.1 * model.expected_seconds(request.output_tokens)
        ticket = await gate.acquire(reserved)
        counter = self.daily.setdefault((model.name, day), [0, 0])
        counter[0] += 1
        counter[1] += reserved
        if self.shared is not None and limits.rpd is not None:  # the day's count, for the other databases
            what = f"{model.name} requests {day}"
            self.others_today[model.name, day] = self.shared.tell(what, self.source, self._today(model.name, day))
        self.in_flight += 1
        self.sent += 1
        self.sent_at[request.id] = self.monotonic()
        senders.start_soon(self._send, request, model, gate, ticket)

    def _today(self, model: str, day: str) -> int:
        """Requests this database has sent to ``model`` on ``day``: stored (read once a flush) and not yet."""
        stored = self.daily_stored.get((model, day))
        if stored is None:
            stored = self.daily_stored[model, day] = self.store.daily(model, day)[0]
        return stored + self.daily.get((model, day), [0, 0])[0]

    def _fail(self, request: Claimed, code: str, message: str) -> None:
        self.outcomes.append(Outcome(request.id, request.custom_id, Move.FAIL, error_code=code, error_message=message))
        self.failed += 1

    async def _send(self, request: Claimed, model: ModelInfo, gate: Pacing, ticket: Ticket) -> None:
        cost = 0
        try:
            try:
                crash_point("sending")
                reply = await self.transport.post(request.endpoint, request.body.encode())
            except TransportError as exc:
                gate.settle(ticket, 0)
                self._unreachable(str(exc))
                self._after_failure(request, gate, Failure(kind=exc.kind), None, str(exc))
                return
            self.unreachable = None
            self.latency = 0.9 * self.latency + 0.1 * reply.seconds if self.latency else reply.seconds
            self.answers += 1
            now = self.monotonic()
            self.answered_at.append(now)
            while self.quickest and self.quickest[-1][1] >= reply.seconds:  # a sliding-window minimum
                self.quickest.pop()
            self.quickest.append((now, reply.seconds))
            if reply.status == 200:
                crash_point("answered")
                cost = self._after_success(request, model, gate, ticket, reply)
            else:
                self._after_error(request, gate, ticket, reply)
        finally:
            self.budget.settle(self.held.pop(request.id, 0), cost)
            self.in_flight -= 1
            self.sent_at.pop(request.id, None)
            self.slot_freed.set()

    def _unreachable(self, error: str) -> None:
        """No answer at all (refused, reset, timed out): after ``unreachable_seconds`` of only that, stop."""
        now = self.monotonic()
        since, failures, _ = self.unreachable or (now, 0, error)
        self.unreachable = (since, failures + 1, error)
        if self.stop is None and failures + 1 >= 10 and now - since >= self.settings.unreachable_seconds:
            self.stop = Unreachable(
                f"the API at {self.credentials.base_url} gave no answer for {now - since:,.0f}s ({error}); nothing "
                "is lost: re-run the same command when it is back"
            )

    def _after_success(self, request: Claimed, model: ModelInfo, gate: Pacing, ticket: Ticket, reply: Reply) -> int:
        """Record an answer; returns what it cost."""
        try:
            text = reply.body.decode()
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):  # a 200 that is not an API answer (a proxy's page, a cut body): try again
            gate.settle(ticket, 0)
            self._after_failure(
                request,
                gate,
                Failure(kind="connection"),
                None,
                f"a 200 answer that is not a JSON object: {reply.body[:80]!r}",
            )
            return 0
        usage = usage_of(data, request.endpoint)
        gate.settle(ticket, usage.total)
        gate.observe(reply.headers, ticket)
        tier_name, prices = price_table(model, data)
        price = cost(prices, usage)
        self.spend += price
        self.done += 1
        self.recent.append((self.monotonic(), usage.total))
        log.info("%s -> 200 %.1fs", request.custom_id, reply.seconds)
        self.outcomes.append(
            Outcome(
                request.id,
                request.custom_id,
                Move.ANSWER,
                status_code=200,
                response_id=reply.headers.get("x-request-id"),
                body=text,
                model=model.name,
                service_tier=tier_name,
                prompt_tokens=usage.prompt_tokens,
                cached_tokens=usage.cached_tokens,
                output_tokens=usage.output_tokens,
                cost=price,
                seconds=reply.seconds,
            )
        )
        self._limits_seen(model.name, reply.headers)
        return price

    def _after_error(self, request: Claimed, gate: Pacing, ticket: Ticket, reply: Reply) -> None:
        error: dict[str, Any] = {}
        try:
            parsed = json.loads(reply.body)
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
                error = parsed["error"]
        except ValueError:
            pass
        message = str(error.get("message") or reply.body[:200].decode(errors="replace"))
        failure = Failure(
            status=reply.status,
            type=error.get("type"),
            code=error.get("code"),
            retry_after=retry_after_seconds(reply.headers, message),
            reserved_tokens=ticket.reserved,
            server_tpm=stated_limit(reply.headers, "tokens"),
        )
        decision = decide(failure, request.attempts, self.settings.retry, self.rng)
        if decision.pause_gate:  # a rate limit although the gate let it through: the gate learns and pauses
            detail = rate_limit_detail(message)
            dimension = failure.type if failure.type in ("requests", "tokens") else None
            limit, used = (detail.limit, detail.used) if detail else (None, None)
            gate.rejected(ticket, reply.headers, dimension, failure.retry_after, limit, used)
            log.info("gate %s paused %.1fs (429 %s)", request.model, failure.retry_after or 1.0, dimension or "")
        else:
            gate.settle(ticket, 0)
            gate.observe(reply.headers, ticket)
        self._after_failure(request, gate, failure, reply, message, decision)

    def _after_failure(
        self,
        request: Claimed,
        gate: Pacing,
        failure: Failure,
        reply: Reply | None,
        message: str,
        decision: Decision | None = None,
    ) -> None:
        decision = decision or decide(failure, request.attempts, self.settings.retry, self.rng)
        label = f"{failure.status or failure.kind} {failure.code or failure.type or ''}".strip()
        if decision.action is Action.RETRY:
            if decision.slow_down:
                gate.slow_down()
            log.info("%s retry in %.1fs (%s, %d/%d)", request.custom_id, decision.delay, label, request.attempts,
                     self.settings.retry.max_attempts)  # fmt: skip
            self.outcomes.append(
                Outcome(
                    request.id,
                    request.custom_id,
                    Move.RETRY,
                    not_before=self.clock() + decision.delay,
                    error_message=f"{label}: {message}"[:500],
                )
            )
            return
        if decision.action is Action.FAIL:
            log.info("%s failed (%s)", request.custom_id, label)
            self.outcomes.append(
                Outcome(
                    request.id,
                    request.custom_id,
                    Move.FAIL,
                    status_code=reply.status if reply else None,
                    response_id=reply.headers.get("x-request-id") if reply else None,
                    body=reply.body.decode(errors="replace") if reply else None,
                    error_code=failure.code or failure.type or failure.kind,
                    error_message=f"{label}: {message}"[:2000],
                    retryable=decision.exhausted,
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

    def _limits_seen(self, model: str, headers: Mapping[str, str]) -> None:
        """Remember the limits the server states (x-ratelimit-limit-*), for the planner's tier detection."""
        stated = (stated_limit(headers, "requests"), stated_limit(headers, "tokens"))
        if stated != (None, None) and self.stated.get(model) != stated:
            self.stated[model] = self.unsaved_stated[model] = stated

    def _flush(self) -> None:
        try:
            for model, (rpm, tpm) in self.unsaved_stated.items():
                self.store.state_limits(model, "headers", rpm=rpm, tpm=tpm)
            self.unsaved_stated = {}
            if self.outcomes:
                batch, self.outcomes = self.outcomes, []
                self.dropped += self.store.record(self.owner, self.run, batch)
                crash_point("recorded")
            self.daily_stored = {}  # read again: other runs may count against the same day
            if self.daily:
                daily, self.daily = self.daily, {}
                for (model, day), (requests, tokens) in daily.items():
                    self.store.count_daily(model, day, requests, tokens)
        except DiskFull as exc:  # the transaction rolled back whole
            if not isinstance(self.stop, DiskFull):
                self.stop = exc
            if self._senders is not None:
                self._senders.cancel()

    # -- progress ---------------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        now = self.monotonic()
        while self.recent and now - self.recent[0][0] > 60:
            self.recent.popleft()
        span = min(60.0, max(now - self.started, 1e-3))
        finished = self.done + self.failed
        rate = (finished - self.done_at_start) / max(now - self.started, 1e-3)
        gate = self.gates.first()
        return Snapshot(
            self.done,
            self.failed,
            self.total,
            self.in_flight,
            len(self.recent) * 60 / span,
            sum(t for _, t in self.recent) * 60 / span,
            gate.rpm if gate else None,
            gate.tpm if gate else None,
            self.spend,
            (self.total - finished) / rate if rate > 0 else None,
            gate.statistics().paused_for if gate else 0.0,
            tuple(self.notices),
        )


def _service_tier(body: str) -> str:
    """The service tier a stored body asks for (standard unless it says; parsed only when it might)."""
    if '"service_tier"' not in body:
        return "standard"
    tier = json.loads(body).get("service_tier")
    return str(tier) if isinstance(tier, str) else "standard"
