"""The crash-and-fault harness, short: a few seeded trials per mode, each killed at random moments and at named
crash points under 7% injected faults; nothing may be lost, duplicated, or paid twice beyond the in-flight bound."""

from __future__ import annotations

import re

import pytest

from bench import crash


@pytest.mark.slow
def test_kill_9_under_faults_loses_nothing_and_pays_twice_only_what_was_in_flight(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = crash.main(["--trials", "1", "--requests", "60", "--mode", "both", "--seed", "7"])
    out = capsys.readouterr().out
    assert code == 0, out
    summaries = [line for line in out.splitlines() if re.match(r"(sync|batch): 1 trials?", line)]
    assert len(summaries) == 2, out
    for line in summaries:
        assert "lost 0, duplicated 0, batches created twice 0" in line and "0 broken" in line, line
    assert re.search(r"batch: .*paid twice 0 \(bound 0\), spend diff \$0;", out), out
    kills = sum(int(n) for n in re.findall(r"(\d+) kills \(", out))
    assert kills >= 2, out  # the trials did kill runs part way
