"""Pacing under every reading of the rate limits OpenAI leaves open, on virtual time (``pacing_model``).

Each cell runs the real gate against the simulator's real buckets: ``bench/pacing.py``'s job (400 requests of
371 prompt tokens and up to 300 out, answers of 20-120 tokens) at 900 RPM / 90,000 TPM, latency 0.3 s + 150
tokens/s, as issue 6 measured: each request reserves 45% of what a one-second window holds. The whole matrix is
header reading (minute, bucket, window, none) x enforcement window (60 s, 5 s, 1 s) x another client using 0% or
40% of the limits x the moment the server takes its header reading (at the answer, at admission). No cell may
fall under the aims: without other use at least 97% of the binding limit and at most 0.5% of requests refused;
with 40% used by another client at least 90% of what is left and at most 1% refused.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pytest

from runner.candidates import SCALES
from runner.evidence import MAX_SCALE, MAX_SHARE, MIN_SCALE, MIN_SHARE, QUIET_SECONDS
from runner.gate import FACTOR_FLOOR, MIN_BURST, START_SHARE, TRANSIT_CEILING, TRANSIT_FLOOR, Gate
from runner.store.peers import TRANSIT_SECONDS

from .pacing_model import ceiling, simulate

PROBE_EVERY = QUIET_SECONDS + 2.0  # seconds: without headers, a probe after a quiet spell and the fade before its 429

READINGS = ("minute", "bucket", "window", "none")
WINDOWS = (60.0, 5.0, 1.0)


@pytest.mark.parametrize("header_time", ["answered", "sent"])
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("reading", READINGS)
def test_full_use_of_the_limit_without_other_use(reading: str, window: float, header_time: str) -> None:
    run = simulate(reading=reading, window=window, header_time=header_time, requests=400, seed=1)
    assert run.answered == 400
    assert run.utilisation >= 0.97, run
    assert run.rejected <= 0.005, run


@pytest.mark.parametrize("seed", [2, 22])  # 22: a 429 made the wrong reading believed, and it starved the right one
@pytest.mark.parametrize("header_time", ["answered", "sent"])
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("reading", READINGS)
def test_what_is_left_under_another_clients_load(reading: str, window: float, header_time: str, seed: int) -> None:
    """Another client uses 40% all along: the gate holds what it leaves, and with headers at most 1% of its requests
    are refused. Without them only a probe tells whether the other client is still there, and one that finds it
    ends in a 429: a handful at the start, then at most one every ``PROBE_EVERY`` seconds (so a wrong belief in its
    use costs about 15 s at most: ``test_without_headers_the_limit_is_back_within_15_s``)."""
    run = simulate(reading=reading, window=window, background=0.4, header_time=header_time, requests=400, seed=seed)
    assert run.answered == 400
    assert run.utilisation / 0.6 >= 0.90, run
    if reading == "none":
        assert run.rejections <= 5 + run.seconds / PROBE_EVERY, run
    else:
        assert run.rejected <= 0.01, run


@pytest.mark.parametrize("header_time", ["answered", "sent"])
@pytest.mark.parametrize("reading", READINGS)
def test_requests_that_reach_the_server_later_than_sent_cost_little(reading: str, header_time: str) -> None:
    """A busy machine or network delays each request by up to 0.2 s on its way: under a one-second window two
    sent apart can arrive together and be refused. Such a 429 is a moment's crowding, not another client: read
    as one, it held the gate at 87% for the rest of the run. Per-minute readings taken at the answer suffer most:
    a request still on its way reads as a server that counts less (0.50% refused here, 0.25-0.74% over six seeds;
    1.7% here and 1.2% on average before the 429s' "Requested" held the candidates' scale; the README's "Where it
    is weakest" says so)."""
    run = simulate(reading=reading, window=1.0, header_time=header_time, jitter=0.2, requests=400, seed=1)
    assert run.answered == 400
    assert run.utilisation >= 0.95, run
    assert run.rejected <= (0.01 if reading in ("minute", "bucket") and header_time == "answered" else 0.005), run


@pytest.mark.parametrize("reading", ["minute", "bucket", "window"])
def test_the_headers_are_what_finds_the_other_client(reading: str) -> None:
    """With headers the other client is seen before it costs a 429 (with none, only 429s can tell), and what the
    gate says it uses is right while the work runs."""
    said: list[float] = []
    run = simulate(reading=reading, window=5.0, background=0.4, requests=400, seed=3,
                   check=lambda gate: said.append(gate.statistics().other_tokens))  # fmt: skip
    assert run.rejections == 0
    assert statistics.median(said[len(said) // 10 :]) == pytest.approx(0.4 * 1500, rel=0.15)


def test_requests_per_minute_bind_as_well() -> None:
    run = simulate(reading="minute", window=1.0, requests=600, prompt=(20, 40), max_tokens=30, output=(5, 30), seed=4)
    assert run.request_share >= 0.97 and run.rejected == 0


def test_a_server_that_never_refunds_is_followed_through_its_headers() -> None:
    """llmock's reading: prompt + max output counted and never given back. The gate refunds what answers did not
    use, so only the headers can tell it that the server keeps counting: it must slow down instead of being
    refused (the server's limit binds on what it counts, not on the tokens used)."""
    run = simulate(reading="minute", window=1.0, counting="chars-no-refund", requests=400, seed=5)
    assert run.rejected <= 0.01, run


@pytest.mark.parametrize("header_time", ["answered", "sent"])
@pytest.mark.parametrize("window", [60.0, 5.0])
@pytest.mark.parametrize(("counting", "chars"), [("chars", 4000), ("x2", 900), ("x1.5", 900)])
def test_a_server_that_counts_a_request_as_twice_the_gates_estimate_is_used_to_its_limit(
    counting: str, chars: int, window: float, header_time: str
) -> None:
    """OpenAI's limiter counts a request by its characters and maximum output; on prose that is 1.5-2x the gate's
    tiktoken estimate while it is in flight (here 4,000 characters: 1.94x), which paces the gate to 41% of the
    limit in its own count. A reservation is then larger than the gate's one-second bucket: the refunds that came
    while the bucket waited for it were lost (88% of the limit), and a server counting 2x moved its readings' end
    twice as far as the gate's use, which the window detector took for a fixed window (a 429 storm)."""
    run = simulate(reading="minute", window=window, counting=counting, chars=chars, header_time=header_time,
                   requests=400, seed=1)  # fmt: skip
    assert run.answered == 400
    assert run.counted_share >= 0.97, run
    assert run.rejected <= 0.005, run


@pytest.mark.parametrize("header_time", ["answered", "sent"])
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("counting", ["chars", "x0.6", "chars-max"])
def test_a_server_that_counts_a_request_as_less_than_the_gates_estimate_is_used_to_its_limit(
    counting: str, window: float, header_time: str
) -> None:
    """Characters / 4 of this job's short words count a prompt as 0.6x the tokenizer, but give back the answer's
    unused tokens one for one: no single scale, so the gate's pace comes from the candidate's scale at admission,
    in steps of 0.025 (0.05 held it at 93-96%), refined between them. Readings taken at admission show less of the
    refunds: 96%. The rate-limit guide read literally (the larger of characters / 4 and the maximum output, never
    given back) counts this job's request as its maximum output alone: 0.45x the gate's reservation."""
    run = simulate(reading="minute", window=window, counting=counting, header_time=header_time, requests=400, seed=1)
    assert run.answered == 400
    assert run.counted_share >= (0.97 if header_time == "answered" else 0.96), run
    assert run.rejected == 0, run


@pytest.mark.parametrize("counting", ["chars", "chars-no-refund", "chars-max"])
def test_a_server_that_counts_less_than_half_the_gates_estimate_is_used_to_its_limit(counting: str) -> None:
    """Text the tokenizer splits finely (Chinese: about a token a character) counted as characters / 4: 2,000
    tokens in 2,000 characters with 300 of output is 0.35x the gate's reservation (0.22x as the larger of the two,
    beyond what ``MAX_SHARE`` lets the gate pace: 94%). With candidates from 0.5 only, 61% / 85% / 53%."""
    run = simulate(reading="minute", window=5.0, counting=counting, prompt=(1800, 2200), chars=2000, requests=300,
                   seed=1)  # fmt: skip
    assert run.answered == 300
    assert run.counted_share >= (0.93 if counting == "chars-max" else 0.97), run
    assert run.rejected == 0, run


def test_characters_counted_while_requests_take_a_little_longer_on_their_way() -> None:
    """Requests that take 0-20 ms longer to reach the server (a loaded machine) blur how a characters / 4 server
    gives refunds back (scaled like the prompt, or one for one), and the gate believes the way that counts more:
    96% of the limit instead of 99%, what bench/pacing.py shows against the simulator in its own process. The
    README's "Where it is weakest" says so; a change that makes it worse fails here."""
    run = simulate(reading="minute", window=1.0, counting="chars", jitter=0.02, requests=400, seed=1)
    assert run.counted_share >= 0.95, run
    assert run.rejected == 0, run


def test_what_the_servers_own_rules_let_any_client_use() -> None:
    """The share of the limit a client that sees the server's buckets gets, sending each request the moment it
    would be admitted: the ceiling the bench's cells are measured against. A server whose bucket holds little more
    than one request (2x the gate's estimate of 671 tokens under a 1 s window: 1,342 of 1,500) loses the refunds
    that come back while it is full, whoever sends: no client reaches 97% of its limit there, as the README says."""
    assert ceiling(window=1.0, counting="x2") < 0.95
    assert ceiling(window=5.0, counting="x2") >= 0.99
    assert ceiling(window=1.0, counting="x1.5") >= 0.99
    assert ceiling(window=1.0, counting="chars", chars=1930) >= 0.99


@pytest.mark.parametrize("seed", [1, 3])
def test_a_refund_a_full_server_lost_does_not_let_the_next_request_through(seed: int) -> None:
    """A server counting 1.5x the gate's estimate under a one-second window: a request is two thirds of its bucket,
    which is full now and then. The gate's level lags the server's by its headroom, so a refund the full server
    lost lifted the gate's level (below its capacity) and sent the next request up to 65 ms early: 94.7% and 94.8%
    of the limit with 0.99% refused on these seeds, each 429 cutting the rate. The gate mirrors the server's bucket
    and, once a 429 showed refunds lost, lifts its level no higher than the mirror."""
    run = simulate(reading="minute", window=1.0, counting="x1.5", jitter=0.02, requests=400, seed=seed)
    assert run.answered == 400
    assert run.counted_share >= 0.955, run
    assert run.rejected <= 0.008, run


@pytest.mark.parametrize("seed", [1, 4])
def test_where_the_servers_window_is_the_burst_the_level_keeps_up_with_the_server(seed: int) -> None:
    """The same server: after each admission the gate's level refilled at its rate, 2% under the server's, from
    where the request left it, while the server's bucket (as the gate mirrors it) refilled from what was left there
    too. A request two thirds of the bucket waited for the level, so it went after the server's bucket had been
    full a while, every time: 96.0% and 95.7% on these seeds. Where refunds have been believed scaled for
    ``MIRROR_SECONDS`` (the mirror is then the server's bucket), the level lags the mirror by no more than
    ``MIRROR_MARGIN`` of it."""
    run = simulate(reading="minute", window=1.0, counting="x1.5", jitter=0.02, requests=400, seed=seed)
    assert run.answered == 400
    assert run.counted_share >= 0.975, run
    assert run.rejected <= 0.008, run


@pytest.mark.parametrize("seed", [1, 6])
def test_a_refund_after_the_refusals_round_trip_finds_the_last_request_at_the_server(seed: int) -> None:
    """A server counting 2x under a 1 s window, requests at the server within milliseconds. An answer's refund that
    came within ``TRANSIT_SECONDS`` (50 ms) of the last admission was mirrored as if it reached the server's bucket
    before that request did, full and losing it: the mirror then lagged the server by the refund (400 tokens,
    a quarter of a second) and the level with it. 87.9% and 87.8% on these seeds. A 429 comes back at once, so
    its round trip (4 ms here) bounds how long a request takes to reach the server."""
    run = simulate(reading="minute", window=1.0, counting="x2", requests=400, seed=seed)
    assert run.answered == 400
    assert run.counted_share >= 0.895, run
    assert run.rejected <= 0.015, run


@pytest.mark.parametrize("seed", [1, 3])
def test_where_requests_reach_the_server_late_the_mirror_waits_for_them(seed: int) -> None:
    """Requests up to 0.2 s late on their way, a server counting 1.5x under a 1 s window: the mirror took a request
    admitted 50 ms before an answer's refund as at the server already, so the level went up with a refund the
    server had lost, and the next request was refused: 7.4% and 11.7% of the requests on these seeds (89% and
    90% of the limit). The refusals' round trips say how late requests come: 0.7% and 3.9% (78% and 83%)."""
    run = simulate(reading="minute", window=1.0, counting="x1.5", jitter=0.2, requests=400, seed=seed)
    assert run.answered == 400
    assert run.rejected <= 0.045, run
    assert run.counted_share >= 0.75, run


@pytest.mark.parametrize(
    ("setting", "told"),
    [
        ({"counting": "x1.5"}, "counts this run's use of the tokens limit as about 1.50x the runner's own count"),
        ({"background": 0.4}, "other clients of the organisation use about 40% of the tokens limit"),
        (
            {"counting": "x1.5", "background": 0.3},
            "as about 1.50x the runner's own count, and other clients use about 30%",
        ),
    ],
)
def test_the_user_is_told_why_the_server_counts_more_than_the_run_uses(setting: dict[str, Any], told: str) -> None:
    """The server's own way of counting and other clients' use are told apart, and the note says which, once
    the evidence has settled (15 s): before, every such run said "other clients, or its own way of counting"."""
    run = simulate(reading="minute", window=5.0, requests=300, seed=1, **setting)
    assert [n for n in run.gate.notices if "the tokens limit" in n and told in n], run.gate.notices


@pytest.mark.parametrize("seed", [2, 6])
def test_a_server_that_gives_nothing_back_does_not_lose_the_gates_own_refunds(seed: int) -> None:
    """Prose counted as characters / 4 (1.17x the gate's reservation at admission) and never given back, under a
    one-second window. The gate paces on the scale over a while (1.77x what it keeps of a request), which counts
    what answers leave unused as given back: those refunds are its own bookkeeping, and a full server bucket loses
    none of them. Capped by the mirror of the server's bucket all the same, they held the gate at 94.7% and 94.5% on
    these seeds (93.2-93.4% against the simulator, 95.2-95.5% before the mirror)."""
    run = simulate(reading="minute", window=1.0, counting="chars-no-refund", chars=1930, jitter=0.02, requests=400,
                   seed=seed)  # fmt: skip
    assert run.answered == 400
    assert run.counted_share >= 0.955, run
    assert run.rejected <= 0.01, run


@pytest.mark.parametrize("seed", [3, 6])
def test_once_429s_said_how_the_server_counts_no_reading_paces_beyond_it(seed: int) -> None:
    """The same server: under a 1 s window the spreads of the two readings (taken at admission or at the answer)
    come close and the held belief lapses now and then. The benefit of the doubt then paced the other reading's
    share, the whole limit in the gate's count where the 429s had said the server counts 1.5x: a 429 each time
    (these seeds: 3 and 4 refused a run, the share at 1.0 for 12 and 19 events). The reading whose candidate alone
    counts as the 429s said is believed then."""
    shares: list[float] = []
    start: dict[str, float] = {}

    def check(gate: Gate) -> None:
        if gate.clock() - start.setdefault("at", gate.clock()) > 10.0:  # the first 429 (at 1.5x) comes within 3 s
            shares.append(gate.pacers["tokens"].share if gate.pacers["tokens"] else 0.0)

    run = simulate(reading="minute", window=1.0, counting="x1.5", jitter=0.02, requests=400, seed=seed, check=check)
    assert max(shares) <= 1 / 1.5 * 1.03, max(shares)
    assert run.rejections <= 2, run


@pytest.mark.parametrize("seed", [1, 2])
def test_prose_counted_by_its_characters_under_a_one_second_window(seed: int) -> None:
    """Prose counted as characters / 4 is more than the tokenizer counts (here 1.3x the prompt: 1.17x the
    reservation). Under a 1 s window the server is full between the gate's requests, and readings taken at the
    answer and at admission explain it about as badly: a belief dropped as soon as its lead over the other fell
    below 2x handed the gate the other's larger share at once (2.20% and 1.72% of requests refused with these
    seeds, 1.88% over six); kept while it leads, 0.99% (0.87% over six); with the 429s' word on the scale, 0.41%
    over six."""
    run = simulate(reading="minute", window=1.0, counting="chars", chars=1930, jitter=0.02, requests=400, seed=seed)
    assert run.counted_share >= 0.93, run
    assert run.rejected <= 0.0125, run


@pytest.mark.parametrize("seed", [1, 4])
def test_what_a_429_says_the_server_counted_settles_its_scale(seed: int) -> None:
    """The bench's prose (191-token prompts whose characters / 4 count 1.58x the tokenizer, 1.23x the reservation)
    under a 1 s window: the readings cannot tell a scale from others' use, and the tie-break's "counted as the gate
    counts" paced 91-93% of the limit with these seeds. A 429's "Requested N" is how the server counted that
    request: once candidates are held to it, 97-99% (six seeds: 95.4% with 0.95% refused before, 97.7% with 0.66%
    after)."""
    run = simulate(reading="minute", window=1.0, counting="chars", chars=1210, prompt=(191, 191), jitter=0.02,
                   requests=400, seed=seed)  # fmt: skip
    assert run.counted_share >= 0.96, run
    assert run.rejected <= 0.01, run


def test_a_429_without_requested_halves_the_burst_only_below_what_the_server_held() -> None:
    """A server whose 429s say "Limit N, Used M" but not "Requested K" (prose counted by characters, a 1 s window):
    the refused request's cost is then the believed scale's, 1.05x where the server counts 1.23x, and "Used" plus
    that came under the burst's worth: the burst was halved, and a reservation the size of the halved bucket held
    the gate at 64-89% for the minute before the burst doubles back (88.2% over the run). The server held what it
    counted: its window is no shorter than that, and the burst is not halved below it."""
    run = simulate(reading="minute", window=1.0, counting="chars", prompt=(191, 191), chars=1207, jitter=0.02,
                   requests=400, seed=3, misstated=0.0)  # fmt: skip
    assert run.answered == 400
    assert run.gate.pacers["tokens"] is not None and run.gate.pacers["tokens"].burst == 1.0
    assert run.counted_share >= 0.96, run
    assert run.rejected <= 0.01, run


@pytest.mark.parametrize(("misstated", "counting", "chars", "prompt", "jitter"), [
    (2.0, "chars", 1210, (191, 191), 0.02),  # says twice what it counts: believed, it halves the pace
    (0.45, "tiktoken", 900, (371, 371), 0.2),  # says less (the prompt without the maximum output): a 429 storm
])  # fmt: skip
def test_a_429_that_misstates_the_request_is_not_believed_against_the_readings(
    misstated: float, counting: str, chars: int, prompt: tuple[int, int], jitter: float
) -> None:
    """A server we did not write may write something else than its count in "Requested". A word that says the
    server counts less than the gate is left to the readings (believed, 11.8% of requests were refused here; now
    1.5% on average over six seeds, 0.7-2.7%, and 97.6% of the limit; 1.3% and 96.1% while a 429 whose "Used" the
    halved burst could not hold still halved it); one that the readings contradict 30 times in a row is dropped
    (believed for good, 60% of the limit)."""
    run = simulate(reading="minute", window=1.0, counting=counting, chars=chars, prompt=prompt, jitter=jitter,
                   misstated=misstated, requests=400, seed=1)  # fmt: skip
    assert run.counted_share >= 0.9, run
    assert run.rejected <= 0.03, run


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("reading", READINGS)
def test_the_limit_comes_back_when_the_other_client_stops(reading: str, window: float) -> None:
    """Another client uses 40% for the first 30 s, then stops: the gate must take the whole limit back, also where
    no headers come (there only the absence of 429s can tell; the gate probes), without a storm of 429s."""
    run = simulate(reading=reading, window=window, background=0.4, background_until=30, requests=1200, seed=3)
    assert run.answered == 1200
    assert run.gate.evidence["tokens"].share >= 0.95, run
    assert run.utilisation >= 0.85, run
    assert run.rejected <= 0.005, run


@pytest.mark.parametrize("seed", [3, 5])
def test_a_fixed_window_whose_headers_state_its_own_room_is_believed_where_its_ends_are_regular(seed: int) -> None:
    """Fixed 5 s windows whose headers say the window's own room (``reading="bucket"``): read at the answer, the
    end stays put and jumps by 5 s; read at admission, it moves by each request's latency and looks like a minute's
    window. The spreads of the two are taken over windows of different lengths, and the belief went from one to
    the other: 31-77% of the limit over six seeds (these two: 48% and 31%). The one that alone reads the ends as
    regular is believed: 84.7-86.4%."""
    run = simulate(reading="bucket", window=5.0, enforcement="fixed", requests=400, seed=seed)
    assert run.answered == 400
    assert run.utilisation >= 0.83, run
    assert run.rejected <= 0.0075, run


@pytest.mark.parametrize(("window", "share", "refused"), [(5.0, 0.84, 0.005), (1.0, 0.60, 0.02)])
def test_a_fixed_window_shorter_than_a_minute_is_read_at_its_own_length(
    window: float, share: float, refused: float
) -> None:
    """A server that counts a minute's limit in fixed windows of 5 s or 1 s (``enforcement="fixed"``: remaining =
    the limit less this window's count, reset = the time to its end). Read as a minute's window, a 5 s window's
    count looked like a fraction of a minute's and the gate believed the server counted a third of its estimate:
    80.5% of the limit, 6.5% refused; a 1 s window was read as a bucket: 57% with 14-17% refused. Its end jumps by
    the window's length: read as such, and with the gate sending no more in a window than it holds (the bucket's
    pace let a request in where the window was full, as answers of requests sent in an earlier window give nothing
    back in this one), 5 s: 83-88% with 0-0.5% refused, 1 s: 61-63% with 0.7-2.4% (six seeds). A 1 s window holds
    two of the job's reservations (671 tokens of 1,500) and their answers give back after it ended: about 60% of the
    limit, as the server counts what the answers used, is the most any client gets."""
    run = simulate(reading="minute", window=window, enforcement="fixed", requests=400, seed=1)
    seen = [h.window[1] for h in run.gate.evidence["tokens"].hypotheses if h.window is not None]
    assert window in seen
    assert run.answered == 400
    assert run.utilisation >= share, run
    assert run.rejected <= refused, run


@pytest.mark.parametrize("reading", ["minute", "bucket"])
def test_a_sliding_log_is_read_as_one_and_the_gate_keeps_its_own(reading: str) -> None:
    """A server that counts a minute's limit over the last 5 s, each request leaving the log whole 5 s after it came
    (``enforcement="sliding"``: remaining = the limit, or the log's room, less its count; reset = until the newest
    leaves). Read as a bucket or a minute's window, the gate believed the server counted less than it does and
    its bucket's pace overran the log: 84% of the limit with 19% of requests refused. Recognised (the reset, or the
    end less the gate's last admission, stays put while the count moves), the readings are samples of the log's
    count against the gate's own requests in it, and the gate admits a request only where its own log (less what
    answers gave back) leaves room for it: 86.6-87.1% (six seeds; requests still on their way hold their whole
    reservation in the log, so about 90% is the most), nothing refused."""
    run = simulate(reading=reading, window=5.0, enforcement="sliding", requests=400, seed=1)
    assert run.gate.evidence["tokens"].sliding == 5.0
    assert run.answered == 400
    assert run.utilisation >= 0.85, run
    assert run.rejected <= 0.005, run


@pytest.mark.parametrize(("reading", "seconds"), [("minute", 8.0), ("bucket", 8.0), ("window", 12.0), ("none", 15.0)])
def test_how_long_the_limit_takes_to_come_back_is_what_the_readme_says(reading: str, seconds: float) -> None:
    """Another client uses 40% for 30 s and stops (5 s window): the seconds until the server counts 90% of its
    limit again over 5 s (5 s at the soonest). The README's "Where it is weakest" gives these figures (with
    continuous headers 5-11 s over six seeds, 6.3 s median; 10-13 s while a reading held through the change
    believed a server counting less with the other client still there; window headers 9-10 s, 16-19 s while a
    window was sampled from its start; without headers 12 s here and at most 15 s wherever the stop falls in a probe
    cycle, ~42 s here while a probe waited 30 s, ~108 s a minute); a change that makes them worse fails here."""
    run = simulate(reading=reading, window=5.0, background=0.4, background_until=30, requests=1200, seed=3)
    back = run.back_to(0.9, since=30.0)
    assert back is not None and back <= seconds, back


@pytest.mark.parametrize("clients", [1, 2])
def test_window_readings_take_the_429s_word_for_the_servers_scale(clients: int) -> None:
    """Headers counting since the clock minute began, a server counting 2x (one process) or 1.5x (two on the gate
    file) under a 1 s window. At a steady pace the samples cannot tell a scale from others' use, and the fit took
    the excess as another client's at the gate's own scale: a share 10% too high, a request of a full second's
    bucket sent into it, 19-29% of the requests refused (one process at 2x, three seeds) and 7-10% (two at 1.5x).
    The 429s' "Requested" says how the server counts a request at admission, and a server that counts more there
    counts at least as much after the answer: as much of the excess as that explains is the server's scale."""
    counting, each, share, refused = ("x2", 400, 0.8, 0.06) if clients == 1 else ("x1.5", 150, 0.9, 0.04)
    run = simulate(reading="window", window=1.0, counting=counting, jitter=0.02, requests=each, clients=clients,
                   stagger=10.0, seed=1, shared=clients > 1)  # fmt: skip
    assert run.answered == clients * each
    assert run.counted_share >= share, run
    assert run.rejected <= refused, run


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_window_readings_take_the_limit_back_from_a_client_that_stops_where_the_server_counts_less(seed: int) -> None:
    """Headers counting since the clock minute began, a server counting characters / 4 of short words (0.67 of the
    gate's net use), another client using 40% for 30 s. While it is there the fit reads the excess as its use, at
    the gate's own scale; once it stops, the scale has to be learnt, and samples of its time held the fit near 1
    for 18-20 s. A window's growth far below what the fit expects, where it has others use a fifth of the limit or
    more, says their use changed: the samples from before count for a fifth (as ``CHANGE_KEEP`` does for the
    candidates). 90% of the limit is back within 11-13 s."""
    run = simulate(reading="window", window=5.0, background=0.4, background_until=30, requests=1200, seed=seed,
                   counting="chars")  # fmt: skip
    back = run.back_to(0.9, since=30.0)
    assert back is not None and back <= 14.0, back


@pytest.mark.parametrize("seed", [2, 7, 11])
def test_without_headers_two_429s_tell_what_others_use(seed: int) -> None:
    """No headers and a one-second window: the "Limit N, Used M" of two 429s give the other client's use, so the
    gate settles on what is left after a handful of 429s at the start, and the probes that follow (8 s without a
    429, then the estimate fades within a few seconds) each cost one 429 and put the estimate back: the share the
    gate paces to is what the other client leaves most of the time, and the probes cost it nothing (the gate holds
    99% of what is left; 97.7% while a probe waited 30 s and twice as long after each, up to 2 minutes)."""
    shares: list[float] = []
    run = simulate(
        reading="none",
        window=1.0,
        background=0.4,
        requests=1200,
        seed=seed,
        check=lambda gate: shares.append(gate.evidence["tokens"].share),
    )
    assert statistics.median(shares) == pytest.approx(0.6, abs=0.03)
    assert run.utilisation / 0.6 >= 0.97, run
    assert run.rejections <= 5 + run.seconds / PROBE_EVERY, run


@pytest.mark.parametrize("window", [5.0, 1.0])
def test_without_headers_the_limit_is_back_within_15_s(window: float) -> None:
    """Without headers, when another client using 40% stops, only the absence of 429s tells. Wherever in the gate's
    probe cycle it stops, the server counts 90% of its limit again (over 5 s) within 15 s: the stop moved over
    three seconds at a time through 42 s of probes. With a probe 30 s after the last 429 and twice as long after
    each that found the estimate right (up to 2 minutes), 14-68 s over these stops, and 88 s for one 200 s in."""
    backs = []
    for until in range(30, 72, 3):
        run = simulate(reading="none", window=window, background=0.4, background_until=until, requests=600, seed=3)
        backs.append(run.back_to(0.9, since=until))
    assert all(back is not None and back <= 15.5 for back in backs), backs


@pytest.mark.parametrize(("counting", "share", "refused"), [("x1.5", 0.95, 0.01), ("x2", 0.84, 0.025)])
@pytest.mark.parametrize("clients", [1, 2])
def test_without_headers_the_429s_say_how_the_server_counts(
    clients: int, counting: str, share: float, refused: float
) -> None:
    """No headers and a one-second window, a server counting 1.5x or 2x the gate's estimate: each 429's "Limit N,
    Used M" shows a server nearly empty (a second's bucket) and the 429s kept coming (x1.5: 93% with 12% refused;
    x2: 71% with 41%, one process; two on the gate file 90% / 17% and 68% / 31%): only the rate's cuts held the
    gate. Their "Requested K" over the gate's reservation is how the server counts a request: the gate paces to
    it (a word that it counts less is not taken: without headers only 429s would say it was wrong)."""
    each = 400 if clients == 1 else 150
    run = simulate(reading="none", window=1.0, counting=counting, requests=each, clients=clients, stagger=10.0,
                   seed=1, shared=clients > 1)  # fmt: skip
    assert run.answered == clients * each
    assert run.counted_share >= share, run
    assert run.rejected <= refused, run


def test_without_headers_runners_on_one_host_hear_each_others_refusals() -> None:
    """No headers, a 1 s window, prose counted by characters and never given back, four processes on the gate file:
    without headers only the absence of 429s says that others' use has gone, so each process lets its estimate
    fade after a quiet spell (a probe). Each counted only its own 429s, so while one had just been refused the
    others probed into the same full server: 15.4% of the requests refused (four seeds: 13.9-17.2%). A peer's
    refusal (the runners' bucket armed anew) restarts the quiet spell and ends a probe under way, as the process's
    own would: 11.5-13.3% (each seed's run moves a point or two with any change to the gate: their mean is held)."""
    prose = {"counting": "chars-no-refund", "prompt": (191, 191), "chars": 1207, "jitter": 0.02}
    runs = [
        simulate(reading="none", window=1.0, requests=150, clients=4, stagger=10.0, seed=seed, shared=True, **prose)
        for seed in (1, 2, 3, 4)
    ]
    assert all(run.answered == 4 * 150 for run in runs)
    assert statistics.fmean(run.rejected for run in runs) <= 0.13, runs
    assert statistics.fmean(run.counted_share for run in runs) >= 0.95, runs


@pytest.mark.parametrize("seed", [4, 5])
def test_without_headers_a_probe_that_went_far_lifts_the_estimate_it_puts_back(seed: int) -> None:
    """No headers, a 1 s window, prose counted by characters and never given back, one process: the first two 429s
    came while the gate was paused at the start, answers giving back what the server never gives back, and their
    balance read as another client using 70% of the limit. Each probe ended in a 429 that put that estimate back,
    so it held the gate at 64% and 72% of the limit for the whole run. The probe's 429 now also says the server
    held what the gate used over the seconds before it: the estimate put back leaves the gate most of that."""
    run = simulate(reading="none", window=1.0, counting="chars-no-refund", prompt=(191, 191), chars=1207,
                   jitter=0.02, seed=seed)  # fmt: skip
    assert run.answered == 400
    assert run.counted_share >= 0.86, run
    assert run.rejections <= 5 + run.seconds / PROBE_EVERY, run


@pytest.mark.parametrize("window", [60.0, 5.0])
@pytest.mark.parametrize("clients", [2, 4])
def test_runners_on_one_key_do_not_starve_each_other(clients: int, window: float) -> None:
    """Runner processes on one key, each with a job of its own, started 10 s apart, that know nothing of each other:
    each reads the others as other use. None may crawl once another stops: the last finishes within 1.3x the time
    the whole work takes at the limit (plus the stagger). Gates that cannot see each other collide now and then
    (four under a 5 s window: 4.0% refused over six seeds, at most 5.3%; 3.1% and 4.1% before a server with room
    made beliefs in others' use fade twice as fast, ``UNTESTED_FADE``), which is why runners on one key share one
    gate."""
    each = 300 if clients == 2 else 200
    run = simulate(reading="minute", window=window, requests=each, clients=clients, stagger=10.0, seed=1)
    assert run.answered == clients * each
    at_the_limit = clients * each * 441 / (90_000 / 60 * 0.98) + 10.0 * (clients - 1)
    assert max(run.finished) <= 1.3 * at_the_limit, run.finished
    assert run.rejected <= 0.06, run


@pytest.mark.parametrize("reading", ["minute", "none"])
@pytest.mark.parametrize("window", [60.0, 5.0])
@pytest.mark.parametrize("clients", [2, 4])
def test_runners_on_one_host_share_the_limit_through_the_gate_file(clients: int, window: float, reading: str) -> None:
    """The same runners, sharing the limit through one gate file (``runner.store.peers``) as processes on one host
    do by default: together they use the limit (the runners' share of it is split evenly among those that want
    more), nothing is refused, and none takes more than 1.2x the wall time of the quickest (each its own job of the
    same size, started 10 s apart). Four held 92-95% while each replayed the others' use as their steady rate; with
    the others' events, 97%."""
    each = 300 if clients == 2 else 200
    run = simulate(reading=reading, window=window, requests=each, clients=clients, stagger=10.0, seed=1, shared=True)
    assert run.answered == clients * each
    assert run.counted_share >= 0.97, run
    assert run.rejected <= 0.005, run
    walls = [finished - 10.0 * i for i, finished in enumerate(run.finished)]
    assert max(walls) <= 1.2 * min(walls), walls


@pytest.mark.parametrize("window", [60.0, 5.0, 1.0])
def test_runners_on_one_host_learn_together_how_the_server_counts(window: float) -> None:
    """Two processes on the gate file under a server counting characters / 4 of short words (0.78x at admission,
    refunds one for one). Each replays the other's admissions and refunds at the times the other wrote them, and
    judges a reading once the other has spoken past it: 96.7% of the limit. Replayed as a steady rate, the other's
    requests blurred every reading and each believed a scale nearer the gate's own: 92-94%, and 90-91% with real
    processes against the simulator."""
    run = simulate(reading="minute", window=window, counting="chars", jitter=0.02, requests=300, clients=2,
                   stagger=10.0, seed=1, shared=True)  # fmt: skip
    assert run.answered == 600
    assert run.counted_share >= 0.96, run
    assert run.rejected <= 0.005, run


@pytest.mark.parametrize("window", [5.0, 1.0])
@pytest.mark.parametrize("clients", [2, 4])
def test_runners_on_one_host_read_a_clock_minutes_count_together(clients: int, window: float) -> None:
    """Headers that count since the clock minute began (``window``) under a server counting characters / 4 of short
    words, processes on the gate file started 10 s apart. A window's count is compared with what the gate and its
    peers used since it began: their use as the events they wrote where those cover the span, else the rates they
    told, each from when it was told. Taken as the latest rate times the whole minute so far, a peer that had just
    started (or changed its pace) put tens of thousands of tokens into one sample, the fit of the server's scale
    carried them for a minute, and one process believed 0.93 where the other believed 0.66: 76-89% of the limit
    for two, 76-81% for four."""
    each = 150
    run = simulate(reading="window", window=window, counting="chars", requests=each, clients=clients, stagger=10.0,
                   seed=1, shared=True)  # fmt: skip
    assert run.answered == clients * each
    assert run.counted_share >= 0.92, run
    assert run.rejected <= 0.005, run


@pytest.mark.parametrize("clients", [2, 4])
def test_a_process_the_runners_bucket_holds_back_still_gets_its_turn(clients: int) -> None:
    """Prose counted by characters, clock-minute headers, a 5 s window, processes on the gate file: a 429 armed the
    runners' bucket, and one process believed on that 429's word that the runners may use 0.32 of the limit. The
    bucket paces them all at the least view, and whoever asked first when it held a request took it: the other
    process did each time, so the one with the wrong belief sent nothing for 24 s, got no readings to correct it,
    and the runners held 75% of the limit (two) and 80% (four). The one that has waited longest takes first."""
    each = 150
    run = simulate(reading="window", window=5.0, counting="chars", prompt=(191, 191), chars=1207, jitter=0.02,
                   requests=each, clients=clients, stagger=10.0, seed=9, shared=True)  # fmt: skip
    assert run.answered == clients * each
    assert run.counted_share >= 0.92, run
    assert run.rejected <= 0.005, run
    walls = [finished - 10.0 * i for i, finished in enumerate(run.finished)]
    assert max(walls) <= 1.25 * min(walls), walls


@pytest.mark.parametrize("clients", [2, 4])
def test_runners_on_one_host_keep_their_bookkeeping_where_the_server_gives_nothing_back(clients: int) -> None:
    """Prose counted by characters and never given back, a 1 s window, processes on the gate file. Once a refusal
    armed the runners' bucket, what a process gave back went up to the bucket's capacity only, as a server's refund
    into a full bucket is lost; but this server gives nothing back, so the gate's refund is only its bookkeeping
    (the share is set on what answers use): lost, the runners held 86-88% of the limit (two) and 82-88% (four),
    where one process alone holds 97%."""
    run = simulate(reading="minute", window=1.0, counting="chars-no-refund", prompt=(191, 191), chars=1207,
                   jitter=0.02, requests=150, clients=clients, stagger=10.0, seed=1, shared=True)  # fmt: skip
    assert run.answered == clients * 150
    assert run.counted_share >= 0.91, run
    assert run.rejected <= 0.015, run


@pytest.mark.parametrize("clients", [2, 4])
def test_runners_on_one_host_keep_their_requests_apart_under_a_one_second_window(clients: int) -> None:
    """A server that counts 1.5x the gate's estimate over a one-second window: a request is two thirds of its
    bucket. Each process paces its part on its own; sent at the same moment, two requests are refused. After the
    first refusal the runners' bucket in the gate file keeps their admissions apart: 94-95% of the limit with
    0.7-1.8% refused for two (one process alone: 94-96%, 1.0-1.3%). Each process pacing its part alone had 17-20%
    refused (two) and 39% (four), at 79%."""
    each = 300 if clients == 2 else 200
    run = simulate(reading="minute", window=1.0, counting="x1.5", jitter=0.02, requests=each, clients=clients,
                   stagger=5.0, seed=1, shared=True)  # fmt: skip
    assert run.answered == clients * each
    assert run.counted_share >= 0.9, run
    assert run.rejected <= 0.025, run


def _holds_its_invariants(gate: Gate) -> None:
    """What docs/pacing.md promises of a gate's state at every moment."""
    for name, pacer in gate.pacers.items():
        if pacer is None:
            continue
        evidence = gate.evidence[name]
        assert FACTOR_FLOOR <= pacer.factor <= 1.0, (name, pacer.factor)
        assert MIN_BURST <= pacer.burst <= pacer.burst_max, (name, pacer.burst)
        assert START_SHARE <= pacer.start_share <= 1.0, (name, pacer.start_share)
        assert MIN_SHARE <= evidence.share <= MAX_SHARE, (name, evidence.share)
        assert MIN_SHARE <= pacer.share <= evidence.share + 1e-9, (name, pacer.share, evidence.share)
        assert pacer.rate <= pacer.limit / 60.0 * MAX_SHARE, (name, pacer.rate)
        assert pacer.mirror <= pacer.mirror_capacity + 1e-6, (name, pacer.mirror, pacer.mirror_capacity)
        assert pacer.transit_seconds == TRANSIT_SECONDS or TRANSIT_FLOOR <= pacer.transit_seconds <= TRANSIT_CEILING
        assert 0.0 <= pacer.beyond <= evidence.largest, (name, pacer.beyond, evidence.largest)
        assert pacer.level <= max(pacer.capacity, pacer.capacity / pacer.part) + pacer.beyond + 1e-6, (
            name,
            pacer.level,
        )
        assert evidence.other >= 0.0, (name, evidence.other)
        # a header reading held on the spreads explains the readings better than the other (or alone sees a fixed
        # window's end stay put or move on by whole windows), and a 429's word never stands against it
        held = evidence.held
        if held is not None:
            other = next(h for h in evidence.hypotheses if h is not held)
            regular = held.regular(evidence.seen) and not other.regular(evidence.seen)
            assert held.spread < other.spread or regular, (name, held.name, held.spread, other.spread)
            assert evidence.preferred in (None, held), (name, held.name)
        for h in evidence.hypotheses:
            scale, _ = h.fit()
            assert MIN_SCALE <= scale <= MAX_SCALE, (name, h.name, scale)
            # the believed candidate refined between the grid's steps stays within half a step of it
            c = h.candidates
            grid = float(c.admit[c.chosen])
            assert abs(c.refined - grid) <= max(np.diff(SCALES)) / 2 + 1e-9, (name, c.refined, grid)
            assert grid < 1.0 or c.refined == grid, (name, c.refined, grid)
            # once 429s said how the server counts a request, the believed candidate counts it about so
            told = c.told_band()
            if told is not None and c.readings and (np.abs(c.log_admit - told[0]) <= told[1] + 1e-9).any():
                mean, band = told
                assert abs(math.log(grid) - mean) <= band + 1e-9, (name, grid, math.exp(mean), band)


@pytest.mark.parametrize(
    "setting",
    [
        {"reading": "minute", "window": 1.0, "counting": "x2"},  # a storm of 429s: cuts, halved bursts
        {"reading": "minute", "window": 60.0, "counting": "x0.6", "header_time": "sent"},  # counts less: probes
        {"reading": "bucket", "window": 5.0, "background": 0.4, "background_until": 20},
        {"reading": "window", "window": 5.0, "counting": "chars"},
        {"reading": "none", "window": 1.0, "background": 0.4, "jitter": 0.2},
        {"reading": "minute", "window": 5.0, "clients": 2, "stagger": 5.0},  # two processes on one gate file
        {"reading": "minute", "window": 1.0, "counting": "x1.5", "clients": 2, "stagger": 5.0},  # and their bucket
        {"reading": "minute", "window": 5.0, "enforcement": "fixed", "counting": "chars"},  # a window of 5 s
        {"reading": "bucket", "window": 1.0, "enforcement": "sliding", "counting": "chars"},  # a log of 1 s
        {"reading": "none", "window": 1.0, "counting": "x2", "background": 0.4},  # the 429s' scale, and probes
        # peers' use in a window, and a change of others' use
        {
            "reading": "window",
            "window": 5.0,
            "counting": "chars",
            "clients": 2,
            "background": 0.4,
            "background_until": 20,
        },
    ],
)
def test_the_gate_keeps_its_invariants_all_along(setting: dict[str, Any]) -> None:
    """The bounds docs/pacing.md states hold after every event of a run, in the runs that push them hardest."""
    several = setting.get("clients", 1) > 1
    run = simulate(requests=200, seed=2, check=_holds_its_invariants, shared=several, **setting)
    assert run.answered == 200 * setting.get("clients", 1)
