"""Go durations (x-ratelimit-reset, --deadline): parsed and written back."""

from __future__ import annotations

import pytest

from runner.durations import format_go, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1), ("6m0s", 360), ("120ms", 0.12), ("19m45.394s", 1185.394), ("2h", 7200), ("1h30m", 5400), ("45", 45)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_go_format_round_trips() -> None:
    for seconds in (0.002, 0.913, 1.146, 360, 1185.394):
        assert parse_duration(format_go(seconds)) == pytest.approx(seconds)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
