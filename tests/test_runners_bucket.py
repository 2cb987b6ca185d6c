"""The runners' bucket (``runner.store.peers``): once the server refuses a request of one of the runner processes
sharing a limit, their admissions together go through one token bucket. Each test runs against the gate file and
against a real Redis (``runner.redis_gate``, its Lua script): the two homes must keep the same rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.redis_gate import RedisGate
from runner.store.peers import ARM_SECONDS, STALE_SECONDS, TRANSIT_SECONDS, TURN_SECONDS, GateFile, gate_digest

from .conftest import FakeTime
from .redis_server import RedisServer

Home = Callable[[str, FakeTime], GateFile | RedisGate]


@pytest.fixture(params=["gate file", "redis"])
def home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Home]:
    """Makes a process's place in one shared gate: the host's gate file, or a real Redis."""
    made: list[GateFile | RedisGate] = []

    def make(name: str, clock: FakeTime) -> GateFile | RedisGate:
        if request.param == "gate file":
            place: GateFile | RedisGate = GateFile(tmp_path / "gate.db", name, clock)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            place = RedisGate(server.url, gate_digest("http://127.0.0.1:9/v1", "sk-test"), name, clock, clock)
        made.append(place)
        return place

    yield make
    for place in made:
        if isinstance(place, GateFile):
            place.close()
        else:
            place.bucket_client.close()


Cost = list[tuple[str, float, float, float]]


def _armed_with_400_left(home: Home) -> tuple[FakeTime, GateFile | RedisGate, GateFile | RedisGate, Cost]:
    """Two processes whose runners' bucket (1,000 a second, holding a second) a refusal armed a second ago; one has
    just taken a request of 600 from it."""
    clock = FakeTime()
    one, two = home("one", clock), home("two", clock)
    cost = [("m tokens", 600.0, 1000.0, 1.0)]
    one.admit(cost)
    one.empty(["m tokens"])
    clock.now += 1.0
    assert one.admit(cost) == 0.0  # 400 left
    return clock, one, two, cost


def test_the_runners_bucket_holds_nothing_back_until_the_server_refuses_one_of_them(home: Home) -> None:
    """Each process paces its part on its own; the runners' bucket keeps their admissions apart in time once a
    refusal shows the server's window is as short as the burst (or others take what they counted on): until then
    it lets everything through, from then on for ``ARM_SECONDS`` it holds what the runners admit together to what
    a bucket of their whole share holds."""
    clock = FakeTime()
    one, two = home("one", clock), home("two", clock)
    cost = [("m tokens", 600.0, 1000.0, 1.0)]  # 600 of a bucket of 1,000 a second, holding one second
    assert [one.admit(cost), two.admit(cost), one.admit(cost)] == [0.0, 0.0, 0.0]
    two.empty(["m tokens"])  # a 429 to one of them: the server is full now
    assert one.admit(cost) == pytest.approx(0.6)  # from empty, at 1,000 a second
    clock.now += 0.6
    assert one.admit(cost) == 0.0
    assert two.admit(cost) == pytest.approx(0.6)  # the other's came just before: this one waits
    clock.now += ARM_SECONDS
    assert [two.admit(cost), one.admit(cost), two.admit(cost)] == [0.0, 0.0, 0.0]  # no refusal since: free again


def test_the_runners_bucket_takes_all_of_a_request_or_none_of_it(home: Home) -> None:
    clock = FakeTime()
    gate = home("one", clock)
    both = [("m requests", 1.0, 15.0, 1.0), ("m tokens", 600.0, 1000.0, 1.0)]
    gate.admit(both)
    gate.empty(["m requests", "m tokens"])
    clock.now += 0.5  # requests hold 7.5 (room), tokens 500 (not enough)
    assert gate.admit(both) == pytest.approx(0.1)
    clock.now += 0.1
    assert gate.admit(both) == 0.0
    assert gate.admit([("m requests", 1.0, 15.0, 1.0)]) == 0.0  # 9 - 1 - 1 requests left: nothing taken twice
    for _ in range(7):
        gate.admit([("m requests", 1.0, 15.0, 1.0)])
    assert gate.admit([("m requests", 1.0, 15.0, 1.0)]) > 0


def test_the_runners_bucket_paces_at_the_least_rate_and_the_longest_burst_of_the_fresh_views(home: Home) -> None:
    """Processes may briefly disagree about what the runners may use (one gives the server the benefit of the
    doubt until a 429 says otherwise): the others must not burst into the room it believes in. A process that
    stopped speaking has no say after ``STALE_SECONDS``."""
    clock = FakeTime()
    careful, bold = home("careful", clock), home("bold", clock)
    careful.admit([("m tokens", 600.0, 1000.0, 1.0)])
    bold.empty(["m tokens"])
    assert bold.admit([("m tokens", 600.0, 1500.0, 0.5)]) == pytest.approx(0.6)  # at 1,000 a second
    clock.now += 0.6
    assert bold.admit([("m tokens", 600.0, 1500.0, 0.5)]) == 0.0  # 600 fitted: the bucket holds a whole second
    clock.now += STALE_SECONDS + 0.1
    bold.admit([("m tokens", 0.0, 1500.0, 0.5)])  # only its own view now: 1,500 a second, 750 at most
    assert bold.admit([("m tokens", 750.0, 1500.0, 0.5)]) == 0.0
    assert bold.admit([("m tokens", 750.0, 1500.0, 0.5)]) == pytest.approx(0.5)


def test_a_refund_fills_the_runners_bucket_up_to_its_capacity_less_what_may_still_be_on_its_way(home: Home) -> None:
    """An answer's refund reaches the server's bucket when the answer is made; a request admitted just before
    may reach it after, and a full bucket there lost the refund. Within ``TRANSIT_SECONDS`` of an admission the
    runners' bucket counts that request as perhaps not yet there."""
    clock, one, two, cost = _armed_with_400_left(home)
    two.give_back("m tokens", 500.0)  # at most 1,000 - 600 on its way
    assert two.admit(cost) == pytest.approx(0.2)
    clock.now += TRANSIT_SECONDS + 0.01
    two.give_back("m tokens", 300.0)  # the request has arrived: up to the capacity
    assert two.admit(cost) == 0.0  # 410 + 300, less 600


def test_the_process_that_has_waited_longest_takes_from_the_runners_bucket_first(home: Home) -> None:
    """Whoever asks first when the bucket holds a request would take it, so a process that asks a little later each
    time could wait for ever, and, sending nothing, never learn that a belief of its own was wrong (two processes
    under a 5 s window: one starved for 24 s at a share it could not test, 75% of the limit together). The one that
    has waited longest takes first, while it keeps asking; a turn whose process stops asking lapses."""
    clock = FakeTime()
    patient, eager = home("patient", clock), home("eager", clock)
    cost = [("m tokens", 600.0, 1000.0, 1.0)]
    patient.admit(cost)
    patient.empty(["m tokens"])
    assert patient.admit(cost) == pytest.approx(0.6)  # from empty: it waits, and has the next turn
    clock.now += 0.5
    assert patient.admit(cost, waited=0.5) == pytest.approx(0.1)  # it asks again, as a waiting gate does
    clock.now += 0.1
    assert eager.admit(cost) == pytest.approx(0.6)  # the bucket holds 600, but the other has waited longer
    assert patient.admit(cost, waited=0.6) == 0.0
    clock.now += 0.6
    assert eager.admit(cost, waited=0.6) == 0.0  # its turn now: nobody else waits
    assert patient.admit(cost) == pytest.approx(0.6)  # the turn is the patient one's again...
    clock.now += 0.6 + TURN_SECONDS  # ...but it stopped asking
    assert eager.admit(cost) == 0.0


def test_where_the_server_gives_nothing_back_the_runners_bucket_keeps_their_refunds(home: Home) -> None:
    """A server that never gives back what an answer did not use loses nothing when full: what a process gives back
    is only the runners' bookkeeping (their share is set on what answers use over a while, a request's reservation
    is taken at admission). Capped at the bucket's capacity like a server's refund, it was lost whenever the bucket
    was nearly full: two processes under a 1 s window, prose counted by characters and never given back, held 88%
    of the limit (one alone 97%). Kept, it stays above the capacity until admissions take it."""
    clock, one, two, cost = _armed_with_400_left(home)
    two.give_back("m tokens", 500.0, keep=True)  # 900
    two.give_back("m tokens", 500.0, keep=True)  # 1,400: above the capacity
    clock.now += 1.0  # the refill does not take it away
    assert [one.admit(cost), two.admit(cost)] == [0.0, 0.0]  # 200 left: what was kept is taken
    assert one.admit(cost) == pytest.approx(0.4)
    clock.now += TRANSIT_SECONDS + 0.01
    one.give_back("m tokens", 900.0)  # a server that gives back: up to the capacity only
    assert one.admit(cost, waited=0.06) == 0.0  # (its turn: it has waited)
    assert two.admit(cost) == pytest.approx(0.2)
