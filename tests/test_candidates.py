"""How the candidates (runner.candidates) find the way a server counts the gate's use, read alone. The server here is
a small continuous bucket written in the test: it counts each unit the gate reserves as ``admit`` of its own at
admission, gives back what an answer did not use one for one, and refills at the limit's rate. Each second it
reads out what it still counts, and the candidates judge that reading against the one before."""

from __future__ import annotations

import pytest

from runner.candidates import Candidates

RATE = 1500.0  # the limit per second: 90,000 TPM
RESERVED, BACK = 671.0, 228.0  # a request's reservation (prompt + max output) and what its answer gives back


def judged(admit: float, seconds: int = 30) -> Candidates:
    """Candidates that judged ``seconds`` readings of a server counting ``admit`` per unit reserved, sent at 97% of
    what it lets through from a backlog of 4 seconds of the limit (so the server's bucket is never full, and every
    reading says all it can), answered after 0.3-0.7 s."""
    every = net(admit) * (RESERVED - BACK) / (0.97 * RATE)
    sent = [n * every for n in range(int(seconds / every) + 1)]
    # answers give back 100 or 356 (228 on average) after 0.3-0.7 s: the ways of refunds then read differently
    answers = [(t + 0.3 + 0.1 * (n % 5), -(100.0 if n % 2 else 356.0)) for n, t in enumerate(sent)]
    timeline = sorted([(t, RESERVED) for t in sent] + answers)
    candidates = Candidates()
    deficit, t, i = 4 * RATE, 0.0, 0
    for second in range(1, seconds + 1):
        before, events = deficit, []
        while i < len(timeline) and timeline[i][0] <= second:
            when, amount = timeline[i]
            deficit = max(0.0, deficit - (when - t) * RATE)
            deficit = deficit + admit * amount if amount > 0 else max(0.0, deficit + amount)
            t, i = when, i + 1
            events.append((when, amount))
        deficit, t = max(0.0, deficit - (second - t) * RATE), float(second)
        candidates.judge(before, events, second - 1.0, float(second), RATE, 0.0, deficit, BACK / RESERVED)
    return candidates


def net(admit: float) -> float:
    """What the server counts of each unit the gate paces (its reservations less what answers give back)."""
    return (admit * RESERVED - BACK) / (RESERVED - BACK)


def pace(candidates: Candidates) -> float:
    """The share of the limit the believed candidate lets the gate pace, in the gate's own count."""
    scale, other = candidates.best
    return (1.0 - other) / scale


@pytest.mark.parametrize("admit", [0.8137, 0.6, 0.7])
def test_a_server_counting_less_than_the_gate_is_paced_to_its_limit_between_the_grid_s_steps(admit: float) -> None:
    """Characters / 4 of the bench's job: each reserved unit counts as 0.8137 at admission, between the grid's
    0.8 and 0.825. A third of each reservation comes back, so a step of the grid is 3.5% of the pace: the believed
    scale is refined between the steps, and the pace is within half a percent of the server's limit (a lower scale
    with a little use by others predicts the same readings of a steady stream, and the same pace)."""
    candidates = judged(admit)
    assert pace(candidates) == pytest.approx(1.0 / net(admit), rel=0.005)
    grid = float(candidates.admit[candidates.chosen])
    assert abs(candidates.admission - grid) <= 0.0125


@pytest.mark.parametrize("admit", [1.37, 2.25])
def test_a_server_counting_more_than_the_gate_keeps_the_grid_s_step(admit: float) -> None:
    """There the tie-break leans toward the scale that counts less (the gate sends more, and a 429 corrects it);
    a refinement would lean further the same way."""
    candidates = judged(admit)
    grid = float(candidates.admit[candidates.chosen])
    assert candidates.admission == grid
    assert abs(grid - admit) <= 0.1  # a step of the grid near the truth (steps of 0.025 below 2, 0.1 above)
