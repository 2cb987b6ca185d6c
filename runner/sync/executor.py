"""The sync executor: claim pending requests, pass each through its model's gate, send, record.

One dispatcher claims due requests in small batches (lease), waits for room under the in-flight bound
(``InFlight``) and the gate, and starts one task per request. Each task sends through the transport, reads the
reply (``replies.classify``), takes the retry table's decision and queues an ``Outcome``; a writer commits outcomes
in groups (state, result and spend of each in one transaction), with the day's count (``DailyCount``) and the
limits the headers state.

The run stops early, resumably (``Stops``), on insufficient_quota, a refused key, --max-spend, --deadline, the
daily request limit, a takeover or a signal; requests in flight then go back to pending. Time and the transport
are injected (``clock``, ``monotonic``, ``sleep``, ``transport``): tests run whole runs on virtual time.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio

from runner.budget import Budget, worst_case
from runner.crash import crash_point
from runner.errors import BudgetReached, DiskFull, RunnerError, StoppedEarly, Unreachable
from runner.gate import Ticket
from runner.gates import Gates, Pacing, SharedGate
from runner.limits import Limits, ModelInfo
from runner.logs import log
from runner.money import fmt_usd
from runner.progress import Snapshot
from runner.retry import Action, Decision, Failure, decide, rate_limit_detail
from runner.settings import Lane, RunSettings
from runner.stopping import Stops
from runner.store import Claimed, Move, Outcome, Store
from runner.sync.daily import DailyCount, utc_day
from runner.sync.inflight import InFlight
from runner.sync.recorder import Recorder
from runner.sync.replies import Answer, Refusal, answered, classify, label_of, outcome_of, service_tier, stop_of
from runner.sync.tally import Tally
from runner.tokens import admission_tokens
from runner.transport import Credentials, Poster, Reply, Transport, TransportError, open_files_allowed

__all__ = ["SyncExecutor"]

UNREACHABLE_TRIES = 10  # attempts without any answer, besides unreachable_seconds, before the run stops


class SyncExecutor:
    """``async with SyncExecutor(...) as executor: await executor.execute()``; it opens its transport."""

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
        transport: Poster | None = None,
    ) -> None:
        self.store, self.run, self.owner, self.limits = store, run, owner, limits
        self.settings, self.credentials, self.lane = settings, credentials, lane or Lane()
        self.clock, self.monotonic, self.sleep = clock, monotonic, sleep
        self.gates = gates or Gates(settings, clock=monotonic, sleep=sleep, shared=shared)
        self.transport = transport or Transport(credentials, settings.request_timeout, settings.concurrency)
        self.rng = random.Random(settings.seed)
        self.stops = Stops("re-run the same command to resume", deadline=settings.deadline, on_stop=self._wake)
        self.in_flight = InFlight(settings.concurrency, open_files_allowed() - 256)  # a connection each
        self.daily = DailyCount(store, shared)
        self.tally = Tally(store.requests.counts(run), monotonic())
        self.budget = Budget(settings.max_spend, store.results.total_cost(run))
        self.held: dict[int, int] = {}  # request id -> budget reserved for it
        self.recorder = Recorder(store, run, owner, self.daily)
        self.slot_freed = anyio.Event()
        self.sent = 0  # requests sent in this pass
        self.unreachable: tuple[float, int, str] | None = None  # (since, failures, last error) without an answer

    async def __aenter__(self) -> SyncExecutor:
        await self.transport.__aenter__()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.transport.__aexit__(t, e, tb)

    @property
    def notices(self) -> list[str]:
        dropped = self.recorder.dropped
        late = [f"{dropped:,} answers arrived after another process took the run over: not recorded"]
        return list(dict.fromkeys(self.gates.notices + (late if dropped else [])))

    # -- the run ----------------------------------------------------------------------------------------------

    async def execute(self) -> RunnerError | None:
        """Work until no request is pending; returns why it stopped before that, or None.

        After a stop, what is in flight may finish for ``grace_seconds`` and is recorded; what is left then is
        handed back when the run is released."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._background)
                async with anyio.create_task_group() as senders:
                    self.stops.scope = senders.cancel_scope
                    await self._dispatch(senders)
                    if self.stops.stopped and self.in_flight.count:
                        with anyio.move_on_after(self.settings.grace_seconds):
                            while self.in_flight.count:
                                await self._wait_for_slot(0.1)
                        senders.cancel_scope.cancel()
                tg.cancel_scope.cancel()
        finally:
            self._flush()
        return self.stops.reason

    def interrupt(self, reason: str) -> None:
        """Stop admitting (a first SIGINT or SIGTERM): what is in flight may finish within the grace period."""
        self.stops.interrupt(reason)

    def abort(self) -> None:
        """Stop at once (a second signal): what is in flight is handed back unrecorded (its answers may be paid)."""
        self.stops.abort()

    def _wake(self) -> None:
        self.slot_freed.set()

    async def _background(self) -> None:
        last_beat = self.monotonic()
        while True:
            await self.sleep(self.settings.flush_seconds)
            self._flush()
            if self.monotonic() - last_beat >= self.settings.heartbeat_seconds:
                self.stops.still_owned(self.store, self.run, self.owner, self.settings.lease_seconds)
                last_beat = self.monotonic()

    async def _dispatch(self, senders: anyio.abc.TaskGroup) -> None:
        while not self.stops.stopped and not self.stops.past_deadline(self.clock()):
            free = min(self.in_flight.bound(self.gates.request_rate or 10.0, self.monotonic()) - self.in_flight.count,
                       self._left_in_pass())  # fmt: skip
            if free <= 0:
                if self._left_in_pass() <= 0 and self.in_flight.count == 0:
                    return  # the pilot's share is answered
                await self._wait_for_slot(1.0)
                continue
            size = min(free, self._claim_size())
            claimed = self.store.requests.claim(
                self.run, self.owner, size, self.settings.lease_seconds, self.lane.above
            )
            if not claimed:
                if self.in_flight.count == 0:
                    self._flush()
                    due = self.store.requests.next_due(self.run, above=self.lane.above)
                    if due is None:
                        return
                    await self.sleep(min(max(due - self.clock(), 0.01), 1.0))
                else:
                    await self._wait_for_slot(0.5)
                continue
            for i, request in enumerate(claimed):
                if self.stops.stopped:
                    self.recorder.put_back(claimed[i:])
                    break
                await self._admit(request, senders)

    def _left_in_pass(self) -> int:
        """Requests this pass may still send (``lane.most``: a pilot)."""
        return 2**62 if self.lane.most is None else self.lane.most - self.sent

    def _claim_size(self) -> int:
        """A quarter second of the slowest gate's requests (so a claim's lease is never held long), 1 to 256."""
        rpm = min((g.rpm for g in self.gates.gates.values() if g.rpm), default=600)
        return max(1, min(256, math.ceil(rpm / 240)))

    async def _wait_for_slot(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self.slot_freed.wait()
        self.slot_freed = anyio.Event()

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
        day = utc_day(self.clock())
        if limits.rpd is not None:
            ours, others = self.daily.used(model.name, day)
            if ours + others >= limits.rpd:
                self.recorder.put_back([request])
                by_others = f" ({others:,} of them by other runners on the key)" if others else ""
                self.stops.set(StoppedEarly(f"daily limit of {limits.rpd:,} requests for {model.name} reached"
                                            f"{by_others}; re-run after 00:00 UTC to continue"))  # fmt: skip
                return
        if not await self._reserve_budget(request, model):
            return
        ticket = await gate.acquire(reserved)
        self.daily.sent(model.name, day, reserved, tell=limits.rpd is not None)
        self.in_flight.sent(request.id, self.monotonic(), model.expected_seconds(request.output_tokens))
        self.sent += 1
        senders.start_soon(self._send, request, model, gate, ticket)

    async def _reserve_budget(self, request: Claimed, model: ModelInfo) -> bool:
        """Hold the request's worst-case cost against --max-spend, waiting while what is in flight may free room;
        False (and the request handed back) when it does not fit or the run stops meanwhile."""
        worst = worst_case(model, request.prompt_tokens, request.output_tokens, request.n, service_tier(request.body))
        fits = self.budget.reserve(worst)
        while not fits and self.held and not self.stops.stopped:  # answers in flight free room: their cost is known
            await self._wait_for_slot(1.0)
            fits = self.budget.reserve(worst)
        if fits and not self.stops.stopped:
            self.held[request.id] = worst
            return True
        if fits:
            self.budget.settle(worst, 0)
        self.recorder.put_back([request])
        left = fmt_usd(self.budget.left or 0)
        self.stops.set(BudgetReached(f"--max-spend: the next request could cost up to {fmt_usd(worst)} and only "
                                     f"{left} is left of the cap; raise it and re-run to continue"))  # fmt: skip
        return False

    def _fail(self, request: Claimed, code: str, message: str) -> None:
        self.recorder.add(Outcome(request.id, request.custom_id, Move.FAIL, error_code=code, error_message=message))
        self.tally.failed_one()

    async def _send(self, request: Claimed, model: ModelInfo, gate: Pacing, ticket: Ticket) -> None:
        price = 0
        try:
            try:
                crash_point("sending")
                reply = await self.transport.post(request.endpoint, request.body.encode())
            except TransportError as exc:
                gate.settle(ticket, 0)
                self._unreachable(str(exc))
                self._after_failure(request, gate, Refusal(Failure(kind=exc.kind), str(exc)), None)
                return
            self.unreachable = None
            self.in_flight.answered(reply.seconds, self.monotonic())
            read = classify(reply, ticket.reserved)
            if isinstance(read, Answer):
                crash_point("answered")
                price = self._after_answer(request, model, gate, ticket, reply, read)
            elif reply.status == 200:  # not an API answer: the gate counts nothing for it
                gate.settle(ticket, 0)
                self._after_failure(request, gate, read, None)
            else:
                self._after_error(request, gate, ticket, reply, read)
        finally:
            self.budget.settle(self.held.pop(request.id, 0), price)
            self.in_flight.finished(request.id)
            self.slot_freed.set()

    def _unreachable(self, error: str) -> None:
        """No answer at all (refused, reset, timed out): after ``unreachable_seconds`` of only that, stop."""
        now = self.monotonic()
        since, failures, _ = self.unreachable or (now, 0, error)
        self.unreachable = (since, failures + 1, error)
        if failures + 1 >= UNREACHABLE_TRIES and now - since >= self.settings.unreachable_seconds:
            where = self.credentials.base_url
            self.stops.set(Unreachable(f"the API at {where} gave no answer for {now - since:,.0f}s ({error}); nothing "
                                       "is lost: re-run the same command when it is back"))  # fmt: skip

    def _after_answer(
        self, request: Claimed, model: ModelInfo, gate: Pacing, ticket: Ticket, reply: Reply, answer: Answer
    ) -> int:
        """Record an answer; returns what it cost."""
        outcome = answered(request, model, reply, answer)
        gate.settle(ticket, outcome.prompt_tokens + outcome.output_tokens)
        gate.observe(reply.headers, ticket)
        price = outcome.cost or 0
        self.tally.answered(outcome.prompt_tokens + outcome.output_tokens, self.monotonic())
        log.info("%s -> 200 %.1fs", request.custom_id, reply.seconds)
        self.recorder.add(outcome)
        self.recorder.limits_seen(model.name, reply.headers)
        return price

    def _after_error(self, request: Claimed, gate: Pacing, ticket: Ticket, reply: Reply, refusal: Refusal) -> None:
        failure = refusal.failure
        decision = decide(failure, request.attempts, self.settings.retry, self.rng)
        if decision.pause_gate:  # a rate limit although the gate let it through: the gate learns and pauses
            detail = rate_limit_detail(refusal.message)
            dimension = failure.type if failure.type in ("requests", "tokens") else None
            limit, used, asked = (detail.limit, detail.used, detail.requested) if detail else (None, None, None)
            gate.rejected(ticket, reply.headers, dimension, failure.retry_after, limit, used, asked)
            log.info("gate %s paused %.1fs (429 %s)", request.model, failure.retry_after or 1.0, dimension or "")
        else:
            gate.settle(ticket, 0)
            gate.observe(reply.headers, ticket)
        self._after_failure(request, gate, refusal, reply, decision)

    def _after_failure(
        self, request: Claimed, gate: Pacing, refusal: Refusal, reply: Reply | None, decision: Decision | None = None
    ) -> None:
        decision = decision or decide(refusal.failure, request.attempts, self.settings.retry, self.rng)
        outcome = outcome_of(request, refusal, decision, reply, self.clock())
        if outcome is None:
            self.recorder.put_back([request])
            self.stops.set(stop_of(refusal, decision))
            return
        if decision.action is Action.RETRY:
            if decision.slow_down:
                gate.slow_down()
            log.info("%s retry in %.1fs (%s, %d/%d)", request.custom_id, decision.delay, label_of(refusal.failure),
                     request.attempts, self.settings.retry.max_attempts)  # fmt: skip
        else:
            log.info("%s failed (%s)", request.custom_id, label_of(refusal.failure))
            self.tally.failed_one()
        self.recorder.add(outcome)

    def _flush(self) -> None:
        try:
            self.recorder.flush()
        except DiskFull as exc:  # the transaction rolled back whole
            self.stops.overrule(exc)
            self.stops.cancel()

    # -- progress ---------------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self.tally.snapshot(
            self.monotonic(), self.in_flight.count, self.budget.spent, self.gates.first(), self.notices
        )
