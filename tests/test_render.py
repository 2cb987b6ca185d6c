"""The text people read (runner.render), from the typed reports: what each line says, and when it is left out."""

from __future__ import annotations

from decimal import Decimal

from runner import render
from runner.limits import Limits
from runner.planner import plan
from runner.reports import Batches, BatchInfo, Failure, Owner, Spend, SpendRow, Status, Wave
from runner.workload import synthetic

COUNTS = {"pending": 2, "in_flight": 1, "batched": 0, "succeeded": 7, "failed": 1, "cancelled": 0}


def test_a_run_s_summary_says_why_it_stopped_or_else_what_failed() -> None:
    stopped = render.run_summary("job", COUNTS, 1_234_000_000, ["a note", "a note"], "deadline reached",
                                 [("r1", "400 bad")], "x.db")  # fmt: skip
    assert stopped == [
        "run job: 7 succeeded, 1 failed, 3 pending of 11; spent $0.001234",
        "note: a note",  # said once
        "stopped: deadline reached",
    ]
    failed = render.run_summary("job", COUNTS, 0, [], None, [("r1", "400 bad")], "x.db")
    assert failed[1:] == ["  failed r1: 400 bad", "see every failure: runner results --db x.db --name job"]


def status(**kw: object) -> Status:
    fields: dict[str, object] = dict(run="job", input="job.jsonl", total=11, states=COUNTS, spent=Decimal("0.5"),
                                     working=False, owner=None, last_stop=None, tier="tier-1", mode="sync", plan=None,
                                     batches={}, wave_plan=(), first_failures=())  # fmt: skip
    return Status(**{**fields, **kw})  # type: ignore[arg-type]


def test_a_status_names_the_process_on_the_run_and_what_happens_next() -> None:
    assert render.status_lines(status())[:2] == [
        "run job (job.jsonl): 11 requests: pending 2, in_flight 1, succeeded 7, failed 1",
        "spent $0.5",
    ]
    alive = render.status_lines(status(owner=Owner("host:12:abc", "alive")))[1]
    assert alive == "spent $0.5; a process is working on it (host:12:abc)"
    gone = render.status_lines(status(owner=Owner("host:12:abc", "gone")))[1]
    assert gone.endswith("its last process (host:12:abc) is gone: the next run takes over")
    waves = (Wave("gpt-4.1-mini", 2, 900, 500, 2), Wave("gpt-4.1-nano", 0, 0, None, None))
    lines = render.status_lines(status(wave_plan=waves, first_failures=(Failure("r1", "400 bad"),)))
    assert "wave plan gpt-4.1-mini: 2 pending, ~900 tokens = 2 more wave(s) under the queue limit of 500" in lines
    assert not any("gpt-4.1-nano" in line for line in lines) and lines[-1] == "  failed r1: 400 bad"


def test_a_batch_list_and_a_spend_report() -> None:
    assert render.batches_lines(Batches("job", (), ())) == ["no batches and nothing pending"]
    one = BatchInfo(1, "gpt-4.1-mini", 10, "submitted", "in_progress", "batch_1", {"completed": 4}, None, 30)
    (line,) = render.batches_lines(Batches("job", (one,), ()))
    assert line.split() == ["chunk", "1", "gpt-4.1-mini", "10", "requests", "submitted", "in_progress", "done", "4",
                            "failed", "0", "age", "30s", "batch_1"]  # fmt: skip
    row = SpendRow("job", "gpt-4.1-mini", "batch", 10, 5_000, 1_000, 2_000, Decimal("0.0015"))
    lines = render.spend_lines(Spend(Decimal("0.0015"), (row,)))
    assert "5,000 in (1,000 cached)" in lines[0] and lines[0].endswith("$0.0015") and lines[1] == "total $0.0015"


def test_a_plan_marks_the_tier_you_are_on_the_cheapest_that_meets_the_deadline_and_one_tier_up(
    limits: Limits,
) -> None:
    lines = render.plan_lines(plan(synthetic(limits, "gpt-4.1-mini", 10_000, 500, 200), limits, deadline=3_600,
                                   current="tier-1"))  # fmt: skip
    assert lines[0] == "job: 10,000 x gpt-4.1-mini: 5,000,000 prompt tokens, 2,000,000 output tokens expected"
    assert "cost: sync $5.20 · batch $2.60" in lines[2]  # batch at half the price
    (mine,) = [line for line in lines if line.startswith("tier-1 (you)")]
    assert "TPM ok*" in mine  # bound by tokens, meets the deadline, the cheapest that does
    assert "* cheapest that meets the deadline: tier-1, sync, $5.20" in lines
    assert any(line.startswith("one tier up: tier-1 -> tier-2") for line in lines)
