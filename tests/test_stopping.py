"""Why a run stops early (runner.stopping.Stops): the first reason wins, except a full disk; abort cancels."""

from __future__ import annotations

from pathlib import Path

import anyio

from runner.errors import BudgetReached, DeadlineReached, DiskFull, Interrupted, TakenOver
from runner.stopping import Stops
from runner.store import Store


def test_the_first_reason_is_the_one_the_run_reports_and_each_wakes_the_loop() -> None:
    woken: list[str] = []
    stops = Stops("re-run to resume", deadline=100.0, on_stop=lambda: woken.append("woken"))
    assert not stops.stopped and not stops.past_deadline(99.9)
    stops.set(BudgetReached("--max-spend"))
    stops.interrupt("SIGTERM")
    assert isinstance(stops.reason, BudgetReached) and woken == ["woken", "woken"]
    assert stops.past_deadline(100.0) and isinstance(stops.reason, BudgetReached)


def test_an_interrupt_and_the_deadline_say_what_the_user_does_next() -> None:
    stops = Stops("submitted batches keep running on the server: re-run the same command to collect them")
    stops.interrupt("SIGINT")
    assert isinstance(stops.reason, Interrupted)
    assert str(stops.reason) == ("SIGINT: stopped; submitted batches keep running on the server: re-run the same "
                                 "command to collect them")  # fmt: skip
    late = Stops("re-run the same command to resume", deadline=10.0)
    assert late.past_deadline(10.0) and isinstance(late.reason, DeadlineReached)
    assert str(late.reason) == "deadline reached with work still to do; re-run the same command to resume"


def test_a_full_disk_overrules_any_other_reason() -> None:
    stops = Stops("re-run")
    stops.set(BudgetReached("--max-spend"))
    stops.overrule(DiskFull("cannot write"))
    assert isinstance(stops.reason, DiskFull)
    stops.overrule(DiskFull("again"))
    assert str(stops.reason) == "cannot write"  # the first full-disk message stays


def test_abort_cancels_the_work_under_way() -> None:
    async def main() -> tuple[bool, str]:
        stops = Stops("re-run")
        with anyio.CancelScope() as stops.scope:
            stops.abort()
            await anyio.sleep(3600)  # cancelled here, at once
        return stops.scope.cancelled_caught, str(stops.reason)

    caught, reason = anyio.run(main)
    assert caught and reason.startswith("interrupted twice: stopped")


def test_a_run_taken_over_by_another_process_stops_and_names_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "runner.db")
    job = tmp_path / "job.jsonl"
    job.write_text("")
    mine = store.runs.acquire("job", str(job))
    stops = Stops("re-run")
    assert stops.still_owned(store, "job", mine, lease_seconds=60)
    store.runs.release("job", mine, None)
    theirs = store.runs.acquire("job", str(job))
    assert not stops.still_owned(store, "job", mine, lease_seconds=60)
    assert isinstance(stops.reason, TakenOver) and theirs in str(stops.reason)
