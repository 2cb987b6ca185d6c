"""A whole run of the real ``Gate`` against the simulator's real ``ModelBuckets``, on virtual time.

Nothing sleeps: an event queue moves one clock that both sides read. Each client admits its requests first come,
first served through its own gate (as ``Gate.acquire`` does), the server admits or refuses them with its buckets
and counts them as its counting mode says, answers after a latency (first token + output tokens / speed), and the
client feeds the reply back to its gate (``settle``, ``observe``, ``rejected``). Several clients (``clients``,
started ``stagger`` seconds apart) play runner processes sharing one organisation's limit. The run reports the
share of the binding limit used while work was waiting, in real tokens and in what the server counted, the share
of requests refused, and when each client finished.
"""

from __future__ import annotations

import heapq
import math
import random
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.gate import WAKE_SECONDS, Gate, Ticket
from runner.gates import Scope
from runner.sim.buckets import ModelBuckets
from runner.sim.counting import Counting
from runner.sim.counting import counting as counting_named
from runner.store.peers import GateFile


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
    finished: list[float] = field(default_factory=list[float])  # seconds from the start, each client's last answer
    gates: list[Gate] = field(default_factory=list[Gate])
    counted: list[tuple[float, int]] = field(default_factory=list[tuple[float, int]])  # (seconds, counted) answers
    limit: int = 0  # the server's TPM

    def back_to(self, level: float, since: float, window: float = 5.0) -> float | None:
        """Seconds after ``since`` until what the server counted over the last ``window`` seconds first reaches
        ``level`` of its limit; None if it never does."""
        marks = sorted(self.counted)
        for i, (t, _) in enumerate(marks):
            if t < since + window:
                continue
            used = sum(n for u, n in marks[: i + 1] if t - window < u <= t)
            if used / window * 60 >= level * self.limit:
                return t - since
        return None


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
    clients: int = 1,
    stagger: float = 10.0,
    shared: bool = False,
    misstated: float = 1.0,
    enforcement: str = "bucket",
    check: Callable[[Gate], None] | None = None,
) -> Result:
    """One run; ``header_time``: when the server takes its header reading (``sent`` or ``answered``);
    ``counting``: what the server's TPM limit counts (``runner.sim.counting``), ``chars`` the characters of each
    request's body; ``jitter``: each request takes up to that much longer on its way to the server (a busy machine
    or network: requests sent apart can arrive together); ``background_until``: the other client stops that many
    seconds into the run (and the share used is measured from then on); ``clients``: that many gates, each with
    ``requests`` of its own, started ``stagger`` seconds apart (the share is measured from the last one's start);
    ``shared``: their gates share the limits through one gate file, as runner processes on one host do;
    ``misstated``: a 429's "Requested" is this many times what the server counted the request as;
    ``enforcement``: how the server enforces its window (``runner.sim.buckets``: bucket, fixed, sliding);
    ``check``: called with each gate after every event (e.g. to assert the gate's invariants all along)."""
    clock = VirtualClock()
    rule = counting_named(counting)
    text = "x" * chars
    rng = random.Random(seed)
    delays = random.Random(seed + 1)
    server = ModelBuckets(rpm, tpm, None, window, clock, reading, background, enforcement=enforcement)
    start = clock.now

    def job() -> deque[Request]:
        draws = ((rng.randint(*prompt), min(max_tokens, rng.randint(*output))) for _ in range(requests))
        return deque(Request(i, p, max_tokens, out) for i, (p, out) in enumerate(draws))

    folder = Path(tempfile.mkdtemp()) if shared else None
    files = [GateFile(folder / "gate.db", f"client-{c}", clock) for c in range(clients)] if folder else []

    def gate(c: int) -> Gate:
        sharing = Scope(files[c], "gpt-4.1-mini") if files else None
        return Gate(gate_rpm or rpm, gate_tpm or tpm, headroom=headroom, sharing=sharing, clock=clock, sleep=_noop)

    players = [_Client(gate(c), job(), start + c * stagger) for c in range(clients)]
    events: list[tuple[float, int, str, Any]] = []
    seq = 0

    def at(t: float, kind: str, payload: Any = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, payload))

    answered = rejections = arrivals = 0
    billed: list[tuple[float, int]] = []  # (admission time, real tokens) of answers
    counted: list[tuple[float, int]] = []  # (admission time, what the server's limit counts) of answers
    waiting_until = 0.0  # last moment a request was still waiting for a gate

    def wake(client: _Client, t: float) -> None:
        if t < client.wake_at:
            client.wake_at = t
            at(t, "wake", client)

    def dispatch(client: _Client) -> None:
        nonlocal waiting_until
        if clock.now < client.starts:
            wake(client, client.starts)
            return
        while True:
            while client.retries and client.retries[0][0] <= clock.now:
                client.queue.append(heapq.heappop(client.retries)[2])
            if not client.queue:
                if client.retries:
                    wake(client, client.retries[0][0])
                return
            waiting_until = clock.now
            head = client.queue[0]
            cost = head.prompt + head.max_tokens
            wait = client.gate.delay(cost)
            if wait > 0:
                wake(client, clock.now + min(wait, WAKE_SECONDS))  # as Gate.acquire looks again
                return
            client.queue.popleft()
            head.ticket = client.gate.take(cost)
            head.attempts += 1
            at(clock.now + network + delays.uniform(0.0, jitter), "arrive", (client, head))

    for client in players:
        wake(client, client.starts)
    if background_until is not None:
        at(clock.now + background_until, "quiet")
    while events:
        t, _, kind, item = heapq.heappop(events)
        if t - start > max_seconds:
            break
        clock.now = t
        if kind == "quiet":
            for bucket in (server.requests, server.tokens):
                if bucket is not None:
                    bucket.refill()
                    bucket.background = 0.0
        elif kind == "wake":
            if t == item.wake_at:
                item.wake_at = float("inf")
                dispatch(item)
        elif kind == "arrive":
            client, req = item
            arrivals += 1
            charge = rule.admitted(req.prompt, text, req.max_tokens, 1)
            admission_result = server.admit(charge)
            if not admission_result.ok:
                at(t + network, "rejected", (client, req, server.headers(), admission_result, charge))
                continue
            early = server.headers() if header_time == "sent" else None
            at(t + (first_token + req.output / speed), "complete", (client, req, early, t))
        elif kind == "complete":
            client, req, early, admitted_at = item
            charge = rule.admitted(req.prompt, text, req.max_tokens, 1)
            final = _settle(server, rule, text, req.prompt, req.output, charge, admitted_at)
            sent = req.ticket.sent if req.ticket else t  # by when it was admitted
            counted.append((sent, final))
            billed.append((sent, req.prompt + req.output))
            at(t + network, "reply", (client, req, early if early is not None else server.headers()))
        elif kind == "reply":
            client, req, headers = item
            assert req.ticket is not None
            client.gate.settle(req.ticket, req.prompt + req.output)
            client.gate.observe(headers, req.ticket)
            answered += 1
            client.answered += 1
            client.finished = t - start
            if client.answered == requests and files:  # done: its part of the limit goes to the others at once
                files[players.index(client)].leave()
            dispatch(client)  # a refund may let the head through sooner (Gate.acquire wakes on settle)
        elif kind == "rejected":
            client, req, headers, refusal, charge = item
            assert req.ticket is not None
            rejections += 1
            limit, asked = (tpm, round(charge * misstated)) if refusal.dimension == "tokens" else (rpm, 1)
            client.gate.rejected(
                req.ticket, headers, refusal.dimension, refusal.retry_after, limit, refusal.used, asked
            )
            heapq.heappush(client.retries, (t + refusal.retry_after * rng.uniform(1.0, 1.1), req.index, req))
            dispatch(client)
        if check is not None:
            for player in players:
                check(player.gate)
    for file in files:
        file.close()
    if folder is not None:
        shutil.rmtree(folder)
    warm = start + (5.0 if background_until is None else background_until) + (clients - 1) * stagger
    seconds = max(1e-9, waiting_until - warm)

    def per_minute(pairs: list[tuple[float, int]]) -> float:
        return sum(n for t, n in pairs if warm <= t <= waiting_until) / seconds * 60

    return Result(
        utilisation=per_minute(billed) / tpm,
        counted_share=per_minute(counted) / tpm,
        request_share=sum(1 for t, _ in billed if warm <= t <= waiting_until) / seconds * 60 / rpm,
        rejected=rejections / max(1, arrivals),
        seconds=clock.now - start,
        answered=answered,
        rejections=rejections,
        gate=players[0].gate,
        finished=[c.finished for c in players],
        gates=[c.gate for c in players],
        counted=[(t - start, n) for t, n in counted],
        limit=tpm,
    )


@dataclass
class _Client:
    gate: Gate
    queue: deque[Request]
    starts: float
    retries: list[tuple[float, int, Request]] = field(default_factory=list[tuple[float, int, Request]])
    wake_at: float = float("inf")
    answered: int = 0
    finished: float = 0.0


def ceiling(*, window: float, counting: str = "tiktoken", chars: int = 900, seed: int = 1) -> float:
    """What the server's own rules let any client use: the share of the binding limit a client that sees the
    server's buckets gets, sending each request the moment it would be admitted (nothing refused), measured as
    ``simulate`` measures its default job (the same requests, limits and latency). Under a window not much larger
    than a request the server loses refunds that come back while its bucket is full, whoever sends: a server
    counting 2x the gate's estimate under a 1 s window gives at most 93-94% of its limit."""
    rpm, tpm, requests, prompt, max_tokens, output = 900, 90_000, 400, 371, 300, (20, 120)
    first_token, speed = 0.3, 150.0
    clock = VirtualClock()
    rule = counting_named(counting)
    text = "x" * chars
    rng = random.Random(seed)
    server = ModelBuckets(rpm, tpm, None, window, clock, "none")
    start = clock.now
    # drawn as ``simulate`` draws them (one draw for the prompt, one for the output), so the jobs are the same
    draws = [(rng.randint(prompt, prompt), min(max_tokens, rng.randint(*output))) for _ in range(requests)]
    answers: list[tuple[float, int, int, int, float]] = []  # (when, prompt, output, charge, admitted) by time
    counted: list[tuple[float, int]] = []
    last_sent = start
    for tokens, out in draws:
        charge = rule.admitted(tokens, text, max_tokens, 1)
        while True:
            assert server.tokens is not None and server.requests is not None
            wait = max(server.tokens.wait_for(charge), server.requests.wait_for(1))
            due = answers[0][0] if answers else math.inf
            if wait <= 0:
                break
            clock.now = min(clock.now + max(wait, 1e-6), due)  # an answer's refund may make room sooner
            while answers and answers[0][0] <= clock.now:
                _answer(server, rule, text, heapq.heappop(answers), counted)
        assert server.admit(charge).ok
        last_sent = clock.now
        heapq.heappush(answers, (clock.now + first_token + out / speed, tokens, out, charge, clock.now))
    while answers:
        clock.now = answers[0][0]
        _answer(server, rule, text, heapq.heappop(answers), counted)
    warm = start + 5.0
    return sum(n for t, n in counted if warm <= t <= last_sent) / max(1e-9, last_sent - warm) * 60 / tpm


def _answer(server: ModelBuckets, rule: Counting, text: str, answer: tuple[float, int, int, int, float],
            counted: list[tuple[float, int]]) -> None:  # fmt: skip
    _, tokens, out, charge, admitted = answer
    counted.append((admitted, _settle(server, rule, text, tokens, out, charge, admitted)))


def _settle(server: ModelBuckets, rule: Counting, text: str, prompt: int, output: int, charge: int,
            admitted: float) -> int:  # fmt: skip
    """The server corrects what it counted of an answered request (where its counting does); returns the count."""
    final = rule.answered(prompt, text, output) if rule.refunds else charge
    if rule.refunds:
        server.settle(charge, final, admitted)
    return final
