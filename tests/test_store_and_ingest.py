"""The store's state machine and ownership; ingest of good and bad job files."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from sqlite_utils import Database

from runner.errors import ConfigError, InputError, RunLocked, StateConflict
from runner.jobfile import ingest
from runner.limits import Limits
from runner.parsers import CHUNK_LINES, PARALLEL_FROM
from runner.store import Move, Outcome, Store
from runner.store.migrations import migrations
from runner.tokens import admission_tokens

from .conftest import chat_line, write_jsonl


def snapshot(store: Store) -> list[tuple[object, ...]]:
    return store.conn.execute("SELECT custom_id, state, body_hash FROM requests ORDER BY id").fetchall()


def test_ingest_then_resume_adds_only_appended_lines(tmp_path: Path, store: Store, limits: Limits) -> None:
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(5)])
    store.runs.acquire("job", str(path))
    assert ingest(store, "job", path, limits).added == 5
    assert ingest(store, "job", path, limits).added == 0  # same file again: nothing new
    write_jsonl(path, [chat_line("r5"), chat_line("r6")], mode="a")
    report = ingest(store, "job", path, limits)
    assert (report.added, report.lines) == (2, 2)  # only the appended lines were read
    assert store.requests.counts("job")["pending"] == 7


def test_rewritten_file_is_checked_line_by_line(tmp_path: Path, store: Store, limits: Limits) -> None:
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(3)])
    store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    write_jsonl(path, [chat_line("new"), chat_line("r0"), chat_line("r1"), chat_line("r2")])  # prepended
    assert ingest(store, "job", path, limits).added == 1


BAD_LINES = [
    ('{"custom_id": "a", "body": {', "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"body": {"model": "gpt-4.1-mini", "messages": []}}', "missing custom_id"),
    ('{"custom_id": "x", "body": {"model": "gpt-9", "messages": []}}', "unknown model 'gpt-9'"),
    ('{"custom_id": "x", "body": {"messages": []}}', "no model"),
    ('{"custom_id": "x", "url": "/v1/images", "body": {"model": "gpt-4.1-mini"}}', "unsupported url"),
    ('{"custom_id": "x", "body": {"model": "gpt-4.1-mini", "messages": [], "stream": true}}', "stream"),
    (
        '{"custom_id": "x", "url": "/v1/embeddings", "body": {"model": "gpt-4.1-mini", "input": "a"}}',
        "does not serve /v1/embeddings",
    ),
]


@pytest.mark.parametrize(("bad", "problem"), BAD_LINES)
def test_bad_line_is_named_and_nothing_of_the_pass_is_kept(
    tmp_path: Path, store: Store, limits: Limits, bad: str, problem: str
) -> None:
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("ok1")])
    store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    before = snapshot(store)
    with path.open("a") as f:
        f.write(json.dumps(chat_line("ok2")) + "\n" + bad + "\n")
    with pytest.raises(InputError) as info:
        ingest(store, "job", path, limits)
    assert info.value.line == 3
    assert problem in str(info.value)
    assert str(info.value).startswith(f"{path}:3: ")
    assert snapshot(store) == before  # ok2 was not half-added


@pytest.mark.slow  # child processes parse a 13 MB input: seconds of CPU
def test_a_big_input_parsed_in_child_processes_is_stored_as_parsed_here(tmp_path: Path, limits: Limits) -> None:
    """Chunks come back from several processes in file order: the same rows, lines and refusals, and the first of
    two bad lines in different chunks is the one named."""
    lines = [chat_line(f"r{i}", f"text {i} " * (i % 7)) for i in range(3 * CHUNK_LINES + 17)]
    lines[4000] = chat_line("long", max_tokens=100_000)  # more output than the model gives: stored as failed
    path = write_jsonl(tmp_path / "job.jsonl", lines)
    stored = []
    for parallel_from in (PARALLEL_FROM, 0):
        with closing(Store(tmp_path / f"{parallel_from}.db")) as store:
            store.runs.acquire("job", str(path))
            report = ingest(store, "job", path, limits, parallel_from=parallel_from)
            assert (report.added, [r[:2] for r in report.refused]) == (len(lines), [(4001, "long")])
            stored.append(store.conn.execute("SELECT custom_id, line, body_hash, prompt_tokens, state FROM requests"
                                             " ORDER BY id").fetchall())  # fmt: skip
    assert stored[0] == stored[1]
    with path.open("a") as f:
        f.write("\n" * (CHUNK_LINES + 5) + '{"custom_id": "x"}\n' + "\n" * CHUNK_LINES + "[1]\n")
    with closing(Store(tmp_path / "bad.db")) as store, pytest.raises(InputError) as info:
        store.runs.acquire("job", str(path))
        ingest(store, "job", path, limits, parallel_from=0)
    assert info.value.line == len(lines) + CHUNK_LINES + 6 and "missing body" in info.value.problem
    # stopped early, from a child (bad first line) and from this process (a duplicate): the children are ended
    for case, (first, problem) in enumerate([("{", "not valid JSON"), (json.dumps(chat_line("r9")), "'r9'")]):
        path.write_text(first + "\n" + path.read_text())
        with closing(Store(tmp_path / f"stopped{case}.db")) as store, pytest.raises(InputError, match=problem):
            store.runs.acquire("job", str(path))
            ingest(store, "job", path, limits, parallel_from=0)
        path.write_text(path.read_text().split("\n", 1)[1])


def test_duplicate_custom_id_in_file_names_both_lines(tmp_path: Path, store: Store, limits: Limits) -> None:
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a"), chat_line("b"), chat_line("a")])
    store.runs.acquire("job", str(path))
    with pytest.raises(InputError, match=r"job.jsonl:3: duplicate custom_id 'a' \(also on line 1\)"):
        ingest(store, "job", path, limits)


def test_different_body_for_stored_custom_id_is_an_error(tmp_path: Path, store: Store, limits: Limits) -> None:
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a", "first question")])
    store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    write_jsonl(path, [chat_line("a", "another question")])
    with pytest.raises(InputError, match="'a' is already stored .* with a different body"):
        ingest(store, "job", path, limits)


def test_request_over_context_window_is_failed_with_reason_not_sent(
    tmp_path: Path, store: Store, limits: Limits
) -> None:
    huge = "word " * 130_000  # ~130k tokens: over gpt-4o-mini's 128,000 context window
    path = write_jsonl(
        tmp_path / "job.jsonl",
        [
            chat_line("fine"),
            {
                **chat_line("big", huge),
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": huge}], "max_tokens": 10},
            },
        ],
    )
    store.runs.acquire("job", str(path))
    report = ingest(store, "job", path, limits)
    assert [(line, cid) for line, cid, _ in report.refused] == [(2, "big")]
    assert "input limit of 128,000" in report.refused[0][2]
    counts = store.requests.counts("job")
    assert (counts["pending"], counts["failed"]) == (1, 1)


def test_missing_input_file_is_a_config_error(tmp_path: Path, store: Store, limits: Limits) -> None:
    with pytest.raises(ConfigError, match="no such input file"):
        ingest(store, "job", tmp_path / "nope.jsonl", limits)


def test_transitions_are_compare_and_set(tmp_path: Path, store: Store, limits: Limits) -> None:
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a"), chat_line("b")])
    owner = store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    (a, b) = store.requests.claim("job", owner, 10)
    store.requests.record(
        owner,
        "job",
        [Outcome(a.id, a.custom_id, Move.ANSWER, status_code=200, body="{}", model="gpt-4.1-mini", cost=5)],
    )
    twice = [Outcome(r.id, r.custom_id, Move.ANSWER, status_code=200, body="{}") for r in (b, a)]
    with pytest.raises(StateConflict, match="request 'a' in flight"):  # a is final: never answered twice, and
        store.requests.record(owner, "job", twice)  # the whole record is refused: b's answer is not kept without a's
    # another process (one that was taken over, say) cannot settle b: nothing is recorded, and it is told so
    assert store.requests.record("someone-else", "job", [Outcome(b.id, b.custom_id, Move.FAIL)]) == 1
    counts = store.requests.counts("job")
    assert (counts["succeeded"], counts["in_flight"]) == (1, 1)
    assert store.results.total_cost("job") == 5


def test_a_live_owner_is_never_taken_over_however_long_it_is_silent(tmp_path: Path, limits: Limits) -> None:
    now = [1_000_000.0]
    store = Store(tmp_path / "r.db", clock=lambda: now[0])
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a"), chat_line("b")])
    owner = store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    assert len(store.requests.claim("job", owner, 10)) == 2
    now[0] += 3600  # an hour without a heartbeat (SIGSTOP, a laptop lid): this process is still alive
    with pytest.raises(RunLocked, match="alive"):
        store.runs.acquire("job", str(path))
    assert store.runs.owner_of("job") == (owner, "alive")


def test_another_hosts_owner_is_taken_over_after_its_lease_and_learns_it(tmp_path: Path, limits: Limits) -> None:
    now = [1_000_000.0]
    store = Store(tmp_path / "r.db", clock=lambda: now[0])
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a"), chat_line("b")])
    first = store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    store.requests.claim("job", first, 1)
    elsewhere = "other-host:4242:1:abcd1234"
    with store.transaction():  # as if another machine owned it
        store.conn.execute("UPDATE runs SET owner=?", (elsewhere,))
        store.conn.execute("UPDATE requests SET lease_owner=? WHERE state='in_flight'", (elsewhere,))
    now[0] += 600
    with pytest.raises(RunLocked):  # silent for 10 minutes: not yet (it may be stalled, not dead)
        store.runs.acquire("job", str(path), takeover_after=900)
    now[0] += 400
    second = store.runs.acquire("job", str(path), takeover_after=900)
    assert store.takeovers == [f"took over run 'job' from {elsewhere} (silent, silent for 1,000s)"]
    assert store.requests.counts("job")["pending"] == 2  # its lease went back to pending
    assert not store.runs.heartbeat("job", elsewhere, 60)  # the old owner learns it at its next beat ...
    assert store.requests.claim("job", elsewhere, 10) == []  # ... and can claim nothing more
    assert len(store.requests.claim("job", second, 10)) == 2


def test_owner_whose_process_is_gone_is_taken_over_at_once(tmp_path: Path, store: Store, limits: Limits) -> None:
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a")])
    store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    dead_pid = 2**22 + 12345
    assert not _alive(dead_pid)
    host = store.conn.execute("SELECT owner FROM runs").fetchone()[0].split(":")[0]
    with store.db.atomic():
        store.conn.execute("UPDATE runs SET owner=?", (f"{host}:{dead_pid}:x",))
    store.runs.acquire("job", str(path))  # no RunLocked although the heartbeat is fresh


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_claiming_walks_an_index_in_id_order_and_never_sorts_the_queue(
    tmp_path: Path, store: Store, limits: Limits
) -> None:
    """A claim's cost must not grow with the number of pending requests (a sort of every due row took 0.14 s a
    claim at 1,000,000 pending): the statement SQLite runs is explained, and must read requests_claim in order."""
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(50)])
    owner = store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    claimed = store.requests.claim("job", owner, 10, above=3)
    store.conn.set_trace_callback(None)
    assert [c.custom_id for c in claimed] == [f"r{i}" for i in range(3, 13)]  # oldest first, above the lane
    (update,) = [s for s in statements if s.lstrip().startswith("UPDATE requests")]
    plan = " | ".join(str(row[-1]) for row in store.conn.execute("EXPLAIN QUERY PLAN " + update))
    assert "requests_claim" in plan and "TEMP B-TREE" not in plan, plan


def test_a_database_from_before_the_state_check_rebuild_keeps_every_row_and_answer(tmp_path: Path) -> None:
    """m008 rebuilds the requests table (a CHECK can change no other way): a database of the previous schema, with
    requests in several states and answers pointing at them, opens with everything in place, the state check and
    the answers' references still enforced, and foreign keys on again."""
    db_path = tmp_path / "old.db"
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    migrations.apply(Database(conn), stop_before="m008_cheap_state_check")
    conn.execute("INSERT INTO runs(name, created_at) VALUES ('job', 1)")
    for i, state in enumerate(["pending", "succeeded", "failed", "in_flight", "batched", "cancelled"], 1):
        conn.execute(
            "INSERT INTO requests(run, custom_id, line, endpoint, model, body, body_hash, prompt_tokens,"
            " output_tokens, state, updated_at, resubmits) VALUES ('job',?,?,'/v1/chat/completions','gpt-4.1-mini',"
            " '{}', 'h', 5, 10, ?, 2, ?)",
            (f"r{i}", i, state, i % 2),
        )
    for i, outcome in [(2, "succeeded"), (3, "failed")]:
        conn.execute(
            "INSERT INTO results(request_id, run, custom_id, outcome, mode, created_at) VALUES (?,'job',?,?,'sync',3)",
            (i, f"r{i}", outcome),
        )
    before = conn.execute("SELECT * FROM requests ORDER BY id").fetchall()
    answers = conn.execute("SELECT * FROM results ORDER BY request_id").fetchall()
    conn.close()

    with closing(Store(db_path)) as store:
        c = store.conn
        assert c.execute("SELECT * FROM requests ORDER BY id").fetchall() == before
        assert [row[: len(answers[0])] for row in c.execute("SELECT * FROM results ORDER BY request_id")] == answers
        assert "state = 'pending' OR" in c.execute("SELECT sql FROM sqlite_master WHERE name='requests'").fetchone()[0]
        indexes = {name for (name,) in c.execute("SELECT name FROM sqlite_master WHERE tbl_name='requests'")}
        assert {"requests_claim", "requests_batch"} <= indexes
        assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            c.execute("UPDATE requests SET state='lost' WHERE id=1")
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            c.execute("INSERT INTO results(request_id, run, custom_id, outcome, mode, created_at)"
                      " VALUES (99,'job','x','failed','sync',3)")  # fmt: skip
        assert store.requests.counts("job")["pending"] == 1


def test_the_store_counts_a_request_s_admission_tokens_as_the_gate_does(
    tmp_path: Path, store: Store, limits: Limits
) -> None:
    """One rule, two spellings: ``admission_tokens`` (the gate, packing) and the store's ``ADMITTED`` SQL (wave
    plans, queue estimates) give the same figure for every request, ``n`` choices included."""
    lines = [chat_line(f"r{i}", "word " * (i * 7), max_tokens=10 * i + 1, n=i % 3 + 1) for i in range(9)]
    path = write_jsonl(tmp_path / "job.jsonl", lines)
    store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    rows = store.conn.execute("SELECT prompt_tokens, output_tokens, n FROM requests WHERE run='job'").fetchall()
    expected = sum(admission_tokens(p, o, n) for p, o, n in rows)
    assert store.requests.pending_by_model("job") == [("gpt-4.1-mini", 9, expected)]
    largest = max(admission_tokens(p, o, n) for p, o, n in rows)
    assert [big for *_, big in store.requests.pending_totals("job", "gpt-4.1-mini", None)] == [largest]
    assert {n for *_, n in rows} == {1, 2, 3}
