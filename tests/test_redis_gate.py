"""The Redis gate (``runner.redis_gate``) against a real redis-server: its Lua script, Redis's clock, leases, faults
and restarts; and ``runner`` processes sharing a limit through it."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from runner.gate import Gate
from runner.gates import Scope
from runner.redis_gate import UNKNOWN, RedisGate, redis_location
from runner.store.peers import STALE_SECONDS, TELL_SECONDS, gate_digest

from .conftest import ROOT, FakeTime, runner_cli
from .processes import run_side_by_side, sim_stats
from .redis_server import RedisServer

pytestmark = pytest.mark.anyio

DIGEST = gate_digest("http://127.0.0.1:9/v1", "sk-test")


def _gate(server: RedisServer, member: str, **kwargs: Any) -> RedisGate:
    return RedisGate(server.url, DIGEST, member, **kwargs)


async def _redis_now(server: RedisServer) -> float:
    client = aioredis.from_url(server.url)
    seconds, micros = await client.time()
    await client.aclose()
    return seconds + micros / 1e6


async def test_each_process_hears_the_others_through_redis_and_not_itself(redis_server: RedisServer) -> None:
    one, two = _gate(redis_server, "one"), _gate(redis_server, "two")
    one.publish("gpt-4.1-mini tokens", 500.0, held=True)
    await one.exchange()
    assert two.publish("gpt-4.1-mini tokens", 250.0, held=False) == []  # nothing heard before its first exchange
    await two.exchange()
    heard = two.publish("gpt-4.1-mini tokens", 250.0, held=False)
    assert [(p.member, p.rate, p.held, p.pid) for p in heard] == [("one", 500.0, True, os.getpid())]
    two.publish("gpt-4o-mini tokens", 1.0, held=False)
    await two.exchange()
    assert two.publish("gpt-4o-mini tokens", 1.0, held=False) == []  # another limit: nobody else there
    await one.exchange()
    assert [p.member for p in one.publish("gpt-4.1-mini tokens", 500.0, held=True)] == ["two"]
    assert {(p.member, p.scope) for p in await one.members()} == {
        ("one", "gpt-4.1-mini tokens"),
        ("two", "gpt-4.1-mini tokens"),
        ("two", "gpt-4o-mini tokens"),
    }
    for gate in (one, two):
        await gate.client.aclose()


async def test_keys_carry_a_hash_tag_and_never_the_key(redis_server: RedisServer) -> None:
    """Every key of one API key's gate is in one Redis Cluster slot (the braces), and the key itself is nowhere."""
    secret = "sk-secret-key-123"
    gate = RedisGate(redis_server.url, gate_digest("http://127.0.0.1:9/v1", secret), "one")
    gate.publish("gpt-4.1-mini tokens", 5.0, held=False)
    await gate.exchange()
    client = aioredis.from_url(redis_server.url)
    keys = [k.decode() async for k in client.scan_iter("*")]
    assert keys and all(k.startswith("runner:{") and "}:" in k for k in keys), keys
    assert len({k[: k.index("}") + 1] for k in keys}) == 1
    values = [json.dumps(str(await client.dump(k))) for k in keys]
    assert not any(secret in text for text in keys + values)
    await client.aclose()
    await gate.client.aclose()


async def test_a_process_killed_with_9_holds_nothing_after_a_short_lease(redis_server: RedisServer) -> None:
    """A process that never says goodbye: its word counts for ``STALE_SECONDS`` by Redis's clock, then is gone."""
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from runner.redis_gate import RedisGate
        async def main():
            gate = RedisGate({redis_server.url!r}, {DIGEST!r}, "killed")
            gate.publish("m tokens", 900.0, held=True)
            await gate.exchange()
            os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(main())
    """)
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, "-c", script], cwd=ROOT, check=False)
    assert done.returncode == -9
    now = await _redis_now(redis_server)
    clock = FakeTime(now + STALE_SECONDS / 2)
    alive = _gate(redis_server, "alive", clock=lambda: clock.now)
    alive.publish("m tokens", 10.0, held=True)
    await alive.exchange()
    assert [(p.member, p.rate) for p in alive.publish("m tokens", 10.0, held=True)] == [("killed", 900.0)]
    clock.now += STALE_SECONDS
    await alive.exchange()
    assert alive.publish("m tokens", 10.0, held=True) == []
    await alive.client.aclose()


async def test_a_process_that_leaves_frees_its_part_at_once(redis_server: RedisServer) -> None:
    one, two = _gate(redis_server, "one"), _gate(redis_server, "two")
    async with one:
        one.publish("m tokens", 900.0, held=True)
        await one.exchange()
    two.publish("m tokens", 10.0, held=True)
    await two.exchange()
    assert two.publish("m tokens", 10.0, held=True) == []
    await two.client.aclose()


async def test_a_refusal_to_one_runner_holds_the_others_requests_through_redis(redis_server: RedisServer) -> None:
    """As on the gate file (``tests/test_peers.py``): two gates each pacing half of the limit; after a 429 to one,
    the other hears at its next exchange that the runners' bucket is armed, and its request waits for room there
    though its own pacer has room. Unarmed, no admission costs a round trip."""
    clock = FakeTime()
    places = [_gate(redis_server, name, clock=clock, monotonic=clock) for name in ("a", "b")]
    a, b = (Gate(None, 90_000, start_share=1.0, sharing=Scope(place, "m"), clock=clock) for place in places)
    for _ in range(3):  # they hear each other (each says it wants more), an exchange after each word
        a.held_at = b.held_at = clock.now
        a.delay(100)
        b.delay(100)
        for place in places:
            await place.exchange()
        clock.now += TELL_SECONDS
    assert a.pacers["tokens"] is not None and a.pacers["tokens"].share == pytest.approx(0.5)
    assert b.delay(671) == 0 and b.granted is None  # unarmed: the bucket was not asked
    clock.now += 1.0
    ticket = a.take(671)
    a.rejected(ticket, {}, "tokens", 0.25)
    await places[1].exchange()
    clock.now += TELL_SECONDS
    assert b.pacers["tokens"] is not None and b.pacers["tokens"].wait(671) == 0.0
    assert b.delay(671) > 0
    clock.now += 1.0
    assert b.delay(671) == 0
    for place in places:
        await place.client.aclose()
        place.bucket_client.close()


async def test_a_peers_uses_reach_the_others_through_redis_with_their_times(redis_server: RedisServer) -> None:
    """As through the gate file (``tests/test_peers.py``): each exchange carries the process's admissions and
    refunds since its last, timed by Redis's clock (each host's offset to it measured at every exchange), and up
    to when they are complete; another process hears those said since it first read, in its gate's clock, and
    judges the readings with them instead of the peer's steady rate."""
    clock = FakeTime()
    peer, mine = (_gate(redis_server, name, clock=clock, monotonic=clock) for name in ("peer", "me"))
    peer.publish("m tokens", 0.0, held=True, events=[(clock.now - 5.0, 671.0)])  # before the other ever read
    await peer.exchange()
    gate = Gate(None, 90_000, start_share=1.0, sharing=Scope(mine, "m"), clock=clock)
    first = clock.now
    gate.delay(100)
    await mine.exchange()
    clock.now += TELL_SECONDS
    gate.delay(100)
    evidence = gate.evidence["tokens"]
    assert evidence.peer_times == []
    clock.now = first + 1.0
    peer.publish("m tokens", 600.0, held=True, events=[(first + 0.2, 671.0), (first + 0.7, -230.0)])
    await peer.exchange()
    await mine.exchange()
    clock.now += TELL_SECONDS
    gate.delay(100)
    assert [(round(t - first, 6), a) for t, a in zip(evidence.peer_times, evidence.peer_amounts, strict=True)] == [
        (0.2, 671.0),
        (0.7, -230.0),
    ]
    assert evidence.peers_cover == pytest.approx((first, first + 1.0))
    for place in (peer, mine):
        await place.client.aclose()
        place.bucket_client.close()


async def test_a_redis_restart_that_forgets_every_word_keeps_those_heard_for_a_lease(
    redis_server: RedisServer,
) -> None:
    """No burst into a room Redis forgot: the peer heard before the restart still counts until it speaks again,
    or for ``STALE_SECONDS`` if it never does."""
    ticks = FakeTime(0.0)
    one = _gate(redis_server, "one", monotonic=lambda: ticks.now)
    two = _gate(redis_server, "two")
    two.publish("m tokens", 400.0, held=True)
    await two.exchange()
    one.publish("m tokens", 400.0, held=True)
    await one.exchange()
    assert [p.member for p in one.publish("m tokens", 400.0, held=True)] == ["two"]

    redis_server.restart()
    ticks.now += 0.25
    await one.speak()  # the first try may meet the dead connection; the pool reconnects on the next
    await one.speak()
    assert one.reachable
    assert any("restarted" in n for n in one.notices), one.notices
    assert [p.member for p in one.publish("m tokens", 400.0, held=True)] == ["two"]  # kept, not forgotten
    ticks.now += STALE_SECONDS
    await one.speak()
    assert one.publish("m tokens", 400.0, held=True) == []  # it never spoke again: gone after the lease
    for gate in (one, two):
        await gate.client.aclose()


async def test_redis_unreachable_at_the_start_is_said_once_and_the_process_takes_half(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # not started: nothing listens on its port
    gate = _gate(server, "one")
    for _ in range(3):
        await gate.speak()
    assert gate.reachable is False
    assert len(gate.notices) == 1 and redis_location(server.url) in gate.notices[0], gate.notices
    assert [p.member for p in gate.publish("m tokens", 5.0, held=True)] == [UNKNOWN]  # one peer that wants more

    server.start()
    try:
        await gate.speak()
        assert gate.reachable and "answers again" in gate.notices[-1]
        assert gate.publish("m tokens", 5.0, held=True) == []
    finally:
        await gate.client.aclose()
        server.stop()


async def test_redis_lost_mid_run_keeps_the_peers_last_heard(redis_server: RedisServer) -> None:
    one, two = _gate(redis_server, "one"), _gate(redis_server, "two")
    two.publish("m tokens", 400.0, held=True)
    await two.exchange()
    one.publish("m tokens", 400.0, held=True)
    await one.speak()
    redis_server.stop()
    await one.speak()
    assert one.reachable is False and "could not reach" in one.notices[-1]
    assert [p.member for p in one.publish("m tokens", 400.0, held=True)] == ["two"]
    # its uses wait for Redis, but only those the others could still use: a long outage holds no more
    now = one.now()
    one.publish("m tokens", 400.0, held=True, events=[(now - 40.0 + i / 100, 671.0) for i in range(2000)])
    kept = one.outbox["m tokens"]
    assert 990 <= len(kept) <= 1000 and kept[-1][0] == now - 40.0 + 19.99  # the last 30 s of them (USES_SECONDS)
    for gate in (one, two):
        await gate.client.aclose()


async def test_a_runners_bucket_that_does_not_answer_lets_admissions_go_on_their_own(
    redis_server: RedisServer,
) -> None:
    """A Redis lost while the runners' bucket is armed never holds an admission up: it is said once, and the
    bucket is left alone for a while (each process paces its own part meanwhile)."""
    clock = FakeTime()
    place = _gate(redis_server, "one", clock=clock, monotonic=clock)
    place.empty(["m tokens"])
    assert place.admit([("m tokens", 600.0, 1000.0, 1.0)]) > 0  # armed and empty
    redis_server.stop()
    assert place.admit([("m tokens", 600.0, 1000.0, 1.0)]) == 0.0
    clock.now += 10.0
    assert place.admit([("m tokens", 600.0, 1000.0, 1.0)]) == 0.0
    assert sum("runners' bucket" in n for n in place.notices) == 1
    place.bucket_client.close()


async def test_the_ledger_through_redis_sums_the_other_databases(redis_server: RedisServer) -> None:
    one, two = _gate(redis_server, "one"), _gate(redis_server, "two")
    what = "gpt-4.1-mini requests 2026-12-05"
    assert one.tell(what, "db-a", 7) == 0  # nothing heard yet
    await one.exchange()
    two.tell(what, "db-b", 3)
    await two.exchange()
    assert two.tell(what, "db-b", 3) == 7
    await one.exchange()
    assert one.tell(what, "db-a", 7) == 3
    async with one:  # leaving: the last figure is written, and stays for the day
        one.tell(what, "db-a", 9)
    await two.exchange()
    assert two.tell(what, "db-b", 3) == 9
    await two.client.aclose()


def test_a_password_in_the_gate_url_works_and_is_never_shown(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="hunter2-secret").start()
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    try:
        shown = runner_cli("gate", "--gate", server.url, "--base-url", "http://127.0.0.1:9/v1", env=env)
        assert shown.returncode == 0, shown.stderr
        assert "no runner process" in shown.stdout
        wrong = server.url.replace("hunter2-secret", "wrong-secret")
        refused = runner_cli("gate", "--gate", wrong, "--base-url", "http://127.0.0.1:9/v1", env=env)
        assert refused.returncode == 2
        assert f"127.0.0.1:{server.port}" in refused.stderr and "secret" not in refused.stderr + refused.stdout
        assert "Traceback" not in refused.stderr
    finally:
        server.stop()


def test_a_gate_that_is_no_redis_url_is_refused_clearly() -> None:
    bad = runner_cli("gate", "--gate", "redsi://127.0.0.1:6379/0")
    assert bad.returncode == 2
    assert "'redsi://127.0.0.1:6379/0' is not host, none, or a redis://" in bad.stderr


@pytest.mark.slow
def test_runner_processes_share_a_limit_through_redis_and_survive_its_restart(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two ``runner run --gate redis://...`` processes, own jobs and databases, one key, 240 RPM over a 5 s window,
    started 1 s apart; Redis is killed and restarted (empty) while both run. Both end together, every request
    answered once, at most one refused."""
    from runner.sim import SimConfig, SimThread

    with SimThread(SimConfig(rpm=240, tpm=10_000_000, window=5.0, latency_scale=0.0)) as sim:
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "RUNNER_GATE": redis_server.url}
        walls = run_side_by_side(tmp_path, sim.base_url, env, meanwhile=lambda: _restart_later(redis_server))
        stats = sim_stats(sim.base_url)
    assert stats["answered"] == 80
    assert stats["rate_limited"] <= 1, stats
    assert max(walls) <= 1.1 * min(walls), walls


def _restart_later(server: RedisServer) -> None:
    time.sleep(6.0)  # real processes on real time: both are well into their runs
    server.restart()
