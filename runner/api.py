"""The Python API: what the ``runner`` command does, as functions with the command's defaults.

Every function opens the database named by ``db`` (default ``$RUNNER_DB``, else ``./runner.db``, as on the command
line) and talks to ``base_url`` (default ``$OPENAI_BASE_URL``, else OpenAI) with ``api_key`` (default
``$OPENAI_API_KEY``); ``gate`` defaults to ``$RUNNER_GATE``, else ``host``. Nothing is printed: what a run says
as it goes goes to ``on_event`` (one line at a time), if given. ``arun`` and ``aresults`` work inside a running
event loop (Jupyter's) without nest_asyncio: the run has its own loop in a worker thread.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from runner.commands import (
    PlanAsk,
    RunOutcome,
    batches_report,
    cancel_requests,
    manage_batches,
    plan_with,
    run_job,
    run_name,
    spend_report,
    status_report,
    write_private,
)
from runner.durations import parse_duration
from runner.errors import ConfigError, RunnerError
from runner.events import Say, silent
from runner.extract.job import DEFAULT_INSTRUCTIONS, Extraction, ExtractReport
from runner.extract.job import extract as run_extraction
from runner.limits import Limits, load_limits
from runner.money import from_usd, usd
from runner.planner import Plan
from runner.redis_gate import redis_url_problem
from runner.reports import Batches, Spend, Status
from runner.settings import BatchSettings, RunSettings
from runner.store import Store, default_db_path
from runner.transport import Credentials

__all__ = [
    "Batches",
    "ExtractReport",
    "Plan",
    "Result",
    "RunReport",
    "Spend",
    "Status",
    "aextract",
    "aresults",
    "arun",
    "batches",
    "cancel",
    "extract",
    "plan",
    "results",
    "rows",
    "run",
    "spend",
    "status",
]

Model = TypeVar("Model")
Money = Decimal | str | int | float


@dataclass(frozen=True)
class Result:
    """One request's final result."""

    custom_id: str
    state: str  # succeeded or failed
    body: dict[str, Any] | None  # the API's response body (a chat completion, a response, an embedding list...)
    usage: dict[str, Any] | None  # the body's usage, where it has one
    cost: Decimal  # USD this request cost ($0 when its answer was reused)
    error: str | None  # "code: message" of a failure
    reused: bool = False  # answered by an earlier answer to the same request (never sent)
    status_code: int | None = None

    @property
    def text(self) -> str | None:
        """The answer's text, where the body has one (chat completions, responses)."""
        body = self.body or {}
        choices = body.get("choices") or []
        if choices and isinstance(choices[0], dict):
            content = (choices[0].get("message") or {}).get("content")
            return content if isinstance(content, str) else None
        text = body.get("output_text")
        return text if isinstance(text, str) else None


@dataclass(frozen=True)
class RunReport:
    """How a run ended: its requests by state, what it spent, and why it stopped early (None: it did not)."""

    name: str
    counts: dict[str, int]
    spent: Decimal  # USD, this run's
    stopped: RunnerError | None = None
    notices: tuple[str, ...] = ()
    refused: tuple[tuple[int, str, str], ...] = field(default=())  # (line, custom_id, reason) never sent

    @property
    def exit_code(self) -> int:
        """What ``runner run`` would exit with: 0 all answered, 1 some failed, 3 stopped early (resumable)."""
        if self.stopped is not None:
            return self.stopped.exit_code
        return 1 if self.counts.get("failed") else 0


def run(
    job: str | Path | Iterable[Mapping[str, Any]],
    *,
    name: str | None = None,
    db: str | Path | None = None,
    tier: str = "tier-1",
    model: str | None = None,
    mode: str = "sync",
    rpm: int | None = None,
    tpm: int | None = None,
    rpd: int | None = None,
    batch_queue_tokens: int | None = None,
    max_spend: Money | None = None,
    deadline: float | str | None = None,
    concurrency: int | None = None,
    headroom: float = 0.02,
    gate: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    limits: str | Path | None = None,
    poll_every: float = 10.0,
    grace: float = 5.0,
    retry_failed: bool = False,
    fresh: bool = False,
    progress: bool = False,
    on_event: Say | None = None,
) -> RunReport:
    """Run (or resume) ``job``: a JSONL path like ``runner run``'s INPUT, or request dicts (each with
    ``custom_id`` and ``body``, optionally ``url``), which need a ``name``. ``deadline`` in seconds or as "2h";
    ``max_spend`` in USD. Blocks until the run ends; from a running event loop, ``await arun(...)``."""
    store = _store(db)
    path = _job_file(store, job, name)
    settings = _settings(tier, rpm, tpm, rpd, batch_queue_tokens, max_spend, deadline, concurrency, headroom, gate,
                         grace, retry_failed, fresh)  # fmt: skip
    with closing(store):
        outcome = run_job(store, str(path), _limits(limits), settings, Credentials.from_env(base_url, api_key),
                          name=name, default_model=model, mode=mode, batch=BatchSettings(poll_min=poll_every),
                          progress=progress, say=on_event or silent, signals=False)  # fmt: skip
        return _report(store, outcome)


async def arun(job: str | Path | Iterable[Mapping[str, Any]], **options: Any) -> RunReport:
    """``run`` from async code (a notebook's cell, a pipeline): the run works in a worker thread with its own loop;
    ``results(name, follow=True)`` or ``aresults`` read its answers as they arrive."""
    materialised = job if isinstance(job, str | Path) else list(job)
    return await anyio.to_thread.run_sync(functools.partial(run, materialised, **options))


def results(
    name: str | None = None, *, db: str | Path | None = None, follow: bool = False, poll: float = 0.5
) -> Iterator[Result]:
    """The final results of run ``name`` (default: the database's only run). With ``follow``, also those that
    arrive while the run works (in another thread or process), until it has nothing left to do."""
    follower = _Follower(db, name, follow)
    while True:
        found, done = follower.step()
        yield from found
        if done:
            return
        time.sleep(poll)


async def aresults(
    name: str | None = None, *, db: str | Path | None = None, follow: bool = False, poll: float = 0.5
) -> AsyncIterator[Result]:
    """``results`` from async code: ``async for result in runner.aresults(name, follow=True)``."""
    follower = _Follower(db, name, follow)
    while True:
        found, done = await anyio.to_thread.run_sync(follower.step)
        for result in found:
            yield result
        if done:
            return
        await anyio.sleep(poll)


def plan(
    job: str | Path | None = None,
    *,
    name: str | None = None,
    requests: int | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    shared_prefix: int = 0,
    model: str | None = None,
    tier: str | None = None,
    deadline: float | str | None = None,
    headroom: float = 0.02,
    pilot: int | None = None,
    chart: str | Path | None = None,
    db: str | Path | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    project: str | None = None,
    limits: str | Path | None = None,
    on_event: Say | None = None,
) -> Plan:
    """Time and cost at every tier, sync and batch, like ``runner plan``: for a job file, a stored run's pending
    requests (``name``), or figures (``requests``, ``input_tokens``, ``output_tokens``). ``pilot``: run that many
    of the job's requests first and plan on their answers; ``chart``: draw the plan (.png or .svg). What the
    command would note (the tier detected, answers it would reuse) goes to ``on_event``. ``plan.as_json()`` is
    ``runner plan --json``."""
    if chart is not None:
        from runner.chart import check_chart_path, draw

        check_chart_path(str(chart))
    ask = PlanAsk(None if job is None else str(job), name, requests, input_tokens, output_tokens, shared_prefix, model)
    say = on_event or silent
    result, said = plan_with(Path(db or default_db_path()), _limits(limits), ask, tier=tier,
                             deadline=_seconds(deadline), headroom=headroom, pilot=pilot, base_url=base_url,
                             api_key=api_key, project=project, say=say)  # fmt: skip
    for line in said:
        say(line)
    if chart is not None:
        draw(result, str(chart))
    return result


def extract(
    source: str | Path,
    *,
    schema: str | Path | Mapping[str, Any] | type,
    instructions: str = DEFAULT_INSTRUCTIONS,
    text_column: str = "text",
    id_column: str | None = None,
    many: bool = False,
    model: str = "gpt-4.1-mini",
    name: str | None = None,
    max_output_tokens: int = 1000,
    max_input_tokens: int | None = None,
    mode: str = "sync",
    tier: str = "tier-1",
    deadline: float | str | None = None,
    max_spend: Money | None = None,
    gate: str | None = None,
    db: str | Path | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    limits: str | Path | None = None,
    poll_every: float = 10.0,
    fresh: bool = False,
    progress: bool = False,
    on_event: Say | None = None,
) -> ExtractReport:
    """Documents and a schema in, a validated table out, like ``runner extract``. ``schema``: a JSON Schema (a
    file or a dict), a Pydantic model class, or ``module:Class``. The table's rows: ``rows(report.name)``."""
    store = _store(db)
    with closing(store):
        job = Extraction(str(source), _schema_spec(store, schema, name or Path(source).stem), instructions,
                         text_column, id_column, many, model, name, max_output_tokens, max_input_tokens)  # fmt: skip
        settings = _settings(tier, None, None, None, None, max_spend, deadline, None, 0.02, gate, 5.0, False, fresh)
        return run_extraction(store, job, _limits(limits), settings, Credentials.from_env(base_url, api_key),
                              mode=mode, batch=BatchSettings(poll_min=poll_every), progress=progress,
                              say=on_event or silent, signals=False)  # fmt: skip


async def aextract(source: str | Path, **options: Any) -> ExtractReport:
    """``extract`` from async code (the extraction works in a worker thread with its own loop)."""
    return await anyio.to_thread.run_sync(functools.partial(extract, source, **options))


def rows(name: str, *, db: str | Path | None = None, model: type[Model] | None = None) -> list[Any]:
    """The table of extraction ``name``: dicts (the schema's fields and ``_source_id``, ``_row``, ``_status``,
    ``_reason``), or, given the Pydantic ``model``, instances of it for the rows that passed."""
    store = _store(db, readonly=True)
    with closing(store):
        table = list(store.extractions.extraction_rows(name))
    if model is None:
        return table
    validate = getattr(model, "model_validate", None)
    if validate is None:
        raise ConfigError(f"{model!r} is not a Pydantic model (it has no model_validate)")
    fields = set(getattr(model, "model_fields", {}))
    return [validate({k: _parsed(v) for k, v in r.items() if k in fields}) for r in table if r["_status"] != "failed"]


def status(name: str | None = None, *, db: str | Path | None = None, limits: str | Path | None = None) -> Status:
    """Where run ``name`` stands (default: the database's only run), like ``runner status``."""
    store = _store(db, readonly=True)
    with closing(store):
        return status_report(store, name, _limits(limits))


def spend(name: str | None = None, *, db: str | Path | None = None) -> Spend:
    """Money spent by run (``name``, or every run), model and service tier, like ``runner spend``."""
    store = _store(db, readonly=True)
    with closing(store):
        return spend_report(store, name)


def batches(
    name: str | None = None,
    *,
    db: str | Path | None = None,
    tier: str = "tier-1",
    action: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    limits: str | Path | None = None,
) -> Batches:
    """Run ``name``'s Batch API batches and the wave plan for what is pending, like ``runner batches``; ``action``
    "cancel" cancels its running batches first, "reconcile" collects the finished ones now."""
    if action not in (None, "cancel", "reconcile"):
        raise ConfigError(f"action {action!r}: give 'cancel', 'reconcile' or None")
    store = _store(db, readonly=action is None)
    with closing(store):
        table = _limits(limits)
        if action is not None:
            credentials = Credentials.from_env(base_url, api_key)
            manage_batches(store, name, table, RunSettings(tier=tier), credentials, action)
        return batches_report(store, name, table, tier)


def cancel(name: str | None = None, *, db: str | Path | None = None, custom_ids: Iterable[str] | None = None) -> int:
    """Withdraw run ``name``'s pending requests (all, or ``custom_ids``): never sent. Returns how many."""
    store = _store(db)
    with closing(store):
        return cancel_requests(store, name, custom_ids).cancelled


# -- plumbing -------------------------------------------------------------------------------------------------------


def _store(db: str | Path | None, readonly: bool = False) -> Store:
    return Store(db or default_db_path(), readonly=readonly)


def _limits(path: str | Path | None) -> Limits:
    return load_limits(None if path is None else str(path))


def _seconds(deadline: float | str | None) -> float | None:
    if deadline is None or isinstance(deadline, int | float):
        return deadline
    try:
        return parse_duration(deadline)
    except ValueError as exc:
        raise ConfigError(f"deadline {deadline!r}: {exc}") from exc


def _settings(
    tier: str, rpm: int | None, tpm: int | None, rpd: int | None, queue: int | None, max_spend: Money | None,
    deadline: float | str | None, concurrency: int | None, headroom: float, gate: str | None, grace: float,
    retry_failed: bool, fresh: bool,
) -> RunSettings:  # fmt: skip
    seconds = _seconds(deadline)
    gate = gate or os.environ.get("RUNNER_GATE") or "host"
    problem = None if gate in ("host", "none") else redis_url_problem(gate)
    if problem:
        raise ConfigError(f"gate: {problem}")
    return RunSettings(
        tier=tier, rpm=rpm, tpm=tpm, rpd=rpd, batch_queue_tokens=queue, headroom=headroom, gate=gate,
        concurrency=concurrency, max_spend=None if max_spend is None else from_usd(Decimal(str(max_spend))),
        deadline=None if seconds is None else time.time() + seconds, grace_seconds=grace, retry_failed=retry_failed,
        reuse=not fresh,
    )  # fmt: skip


def _job_file(store: Store, job: str | Path | Iterable[Mapping[str, Any]], name: str | None) -> Path:
    """A job file as given, or request dicts written as one (private, next to the database: a re-run with the
    same requests resumes the same run; appended requests are added)."""
    if isinstance(job, str | Path):
        return Path(job)
    if not name:
        raise ConfigError("name= is needed when the job is request dicts, not a file (the run's name)")
    path = Path(store.path + ".jobs") / f"{name}.jsonl"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, (json.dumps(dict(line), ensure_ascii=False) for line in job))
    return path


def _schema_spec(store: Store, schema: str | Path | Mapping[str, Any] | type, name: str) -> str:
    """``schema`` as ``runner extract --schema`` takes it: a file, or ``module:Class``; a dict or a model class
    is written as a JSON Schema file next to the database."""
    if isinstance(schema, str | Path):
        return str(schema)
    if isinstance(schema, type):
        dump = getattr(schema, "model_json_schema", None)
        if dump is None:
            raise ConfigError(f"schema {schema!r} is not a Pydantic model (it has no model_json_schema)")
        schema = dump()
    path = Path(store.path + ".extract") / f"{name}.schema.json"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, [json.dumps(schema)])
    return str(path)


class _Follower:
    """Reads a run's results in steps: each step what is new, and whether the run is done (always, unless
    following it)."""

    def __init__(self, db: str | Path | None, name: str | None, follow: bool) -> None:
        self.db, self.name, self.follow = db, name, follow
        self.seen: set[int] = set()
        self.since: float | None = None
        self.started = False

    def step(self) -> tuple[list[Result], bool]:
        waiting = self.follow and not self.started  # the run may not have begun (``arun`` in another thread)
        try:
            store = _store(self.db, readonly=True)
        except RunnerError:
            if waiting:  # the database is being made
                return [], False
            raise
        with closing(store):
            if waiting:
                try:
                    self.started = self.name is None or store.runs.get(self.name) is not None
                except sqlite3.OperationalError:  # its tables are being made
                    return [], False
                if not self.started:
                    return [], False
            run = run_name(store, self.name)
            counts = store.requests.counts(run)
            done = not self.follow or (
                not (counts["pending"] + counts["in_flight"] + counts["batched"])
                and store.runs.owner_of(run)[1] != "alive"
            )  # read before the results: whatever it wrote before it was done is read below
            found = [r for r in store.results.of(run, self.since) if r["request_id"] not in self.seen]
        self.seen.update(r["request_id"] for r in found)
        if found:  # transactions commit a little out of the order of their stamps: look back a few seconds
            self.since = max(r["created_at"] for r in found) - 5.0
        return [_result(r) for r in found], done


def _result(row: Mapping[str, Any]) -> Result:
    body: Any = None
    if row["body"] is not None:
        try:
            body = json.loads(row["body"])
        except ValueError:
            body = {"text": row["body"]}
    usage = body.get("usage") if isinstance(body, dict) else None
    error = f"{row['error_code']}: {row['error_message']}" if row["outcome"] == "failed" else None
    return Result(row["custom_id"], row["outcome"], body if isinstance(body, dict) else None,
                  usage if isinstance(usage, dict) else None, usd(int(row["cost"])), error,
                  row["reused_from"] is not None, row["status_code"])  # fmt: skip


def _report(store: Store, outcome: RunOutcome) -> RunReport:
    return RunReport(outcome.name, dict(outcome.counts), usd(store.results.total_cost(outcome.name)), outcome.stopped,
                     tuple(outcome.notices), tuple(outcome.ingest.refused))  # fmt: skip


def _parsed(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
