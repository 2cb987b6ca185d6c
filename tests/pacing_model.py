"""A whole run of the real ``Gate`` against the simulator's real ``ModelBuckets``, on virtual time.

Nothing sleeps: an event queue moves one clock that both sides read. The client admits requests first come,
first served through the gate (as ``Gate.acquire`` does), the server admits or refuses them with its buckets,
answers after a latency (first token + output tokens / speed), and the client feeds the reply back to the gate
(``settle``, ``observe``, ``rate_limited``). The run reports the share of the binding limit used in real tokens
while work was waiting, and the share of requests refused.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from runner.gate import Gate, Ticket
from runner.sim.buckets import ModelBuckets
from runner.sim.counting import counting as counting_named


class VirtualClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Request:
    index: int
    prompt: int
    max_tokens: int
    output: int
    attempts: int = 0
    ticket: Ticket | None = None


@dataclass
class Result:
    utilisation: float  # real tokens per minute over TPM, while work waited
    counted_share: float  # what the server's limit counted per minute over TPM, likewise
    request_share: float  # requests per minute over RPM, likewise
    rejected: float  # 429s over requests that reached the server
    seconds: float
    answered: int
    rejections: int
    gate: Gate
    samples: list[tuple[float, float]] = field(default_factory=list[tuple[float, float]])


async def _noop(_: float) -> None:
    return None


def simulate(
    *,
    reading: str,
    window: float,
    background: float = 0.0,
    rpm: int = 900,
    tpm: int = 90_000,
    requests: int = 400,
    prompt: tuple[int, int] = (371, 371),
    max_tokens: int = 300,
    output: tuple[int, int] = (20, 120),
    first_token: float = 0.3,
    speed: float = 150.0,
    header_time: str = "answered",
    counting: str = "tiktoken",
    chars: int = 900,
    headroom: float = 0.02,
    network: float = 0.002,
    jitter: float = 0.0,
    seed: int = 1,
    gate_rpm: int | None = None,
    gate_tpm: int | None = None,
    max_seconds: float = 3600.0,
    background_until: float | None = None,
) -> Result:
    """One run; ``header_time``: when the server takes its header reading (``sent`` or ``answered``);
    ``counting``: what the server's TPM limit counts (``runner.sim.counting``), ``chars`` the characters of each
    request's body;
    ``jitter``: each request takes up to that much longer on its way to the server (a busy machine or network:
    requests sent apart can arrive together); ``background_until``: the other client stops that many seconds into
    the run (and the share used is measured from then on)."""
    clock = VirtualClock()
    rule = counting_named(counting)
    text = "x" * chars
    rng = random.Random(seed)
    delays = random.Random(seed + 1)
    server = ModelBuckets(rpm, tpm, None, window, clock, reading, background)
    gate = Gate(gate_rpm or rpm, gate_tpm or tpm, headroom=headroom, clock=clock, sleep=_noop)
    queue: deque[Request] = deque(
        Request(i, rng.randint(*prompt), max_tokens, min(max_tokens, rng.randint(*output))) for i in range(requests)
    )
    events: list[tuple[float, int, str, Any]] = []
    seq = 0

    def at(t: float, kind: str, payload: Any = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, payload))

    answered = rejections = arrivals = 0
    billed: list[tuple[float, int]] = []  # (admission time, real tokens) of answers
    counted: list[tuple[float, int]] = []  # (admission time, what the server's limit counts) of answers
    waiting_until = 0.0  # last moment a request was still waiting for the gate
    retries: list[tuple[float, int, Request]] = []
    wake_at = float("inf")

    def wake(t: float) -> None:
        nonlocal wake_at
        if t < wake_at:
            wake_at = t
            at(t, "wake")

    def dispatch() -> None:
        nonlocal waiting_until
        while True:
            while retries and retries[0][0] <= clock.now:
                queue.append(heapq.heappop(retries)[2])
            if not queue:
                if retries:
                    wake(retries[0][0])
                return
            waiting_until = clock.now
            head = queue[0]
            cost = head.prompt + head.max_tokens
            wait = gate.delay(cost)
            if wait > 0:
                wake(clock.now + wait)
                return
            queue.popleft()
            head.ticket = gate.take(cost)
            head.attempts += 1
            at(clock.now + network + delays.uniform(0.0, jitter), "arrive", head)

    wake(clock.now)
    if background_until is not None:
        at(clock.now + background_until, "quiet")
    while events:
        t, _, kind, item = heapq.heappop(events)
        if t - 1_000_000.0 > max_seconds:
            break
        clock.now = t
        if kind == "quiet":
            for bucket in (server.requests, server.tokens):
                if bucket is not None:
                    bucket.refill()
                    bucket.background = 0.0
        elif kind == "wake":
            if t == wake_at:
                wake_at = float("inf")
                dispatch()
        elif kind == "arrive":
            arrivals += 1
            charge = rule.admitted(item.prompt, text, item.max_tokens, 1)
            admission_result = server.admit(charge)
            if not admission_result.ok:
                headers = server.headers()
                retry_after = admission_result.retry_after
                at(t + network, "rejected", (item, headers, retry_after, admission_result))
                continue
            early = server.headers() if header_time == "sent" else None
            latency = first_token + item.output / speed
            at(t + latency, "complete", (item, early, t))
        elif kind == "complete":
            req, early, admitted_at = item
            used = req.prompt + req.output
            charge = rule.admitted(req.prompt, text, req.max_tokens, 1)
            if rule.refunds:
                server.settle(charge, rule.answered(req.prompt, text, req.output), admitted_at)
            final = rule.answered(req.prompt, text, req.output) if rule.refunds else charge
            counted.append((req.ticket.sent if req.ticket else t, final))
            billed.append((req.ticket.sent if req.ticket else t, used))  # by when it was admitted
            headers = early if early is not None else server.headers()
            at(t + network, "reply", (req, headers))
        elif kind == "reply":
            req, headers = item
            assert req.ticket is not None
            gate.settle(req.ticket, req.prompt + req.output)
            gate.observe(headers, req.ticket)
            answered += 1
            dispatch()  # a refund may let the head through sooner (Gate.acquire wakes on settle)
        elif kind == "rejected":
            req, headers, retry_after, refusal = item
            assert req.ticket is not None
            rejections += 1
            limit = tpm if refusal.dimension == "tokens" else rpm
            gate.rejected(req.ticket, headers, refusal.dimension, retry_after, limit, refusal.used)
            heapq.heappush(retries, (t + retry_after * rng.uniform(1.0, 1.1), req.index, req))
            dispatch()
    start = 1_000_000.0
    warm = start + (5.0 if background_until is None else background_until)
    steady = [(t, n) for t, n in billed if warm <= t <= waiting_until]
    seconds = max(1e-9, waiting_until - warm)
    per_minute = sum(n for _, n in steady) / seconds * 60
    return Result(
        utilisation=per_minute / tpm,
        counted_share=sum(n for t, n in counted if warm <= t <= waiting_until) / seconds * 60 / tpm,
        request_share=len(steady) / seconds * 60 / rpm,
        rejected=rejections / max(1, arrivals),
        seconds=clock.now - start,
        answered=answered,
        rejections=rejections,
        gate=gate,
    )
