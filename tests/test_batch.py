"""Batch mode: packing, the simulator's Batch API, waves, partial outcomes, mode switches, kill -9 at each point."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from runner.batch import packing
from runner.batch.packing import pack
from runner.commands import export_results, manage_batches, run_job
from runner.jobfile import ingest
from runner.limits import Limits
from runner.retry import RetryPolicy
from runner.settings import BatchSettings, RunSettings
from runner.sim.config import SimConfig
from runner.store import Store
from runner.store.peers import GateFile, gate_file_path
from runner.tokens import count_prompt
from runner.transport import Credentials

from .conftest import FakeTime, chat_line, runner_cli, runner_process, write_jsonl

FAST = BatchSettings(poll_min=0.05, poll_max=0.3, queue_wait=0.3, calls_per_second=1000)
REAL = BatchSettings(calls_per_second=1000)  # polls from 10 s, backing off to 5 min: on a fake clock, no cost


def settings(**kw: Any) -> RunSettings:
    kw.setdefault("retry", RetryPolicy(base=0.05, cap=0.3))
    kw.setdefault("seed", 1)
    return RunSettings(**kw)


def job(tmp_path: Path, n: int, name: str = "job.jsonl", **line: Any) -> Path:
    return write_jsonl(tmp_path / name, [chat_line(f"req-{i:04d}", f"Question number {i}?", **line) for i in range(n)])


def reserved(path: Path) -> int:
    """The largest queue estimate (prompt + max output) of the job's requests."""
    bodies = [json.loads(x)["body"] for x in path.read_text().splitlines()]
    return max(count_prompt("/v1/chat/completions", b, "o200k_base") + b["max_tokens"] for b in bodies)


def batch_cli_args(path: Path, sim: Any, queue_requests: int) -> list[str]:
    """``runner run`` in batch mode against ``sim``, with a queue that holds ``queue_requests`` of the job."""
    return [
        "run",
        str(path),
        "--mode",
        "batch",
        "--base-url",
        sim.base_url,
        "--poll-every",
        "0.05",
        "--batch-queue-tokens",
        str(queue_requests * reserved(path)),
    ]


def run_batch(store: Store, path: Path, limits: Limits, sim: Any, batch: BatchSettings = FAST, **kw: Any) -> Any:
    """``run_job`` in batch mode; on the simulator's fake clock when it has one (see ``fake_sim``)."""
    clock = sim.sim.config.clock
    timing = clock.timing() if isinstance(clock, FakeTime) else None
    credentials = Credentials(sim.base_url, "k")
    return run_job(store, str(path), limits, settings(**kw), credentials, mode="batch", batch=batch, timing=timing)


def fake_sim(start_sim: Any, **config: Any) -> Any:
    """A simulator whose batches run on a fake clock shared with the executor: hours pass in no time."""
    return start_sim(clock=FakeTime(), **config)


def results(store: Store, run: str = "job") -> dict[str, dict[str, Any]]:
    lines = [json.loads(x) for x in export_results(store, run)]
    ids = [x["custom_id"] for x in lines]
    assert len(ids) == len(set(ids)), "one result per custom_id"
    return {x["custom_id"]: x for x in lines}


def server_batches(sim: Any) -> list[Any]:
    return sim.call(lambda: list(sim.sim.batches.batches.values()))


# -- packing ----------------------------------------------------------------------------------------------------


def test_packing_respects_every_limit_and_splits_models_and_endpoints(
    tmp_path: Path, store: Store, limits: Limits
) -> None:
    items = [chat_line(f"a{i}") for i in range(7)]
    items += [{**chat_line(f"b{i}"), "body": {**chat_line("x")["body"], "model": "gpt-4o-mini"}} for i in range(3)]
    items += [
        {
            "custom_id": f"e{i}",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": f"text {i}"},
        }
        for i in range(2)
    ]
    path = write_jsonl(tmp_path / "job.jsonl", items)
    store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    packed = pack(store, "job", tmp_path / "spool", lambda m: None, max_requests=3)
    assert sorted((p.model, p.requests) for p in packed) == sorted(
        [
            ("gpt-4.1-mini", 3),
            ("gpt-4.1-mini", 3),
            ("gpt-4.1-mini", 1),
            ("gpt-4o-mini", 3),
            ("text-embedding-3-small", 2),
        ]
    )
    rows = store.batches.batch_rows("job")
    assert sorted(r.chunk for r in rows) == [1, 2, 3, 4, 5]  # files are recorded while the next is written
    for row in rows:
        lines = [json.loads(x) for x in Path(row.spool_path).read_text().splitlines()]
        assert {x["body"]["model"] for x in lines} == {row.model} and {x["url"] for x in lines} == {row.endpoint}
        assert all(x["method"] == "POST" for x in lines)
        assert [m[1] for m in store.batches.batch_members(row)] == [x["custom_id"] for x in lines]  # its own requests
    assert store.requests.counts("job")["batched"] == 12


def test_packing_stops_at_the_byte_limit_and_the_queue_budget(tmp_path: Path, store: Store, limits: Limits) -> None:
    path = job(tmp_path, 10, max_tokens=100)
    store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    one_line = len(Path(path).read_text().splitlines()[0]) + 40
    by_bytes = pack(store, "job", tmp_path / "spool", lambda m: None, max_bytes=2 * one_line)
    assert all(p.bytes < 2 * one_line for p in by_bytes) and all(p.requests <= 2 for p in by_bytes)
    path2 = job(tmp_path, 10, name="job2.jsonl", max_tokens=100)
    store.runs.acquire("job2", str(path2))
    ingest(store, "job2", path2, limits)
    per_request = store.conn.execute("SELECT prompt_tokens + output_tokens FROM requests LIMIT 1").fetchone()[0]
    packed = pack(store, "job2", tmp_path / "spool", lambda m: 4 * per_request)
    assert [p.requests for p in packed] == [4]  # the rest waits for the queue to drain
    assert store.requests.counts("job2")["pending"] == 6


# -- the simulator's Batch API -----------------------------------------------------------------------------------


def upload(client: openai.OpenAI, lines: list[Any]) -> str:
    content = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines).encode()
    return client.files.create(file=("in.jsonl", content), purpose="batch").id


def wait_final(client: openai.OpenAI, batch_id: str) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(0.05)
    raise AssertionError("batch did not finish")


def line(custom_id: str, model: str = "gpt-4.1-mini", url: str = "/v1/chat/completions") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"model": model, "messages": [{"role": "user", "content": custom_id}], "max_tokens": 10},
    }


@pytest.mark.parametrize(
    ("lines", "code", "at"),
    [
        ([line("a"), "{not json"], "invalid_json_line", 2),
        ([line("a"), line("b"), line("a")], "duplicate_custom_id", 3),
        ([line("a"), line("b", model="gpt-4o-mini")], "model_mismatch", 2),
        ([line("a"), line("b", url="/v1/responses")], "url_mismatch", 2),
    ],
)
def test_simulator_reports_file_problems_the_way_openai_does(
    start_sim: Any, lines: list[Any], code: str, at: int
) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=0.2)
    client = openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "validating"
    done = wait_final(client, batch.id)
    assert done.status == "failed"
    assert done.errors is not None and done.errors.data
    assert (done.errors.data[0].code, done.errors.data[0].line) == (code, at)
    client.close()


@pytest.mark.slow
def test_simulator_refuses_bad_batch_requests(start_sim: Any) -> None:
    sim = start_sim(latency_scale=0)
    client = openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
    file_id = upload(client, [line("a")])
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="metadata"):
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={f"k{i}": "v" for i in range(17)},
        )
    small = start_sim(latency_scale=0, max_file_bytes=1024 * 1024)  # the 200 MB rule, at 1 MB
    with openai.OpenAI(base_url=small.base_url, api_key="k", max_retries=0) as small_client:
        small_client.files.create(file=("fits.jsonl", b"x" * (1024 * 1024)), purpose="batch")
        with pytest.raises(openai.BadRequestError, match="at most 1 MB"):
            small_client.files.create(file=("big.jsonl", b"x" * (1024 * 1024 + 1)), purpose="batch")
    assert SimConfig().max_file_bytes == 200 * 1024 * 1024 == packing.MAX_BYTES + 1
    too_many = client.batches.create(
        input_file_id=upload(client, [line(f"r{i}") for i in range(50_001)]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    assert wait_final(client, too_many.id).errors.data[0].code == "too_many_tasks"  # type: ignore[union-attr]
    client.close()


def test_simulator_batch_life_cycle_and_pagination(start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=0.3)
    client = openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
    ids = [
        client.batches.create(
            input_file_id=upload(client, [line(f"{j}-{i}") for i in range(4)]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"n": str(j)},
        ).id
        for j in range(3)
    ]
    first_page = client.batches.list(limit=2)
    assert [b.id for b in first_page.data] == ids[::-1][:2] and first_page.has_more
    assert [b.id for b in client.batches.list(limit=2, after=ids[1]).data] == [ids[0]]
    done = wait_final(client, ids[0])
    assert done.status == "completed" and done.request_counts.completed == 4  # type: ignore[union-attr]
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]  # type: ignore[arg-type]
    assert sorted(x["custom_id"] for x in out) == [f"0-{i}" for i in range(4)]
    assert all(x["response"]["status_code"] == 200 for x in out)
    assert done.usage is not None and done.usage.input_tokens == sum(
        x["response"]["body"]["usage"]["prompt_tokens"] for x in out
    )
    client.close()


def test_simulator_expired_and_cancelled_batches_keep_finished_lines(start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=1.0, batch_expire_seconds=0.5)
    client = openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
    expired = wait_final(
        client,
        client.batches.create(
            input_file_id=upload(client, [line(f"e{i}") for i in range(20)]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
    )
    assert expired.status == "expired"
    kept = client.files.content(expired.output_file_id).text.splitlines()  # type: ignore[arg-type]
    lost = [json.loads(x) for x in client.files.content(expired.error_file_id).text.splitlines()]  # type: ignore[arg-type]
    assert 0 < len(kept) < 20 and len(kept) + len(lost) == 20
    assert {x["error"]["code"] for x in lost} == {"batch_expired"}
    client.close()


# -- the runner in batch mode ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_batch_round_trip_gives_the_sync_answers_at_half_the_price(
    tmp_path: Path, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=0.3)
    path = job(tmp_path, 25)
    sync_store, batch_store = Store(tmp_path / "sync.db"), Store(tmp_path / "batch.db")
    assert run_job(sync_store, str(path), limits, settings(), Credentials(sim.base_url, "k")).exit_code == 0
    outcome = run_batch(batch_store, path, limits, sim)
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 25
    by_sync, by_batch = results(sync_store), results(batch_store)
    assert by_sync.keys() == by_batch.keys()
    for cid in by_sync:
        a, b = by_sync[cid]["response"]["body"], by_batch[cid]["response"]["body"]
        assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
        assert a["usage"] == b["usage"]
        assert set(by_sync[cid]) == set(by_batch[cid]) == {"id", "custom_id", "response", "error"}
    assert sync_store.results.total_cost("job") == 2 * batch_store.results.total_cost("job")
    assert {r["service_tier"] for r in batch_store.results.spend_by()} == {"batch"}


def test_big_job_goes_in_waves_under_the_queue_limit(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = fake_sim(start_sim, latency_scale=0, batch_seconds=600)
    path = job(tmp_path, 30, max_tokens=20)
    outcome = run_batch(store, path, limits, sim, REAL, batch_queue_tokens=10 * reserved(path))
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 30
    batches = server_batches(sim)
    assert len(batches) >= 3 and all(len(b.lines) <= 10 for b in batches)
    spans = sorted((b.created, b.stamps.get("completed_at", 0.0)) for b in batches)
    for (_, done), (started, _) in itertools.pairwise(spans):
        assert started >= done - 300, "a wave starts only when the queue has room (seen at the next poll)"
    results(store)


def test_waves_leave_the_queue_room_other_databases_on_the_key_hold(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    """The batch queue is the organisation's: what another runner's database holds in it (its word in the gate
    file, which outlives that process) is room this run's waves leave."""
    sim = fake_sim(start_sim, latency_scale=0, batch_seconds=600)
    path = job(tmp_path, 30, max_tokens=20)
    other = GateFile(gate_file_path(sim.base_url, "k"), "another-process")
    other.tell("gpt-4.1-mini batch queue tokens", "another-database", 20 * reserved(path))
    other.close()
    outcome = run_batch(store, path, limits, sim, REAL, batch_queue_tokens=30 * reserved(path))
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 30
    batches = server_batches(sim)
    assert len(batches) >= 3 and all(len(b.lines) <= 10 for b in batches)


@pytest.mark.parametrize("seed", range(3))
def test_max_spend_is_never_passed_whatever_the_batch_sizes_and_resubmits(
    tmp_path: Path, limits: Limits, start_sim: Any, seed: int
) -> None:
    """Random queue sizes (so batch sizes and waves), failing lines (resubmitted) and caps: the recorded spend and
    the server's bill stay under the cap; a higher cap finishes the job with nothing paid twice."""
    rng = random.Random(seed)
    sim = fake_sim(start_sim, latency_scale=0, batch_seconds=600, batch_line_error_rate=rng.choice([0.0, 0.2]))
    lines = [chat_line(f"req-{i:04d}", f"Question number {i}?", max_tokens=rng.randint(20, 400)) for i in range(40)]
    path = write_jsonl(tmp_path / "job.jsonl", lines)
    queue = rng.randint(3, 40) * reserved(path)
    cap = rng.randint(2, 30) * 10**12 // 10_000  # $0.0002 to $0.003
    store = Store(tmp_path / "cap.db")
    batch = dataclasses.replace(REAL, max_resubmits=20)
    first = run_batch(store, path, limits, sim, batch, max_spend=cap, batch_queue_tokens=queue)
    assert store.results.total_cost("job") == sim.call(lambda: sim.sim.stats.spend) <= cap, (queue, cap)
    assert first.exit_code == 3 and "--max-spend" in str(first.stopped)
    again = run_batch(store, path, limits, sim, batch, max_spend=100 * cap, batch_queue_tokens=queue)
    assert again.exit_code == 0 and again.counts["succeeded"] == 40
    assert store.results.total_cost("job") == sim.call(lambda: sim.sim.stats.spend)
    results(store)


def test_token_limit_exceeded_is_waited_out_not_a_failure(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = fake_sim(start_sim, latency_scale=0, batch_seconds=600, batch_queue_tokens=60)  # the server's holds fewer
    path = job(tmp_path, 12, max_tokens=20)
    outcome = run_batch(store, path, limits, sim, REAL, batch_queue_tokens=12 * reserved(path))  # the runner: 12
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 12
    codes = [b.errors[0]["code"] for b in server_batches(sim) if b.errors]
    assert "token_limit_exceeded" in codes
    assert store.conn.execute("SELECT max(resubmits) FROM requests").fetchone()[0] == 0  # not counted against them
    assert any("queue limit is lower than configured" in n for n in outcome.notices)
    results(store)


def test_expired_batches_keep_finished_lines_and_requeue_the_rest(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = fake_sim(start_sim, latency_scale=0, batch_seconds=1000, batch_expire_seconds=600)
    path = job(tmp_path, 40)
    outcome = run_batch(store, path, limits, sim, batch=dataclasses.replace(REAL, max_resubmits=20))
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 40
    assert any(b.status == "expired" for b in server_batches(sim))
    assert store.conn.execute("SELECT count(*) FROM spend").fetchone()[0] == 40  # every billed line, once
    answered = sim.call(lambda: sim.sim.stats.answered)
    assert answered == 40, "no line answered twice"
    results(store)
    assert not list((tmp_path / "runner.db.spool" / "job").iterdir()), "settled batch files are removed"


def test_resubmission_cap_fails_requests_with_the_reason(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = fake_sim(start_sim, latency_scale=0, batch_seconds=1200, batch_expire_seconds=600)
    outcome = run_batch(store, job(tmp_path, 30), limits, sim, batch=dataclasses.replace(REAL, max_resubmits=1))
    assert outcome.exit_code == 1 and outcome.counts["failed"] > 0
    failed = [r for r in results(store).values() if r["error"]]
    assert all("gave up after 2 batches" in r["error"]["message"] for r in failed)
    assert {r["error"]["code"] for r in failed} == {"batch_expired"}


def test_line_errors_are_classified_like_sync(tmp_path: Path, store: Store, limits: Limits, start_sim: Any) -> None:
    without_4o = dataclasses.replace(limits, models={k: v for k, v in limits.models.items() if k != "gpt-4o-mini"})
    sim = fake_sim(start_sim, latency_scale=0, batch_seconds=600, batch_line_error_rate=0.3, limits=without_4o)
    items = [chat_line(f"ok-{i}", f"Q {i}") for i in range(20)]
    items += [
        {**chat_line(f"gone-{i}", f"Q {i}"), "body": {**chat_line("x")["body"], "model": "gpt-4o-mini"}}
        for i in range(3)
    ]
    path = write_jsonl(tmp_path / "job.jsonl", items)
    outcome = run_batch(store, path, limits, sim, batch=dataclasses.replace(REAL, max_resubmits=10))
    assert outcome.counts["succeeded"] == 20 and outcome.counts["failed"] == 3 and outcome.exit_code == 1
    by_id = results(store)
    assert {by_id[f"gone-{i}"]["error"]["code"] for i in range(3)} == {"model_not_found"}
    assert by_id["gone-0"]["response"]["status_code"] == 404  # the server's own answer is kept


@pytest.mark.slow
def test_switching_modes_keeps_one_result_per_custom_id(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0, rpm=600, window=1.0, batch_seconds=0.5)
    path = job(tmp_path, 40)
    first = run_job(
        store, str(path), limits, settings(rpm=600, deadline=time.time() + 1.0), Credentials(sim.base_url, "k")
    )
    assert first.exit_code == 3 and 0 < first.counts["succeeded"] < 40  # started in sync
    second = run_batch(store, path, limits, sim)  # finished in batch
    assert second.exit_code == 0 and second.counts["succeeded"] == 40
    assert len(results(store)) == 40
    assert {r["service_tier"] for r in store.results.spend_by()} == {"standard", "batch"}


def test_sync_run_collects_finished_batches_and_names_running_ones(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=60)
    path = job(tmp_path, 10)
    started = run_batch(store, path, limits, sim, deadline=time.time() + 0.5)
    assert started.exit_code == 3 and started.counts["batched"] == 10
    write_jsonl(path, [chat_line("extra", "one more")], mode="a")
    synced = run_job(store, str(path), limits, settings(), Credentials(sim.base_url, "k"))
    assert synced.exit_code == 3 and "still running" in str(synced.stopped)
    assert synced.counts["succeeded"] == 1 and synced.counts["batched"] == 10
    assert manage_batches(store, "job", limits, settings(), Credentials(sim.base_url, "k"), "cancel") == 1
    sim.call(lambda: setattr(sim.sim.config, "batch_seconds", 0.3))  # the simulated backlog clears
    finished = run_batch(store, path, limits, sim)
    assert finished.exit_code == 0 and finished.counts["succeeded"] == 11
    assert any(b.status == "cancelled" for b in server_batches(sim))
    results(store)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_upload", "after_create", "polling", "downloading", "recording"])
def test_kill_9_at_each_point_never_duplicates_a_batch_or_loses_a_line(
    tmp_path: Path, start_sim: Any, point: str
) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=0.3)
    path = job(tmp_path, 12)
    env = {**os.environ, "OPENAI_API_KEY": "k", "RUNNER_DB": str(tmp_path / "crash.db")}
    args = batch_cli_args(path, sim, 6)
    crashed = runner_process(*args, env={**env, "RUNNER_CRASH_AT": point})  # killed: a process of its own
    assert crashed.returncode == -9, crashed.stderr
    resumed = runner_cli(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    store = Store(tmp_path / "crash.db")
    assert len(results(store)) == 12
    chunks = [b.metadata.get("runner_chunk") for b in server_batches(sim)]
    assert len(chunks) == len(set(chunks)) == 2, f"one batch per chunk, never two: {chunks}"
    uploads = sim.call(lambda: [f.filename for f in sim.sim.batches.files.values() if f.purpose == "batch"])
    assert len(uploads) == len(set(uploads)) == 2, "each chunk uploaded once (or its orphan deleted)"
    assert sim.call(lambda: sim.sim.stats.answered) == 12
    assert store.conn.execute("SELECT count(*) FROM spend").fetchone()[0] == 12


def _without_nulls(value: Any) -> Any:
    # openapi.yaml types many optional Batch fields as non-nullable although the real API returns null for them
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def test_simulator_batch_and_file_objects_match_openapi(start_sim: Any, openapi: Any) -> None:
    from openapi_core.testing import MockRequest, MockResponse

    sim = start_sim(latency_scale=0, batch_seconds=0.2)
    client = openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0)

    def check(method: str, path: str, raw: bytes, content_type: str = "application/json") -> None:
        body = json.dumps(_without_nulls(json.loads(raw))).encode()
        request = MockRequest("https://api.openai.com", method, f"/v1{path}", content_type=content_type)
        openapi.validate_response(request, MockResponse(body, status_code=200, content_type="application/json"))

    content = json.dumps(line("a")).encode()
    uploaded = client.files.with_raw_response.create(file=("in.jsonl", content), purpose="batch")
    file_id = uploaded.parse().id
    check("post", "/files", uploaded.http_response.content, "multipart/form-data")
    check("get", "/files", client.files.with_raw_response.list(purpose="batch").http_response.content)
    check("get", f"/files/{file_id}", client.files.with_raw_response.retrieve(file_id).http_response.content)
    created = client.batches.with_raw_response.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "x"}
    )
    batch_id = created.parse().id
    check("post", "/batches", created.http_response.content)
    check("get", "/batches", client.batches.with_raw_response.list().http_response.content)
    wait_final(client, batch_id)
    check("get", f"/batches/{batch_id}", client.batches.with_raw_response.retrieve(batch_id).http_response.content)
    other = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    check(
        "post", f"/batches/{other.id}/cancel", client.batches.with_raw_response.cancel(other.id).http_response.content
    )
    check("delete", f"/files/{file_id}", client.files.with_raw_response.delete(file_id).http_response.content)
    client.close()


@pytest.mark.slow
def test_status_and_batches_show_batch_states_and_the_wave_plan(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=60)
    path = job(tmp_path, 12)
    env = {**os.environ, "OPENAI_API_KEY": "k", "RUNNER_DB": str(tmp_path / "s.db")}
    ran = runner_cli(*batch_cli_args(path, sim, 4), "--deadline", "5s", env=env)  # room for a slow first start
    assert ran.returncode == 3 and "deadline" in ran.stderr
    status = json.loads(runner_cli("status", "--json", env=env).stdout)
    assert status["mode"] == "batch" and status["states"]["batched"] == 4 and status["states"]["pending"] == 8
    assert sum(status["batches"].values()) == 1
    shown = runner_cli("status", env=env).stdout
    assert "batches: 1 " in shown and "wave plan gpt-4.1-mini: 8 pending" in shown
    listed = runner_cli("batches", env=env).stdout
    assert "chunk    1" in listed and "submitted" in listed


def test_orphaned_uploads_of_the_run_are_deleted_and_others_left_alone(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = fake_sim(start_sim, latency_scale=0, batch_seconds=600)
    path = job(tmp_path, 4)
    assert run_batch(store, path, limits, sim, REAL).exit_code == 0
    store_id = store.store_id
    client = openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0)
    orphan = client.files.create(file=(f"runner-{store_id}-job-00009-deadbeef0000.jsonl", b"{}\n"), purpose="batch")
    foreign = client.files.create(file=("runner-otherdb-job-00009-deadbeef0000.jsonl", b"{}\n"), purpose="batch")
    mine = client.files.create(file=("my-own-file.jsonl", b"{}\n"), purpose="batch")
    manage_batches(store, "job", limits, settings(), Credentials(sim.base_url, "k"), "reconcile")
    left = {f.id for f in client.files.list(purpose="batch")}
    assert orphan.id not in left and {foreign.id, mine.id} <= left
    client.close()


def test_request_larger_than_the_queue_limit_fails_with_reason(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = fake_sim(start_sim, latency_scale=0, batch_seconds=600)
    path = write_jsonl(
        tmp_path / "job.jsonl",
        [chat_line("small-1", max_tokens=20), chat_line("huge", max_tokens=900), chat_line("small-2", max_tokens=20)],
    )
    outcome = run_batch(store, path, limits, sim, REAL, batch_queue_tokens=100)
    assert outcome.exit_code == 1 and outcome.counts["succeeded"] == 2 and outcome.counts["failed"] == 1
    ((custom_id, reason),) = store.results.failures("job")
    assert custom_id == "huge" and "line 2" in reason and "batch queue limit of 100" in reason
    assert all(len(b.lines) < 3 for b in server_batches(sim))


def test_embeddings_batches_hold_at_most_the_input_limit(tmp_path: Path, store: Store, limits: Limits) -> None:
    items = [
        {
            "custom_id": f"e{i}",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": [f"text {i}-{k}" for k in range(4)]},
        }
        for i in range(5)
    ]
    path = write_jsonl(tmp_path / "job.jsonl", items)
    store.runs.acquire("job", str(path))
    ingest(store, "job", path, limits)
    packed = pack(store, "job", tmp_path / "spool", lambda m: None, max_inputs=10)
    assert [p.requests for p in packed] == [2, 2, 1]  # 8, 8 and 4 inputs: never over 10
