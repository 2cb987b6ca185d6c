"""The gate file runner processes on one host share their limits through (``runner.store.peers``), and two real
``runner run`` processes using it against one simulator."""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

import pytest

from runner.gate import Gate
from runner.gates import Scope
from runner.store.peers import KEEP_SECONDS, STALE_SECONDS, TELL_SECONDS, GateFile, gate_file_path

from .conftest import FakeTime, runner_cli
from .processes import run_side_by_side, sim_stats


def test_each_process_hears_the_others_and_not_itself(tmp_path: Path) -> None:
    clock = FakeTime()
    one, two = (GateFile(tmp_path / "gate.db", name, clock) for name in ("one", "two"))
    assert one.publish("gpt-4.1-mini tokens", 500.0, held=True) == []
    heard = two.publish("gpt-4.1-mini tokens", 250.0, held=False)
    assert [(p.member, p.rate, p.held) for p in heard] == [("one", 500.0, True)]
    assert two.publish("gpt-4o-mini tokens", 1.0, held=False) == []  # another limit: nobody else there
    assert {p.member for p in one.members()} == {"one", "two"}


def test_a_process_that_stops_speaking_holds_nothing_after_a_short_lease(tmp_path: Path) -> None:
    """A process killed with -9 never says goodbye: its word counts for ``STALE_SECONDS``, then it is gone."""
    clock = FakeTime()
    dead, alive = GateFile(tmp_path / "gate.db", "dead", clock), GateFile(tmp_path / "gate.db", "alive", clock)
    dead.publish("m tokens", 900.0, held=True)
    clock.now += STALE_SECONDS / 2
    assert [p.member for p in alive.publish("m tokens", 10.0, held=True)] == ["dead"]
    clock.now += STALE_SECONDS
    assert alive.publish("m tokens", 10.0, held=True) == []


def test_a_process_that_leaves_frees_its_part_at_once(tmp_path: Path) -> None:
    clock = FakeTime()
    one, two = GateFile(tmp_path / "gate.db", "one", clock), GateFile(tmp_path / "gate.db", "two", clock)
    one.publish("m tokens", 900.0, held=True)
    one.leave()
    assert two.publish("m tokens", 10.0, held=True) == []


def test_a_peer_that_wants_more_but_sent_nothing_lately_still_gets_its_part(tmp_path: Path) -> None:
    """Under a server that counts 2x, a process's part is a request every few seconds: in the span its use is told
    over it may have sent nothing. It is still there (it says it wants more): the other takes half the runners'
    share, not all of it (which made both take all of it by turns: 40% of requests refused)."""
    clock = FakeTime()
    quiet = GateFile(tmp_path / "gate.db", "quiet", clock)
    gate = Gate(None, 90_000, start_share=1.0, sharing=Scope(GateFile(tmp_path / "gate.db", "busy", clock), "m"),
                clock=clock)  # fmt: skip
    quiet.publish("m tokens", 0.0, held=True)
    gate.delay(100)
    assert gate.pacers["tokens"] is not None and gate.pacers["tokens"].share == pytest.approx(0.5)
    quiet.leave()
    clock.now += TELL_SECONDS
    gate.delay(100)
    assert gate.pacers["tokens"].share == pytest.approx(1.0)


def test_a_peers_admissions_and_refunds_reach_the_others_with_their_times(tmp_path: Path) -> None:
    """Each word carries the process's admissions and refunds since its last, timed by the file's clock; another
    process reads those written since it last read (not its own, not what was written before it first read), in
    its gate's clock, and knows over which span they are all of the peers' use."""
    clock = FakeTime()
    peer = GateFile(tmp_path / "gate.db", "peer", clock)
    peer.publish("m tokens", 0.0, held=True, events=[(clock.now - 5.0, 671.0)])  # before the other ever read
    gate = Gate(None, 90_000, start_share=1.0, sharing=Scope(GateFile(tmp_path / "gate.db", "me", clock), "m"),
                clock=clock)  # fmt: skip
    first = clock.now
    gate.delay(100)
    evidence = gate.evidence["tokens"]
    assert evidence.peer_times == []
    clock.now += 1.0
    peer.publish("m tokens", 600.0, held=True, events=[(first + 0.2, 671.0), (first + 0.7, -230.0)])
    gate.delay(100)
    assert list(zip(evidence.peer_times, evidence.peer_amounts, strict=True)) == [
        (first + 0.2, 671.0),
        (first + 0.7, -230.0),
    ]
    assert evidence.peers_cover == (first, first + 1.0)


def test_a_reading_waits_until_every_peer_has_spoken_past_it(tmp_path: Path) -> None:
    """A reading taken after a peer's last word is judged only once the peer has spoken again (its use in between
    is then known), not with its told rate standing in."""
    clock = FakeTime()
    peer = GateFile(tmp_path / "gate.db", "peer", clock)
    gate = Gate(None, 90_000, start_share=1.0, sharing=Scope(GateFile(tmp_path / "gate.db", "me", clock), "m"),
                clock=clock)  # fmt: skip
    evidence = gate.evidence["tokens"]
    headers = {"x-ratelimit-limit-tokens": "90000", "x-ratelimit-remaining-tokens": "90000",
               "x-ratelimit-reset-tokens": "0s"}  # fmt: skip
    for _ in range(3):  # the peer speaks; the gate admits and reads
        peer.publish("m tokens", 0.0, held=True, events=[])
        ticket = gate.take(100) if gate.delay(100) == 0 else None
        clock.now += 1.2
        if ticket is not None:
            gate.settle(ticket, 100)
            gate.observe(headers, ticket)
    assert evidence.waiting  # read after the peer's last word
    peer.publish("m tokens", 0.0, held=True, events=[])
    clock.now += 0.3
    gate.delay(100)
    assert evidence.waiting == []


def test_a_peer_that_does_not_tell_its_events_is_heard_by_its_rate(tmp_path: Path) -> None:
    """A process of an older runner (or heard through Redis) says only its rate: no events, no span, no reading
    waits for it."""
    clock = FakeTime()
    gate = Gate(None, 90_000, start_share=1.0, sharing=Scope(GateFile(tmp_path / "gate.db", "me", clock), "m"),
                clock=clock)  # fmt: skip
    old = GateFile(tmp_path / "gate.db", "old", clock)
    for _ in range(3):
        old.publish("m tokens", 500.0, held=True)
        gate.delay(100)
        clock.now += 1.0
    evidence = gate.evidence["tokens"]
    assert (evidence.peer_times, evidence.peers_cover, evidence.peers) == ([], (math.inf, -math.inf), 500.0)


def test_a_refusal_to_one_runner_holds_the_others_requests_until_the_server_has_room(tmp_path: Path) -> None:
    """Two gates on one file, each pacing half of the limit. Under a one-second window, a request the server
    counts as two thirds of its bucket, sent by both at once, is refused: after the first 429 the other's request
    waits for the runners' bucket though its own pacer has room (two processes at 1.5x: 17-20% of requests refused
    in the pacing model before, 0.7-1.6% now)."""
    clock = FakeTime()
    a, b = (Gate(None, 90_000, start_share=1.0, sharing=Scope(GateFile(tmp_path / "gate.db", name, clock), "m"),
                 clock=clock) for name in ("a", "b"))  # fmt: skip
    for _ in range(2):  # they hear each other (each says it wants more)
        a.held_at = b.held_at = clock.now
        a.delay(100)
        b.delay(100)
        clock.now += TELL_SECONDS
    assert a.pacers["tokens"] is not None and a.pacers["tokens"].share == pytest.approx(0.5)
    clock.now += 1.0  # both buckets full (a second of their part)
    ticket = a.take(671)
    a.rejected(ticket, {}, "tokens", 0.25)
    assert b.pacers["tokens"] is not None and b.pacers["tokens"].wait(671) == 0.0  # its own bucket has room
    assert b.delay(671) > 0  # the runners' bucket has not
    clock.now += 1.0
    assert b.delay(671) == 0
    assert any("one bucket" in n for n in a.notices)  # said once, to the user of the refused process


def test_a_gate_file_of_an_earlier_version_gains_the_turns_of_its_buckets(tmp_path: Path) -> None:
    """A gate file outlives runner versions (it is in the user's cache): one whose runners' buckets have no turn
    (before the process that has waited longest took first) gains the columns when a newer process opens it, and
    an older process's write, which names its own columns, still works."""
    path = tmp_path / "gate.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE buckets (scope TEXT PRIMARY KEY, level REAL NOT NULL, stamp REAL NOT NULL, rate REAL NOT "
            "NULL, capacity REAL NOT NULL, armed REAL NOT NULL, sent REAL NOT NULL, transit REAL NOT NULL)"
        )
    clock = FakeTime()
    one, two = GateFile(path, "one", clock), GateFile(path, "two", clock)
    cost = [("m tokens", 600.0, 1000.0, 1.0)]
    one.admit(cost)
    one.empty(["m tokens"])
    assert one.admit(cost) == pytest.approx(0.6)
    clock.now += 0.5
    assert one.admit(cost, waited=0.5) == pytest.approx(0.1)
    clock.now += 0.1
    assert two.admit(cost) == pytest.approx(0.6)  # the turn is the one that waited
    one.conn.execute(  # what an older process writes
        "INSERT OR REPLACE INTO buckets (scope, level, stamp, rate, capacity, armed, sent, transit) "
        "VALUES ('m tokens', 1000, ?, 1000, 1000, ?, 0, 0)",
        (clock.now, clock.now + 60),
    )
    assert two.admit(cost) == 0.0
    assert not one.notices and not two.notices


def test_the_gate_file_is_named_by_a_hash_of_server_and_key_never_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = gate_file_path("http://127.0.0.1:8787/v1", "sk-secret-key")
    assert path.parent == tmp_path / "runner" / "gates"
    assert "sk-secret" not in str(path)
    assert path == gate_file_path("http://127.0.0.1:8787/v1/", "sk-secret-key")  # one server however written
    assert path != gate_file_path("http://127.0.0.1:8788/v1", "sk-secret-key")
    assert path != gate_file_path("http://127.0.0.1:8787/v1", "sk-other-key")
    GateFile(path).publish("m tokens", 1.0, held=False)
    assert b"sk-secret" not in path.read_bytes()


@pytest.mark.slow
def test_two_runner_processes_on_one_key_split_the_limit_and_finish_together(tmp_path: Path) -> None:
    """Two ``runner run`` processes, each with its own job and database, one key, one simulator enforcing 240 RPM
    over a 5 s window, the second started 1 s after the first: they find each other in the gate file and split
    the limit evenly, so they end together (paced alone at 120 RPM, each reading the other as another client, the
    first took more and the second ended 27% later: 35 s and 44.6 s). Nothing is refused."""
    from runner.sim import SimConfig, SimThread

    with SimThread(SimConfig(rpm=240, tpm=10_000_000, window=5.0, latency_scale=0.0)) as sim:
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "XDG_CACHE_HOME": str(tmp_path / "cache")}
        env.pop("RUNNER_GATE", None)
        walls = run_side_by_side(tmp_path, sim.base_url, env)
        stats = sim_stats(sim.base_url)
    assert stats["answered"] == 80
    assert stats["rate_limited"] <= 1, stats
    assert max(walls) <= 1.1 * min(walls), walls  # 80 requests at 4 a second: both end near 20 s


def test_runner_gate_shows_who_shares_the_key_on_this_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.gates import open_gate
    from runner.settings import RunSettings
    from runner.transport import Credentials

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    url = "http://127.0.0.1:9/v1"
    file, _ = open_gate(RunSettings(), Credentials(url, "sk-test"))
    assert isinstance(file, GateFile)
    file.publish("gpt-4.1-mini tokens", 1234.5, held=True)
    shown = runner_cli("gate", "--base-url", url, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"{os.getpid()}" in shown.stdout and "gpt-4.1-mini tokens" in shown.stdout and "1,234.5" in shown.stdout
    file.leave()
    assert "no runner process" in runner_cli("gate", "--base-url", url, env=env).stdout


def test_a_gate_file_that_cannot_be_written_leaves_the_gate_pacing_alone_said_once(tmp_path: Path) -> None:
    file = GateFile(tmp_path / "gate.db", "one")
    file.conn.execute("DROP TABLE peers")  # as if the file were damaged under the run
    assert file.publish("gpt-4.1-mini tokens", 10.0, held=True) == []
    assert file.publish("gpt-4.1-mini tokens", 10.0, held=True) == []
    assert len(file.notices) == 1 and "pacing alone" in file.notices[0]


def test_what_long_gone_processes_left_is_deleted_by_the_next_one_to_open_the_file(tmp_path: Path) -> None:
    from runner.store.peers import FORGET_SECONDS

    clock = FakeTime()
    GateFile(tmp_path / "gate.db", "killed", clock).publish("m tokens", 5.0, held=False)
    clock.now += FORGET_SECONDS + 1
    later = GateFile(tmp_path / "gate.db", "later", clock)
    assert later.conn.execute("SELECT count(*) FROM peers").fetchone()[0] == 0


def test_the_ledger_sums_the_other_databases_and_outlives_the_process(tmp_path: Path) -> None:
    """A day's requests and the batch queue's tokens are per database: a process hears the other databases'
    figures, not its own database's (its store counts those), and a figure stays after its process left."""
    clock = FakeTime()
    one, two = GateFile(tmp_path / "gate.db", "one", clock), GateFile(tmp_path / "gate.db", "two", clock)
    what = "gpt-4.1-mini requests 2026-12-05"
    assert one.tell(what, "db-a", 7) == 0
    assert two.tell(what, "db-b", 3) == 7
    assert two.tell(what, "db-b", 4) == 7  # within TELL_SECONDS: remembered, written at the next chance
    clock.now += TELL_SECONDS
    assert GateFile(tmp_path / "gate.db", "three", clock).tell(what, "db-a", 7) == 3  # db-b's first word
    assert two.tell(what, "db-b", 5) == 7  # db-a: one figure, whichever process of it last spoke
    one.leave()
    one.close()
    clock.now += TELL_SECONDS
    assert GateFile(tmp_path / "gate.db", "four", clock).tell(what, "db-c", 0) == 12
    clock.now += KEEP_SECONDS + 1
    assert GateFile(tmp_path / "gate.db", "five", clock).tell(what, "db-c", 0) == 0  # a day and an hour later


@pytest.mark.anyio
async def test_a_process_leaving_writes_its_last_ledger_figures(tmp_path: Path) -> None:
    clock = FakeTime()
    async with GateFile(tmp_path / "gate.db", "one", clock) as one:
        one.tell("m batch queue tokens", "db-a", 500)
        one.tell("m batch queue tokens", "db-a", 0)  # its batches ended just before it left: not yet written
    assert GateFile(tmp_path / "gate.db", "two", clock).tell("m batch queue tokens", "db-b", 0) == 0
