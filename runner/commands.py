"""Use cases behind the CLI: run a job, report status, list and manage batches, cancel requests, export results,
sum spend.

Each function takes plain values, does its work through the store and the executors, and returns a value or
raises a ``RunnerError``; the CLI only parses arguments and prints (``runner.render``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TextIO

import anyio

from runner.batch.executor import BatchExecutor
from runner.detect import admin_limits, detect, tier_for
from runner.errors import BudgetReached, ConfigError, DeadlineReached, DiskFull, RunnerError, StoppedEarly
from runner.events import Say, silent
from runner.gates import SharedGate, open_gate
from runner.jobfile import IngestReport, ingest
from runner.limits import Limits, RateLimits
from runner.money import fmt_usd, usd
from runner.planner import Decision, Plan, decide, plan
from runner.progress import Progress, Snapshot
from runner.redis_gate import RedisGate
from runner.reports import Batches, BatchInfo, Cancelled, Failure, Owner, Spend, SpendRow, Status, Wave
from runner.settings import BatchSettings, Lane, RunSettings
from runner.store import BatchState, Store
from runner.store.peers import Peer
from runner.sync import SyncExecutor
from runner.timing import Timing
from runner.transport import Credentials, Poster
from runner.workload import from_file, from_store, pending, synthetic

__all__ = [
    "RunOutcome",
    "batches_report",
    "cancel_requests",
    "export_results",
    "gate_members",
    "manage_batches",
    "run_job",
    "spend_report",
    "status_report",
    "write_private",
]

RUNNING = (BatchState.UPLOADING, BatchState.CREATING, BatchState.SUBMITTED)


@dataclass
class RunOutcome:
    name: str
    counts: dict[str, int]
    ingest: IngestReport
    stopped: RunnerError | None = None
    notices: list[str] = field(default_factory=list[str])

    @property
    def exit_code(self) -> int:
        if self.stopped is not None:
            return self.stopped.exit_code
        return 1 if self.counts["failed"] else 0


def choose_mode(store: Store, run: str, limits: Limits, settings: RunSettings, mode: str, now: float) -> Decision:
    """What this pass runs: ``mode`` as asked, or for ``auto`` the planner's choice for what is pending (the Batch
    API where it meets the deadline, the rate limit for the rest; see ``runner.planner.decide``)."""
    if mode != "auto":
        count = store.requests.pending_count(run)
        return Decision(mode, count if mode == "batch" else 0, count if mode == "sync" else 0, mode)
    if store.requests.pending_count(run) == 0:
        return Decision("sync", 0, 0, "auto: nothing pending")
    # to the whole second: "--deadline 24h" is 24 h, not the milliseconds less that have passed since it was read
    deadline = None if settings.deadline is None else float(math.ceil(max(settings.deadline - now, 0.0)))
    workload = pending(store, run, limits)
    stated = None
    if (settings.rpm, settings.tpm, settings.rpd) != (None, None, None):  # the limits the user set for this run
        stated = {
            p.model: limits.model(p.model).limits_for(settings.tier).override(settings.rpm, settings.tpm, settings.rpd)
            for p in workload.pools
        }
    return decide(workload, limits, settings.tier, deadline, settings.headroom, stated)


def spool_dir(store: Store, run: str) -> Path:
    return Path(store.path + ".spool") / run


def run_job(
    store: Store,
    input_path: str,
    limits: Limits,
    settings: RunSettings,
    credentials: Credentials,
    *,
    name: str | None = None,
    default_model: str | None = None,
    mode: str = "sync",
    batch: BatchSettings | None = None,
    progress: bool | None = None,
    say: Say = silent,
    timing: Timing | None = None,
    lane: Lane | None = None,
    signals: bool = True,
    transport: Poster | None = None,
) -> RunOutcome:
    """Ingest ``input_path`` into run ``name`` (default: the file's stem) and work it to the end or a stop.

    ``mode``: sync, batch or auto. A run may change mode between invocations; its results stay one per custom_id.
    ``timing``: where the executors take their time from (tests pass a fake clock). ``lane.most``: send at most
    that many requests in this pass (a pilot; sync mode). ``transport``: what sync requests go through (default:
    aiohttp to ``credentials.base_url``; tests pass the simulator in process).
    """
    timing = timing or Timing()
    limits.tier(settings.tier)
    run = name or Path(input_path).stem
    owner = store.runs.acquire(run, str(Path(input_path).resolve()), settings.takeover_seconds)
    stopped: RunnerError | None = None
    try:
        report = ingest(store, run, input_path, limits, default_model)
        for line, custom_id, reason in report.refused:
            say(f"{input_path}:{line}: request {custom_id!r} failed, not sent: {reason}")
        reopened = store.requests.reopen(run, every=settings.retry_failed)
        if reopened:
            which = "failed" if settings.retry_failed else "whose last failure time may cure (--retry-failed: all)"
            say(f"retrying {reopened:,} requests {which}")
        if settings.reuse:
            reused = store.results.reuse_answers(run)
            if reused.requests:
                say(f"reused {reused.requests:,} answers, saved {fmt_usd(reused.saved)} (--fresh sends them)")
        for model in store.requests.pending_models(
            run
        ):  # every model with work must have limits at the tier, before sending
            limits.model(model).limits_for(settings.tier)
        decision = choose_mode(store, run, limits, settings, mode, timing.wall())
        store.runs.set_settings(run, settings.tier, decision.mode)
        if mode == "auto":
            store.history.set_plan(run, {**decision.as_json(), "tier": settings.tier, "deadline": settings.deadline})
            say(f"auto: {decision.reason}")
        spool = spool_dir(store, run)
        boundary = store.requests.nth_pending_id(run, decision.batch_requests) if decision.mode == "split" else None
        shared, problem = open_gate(settings, credentials)
        batches = BatchExecutor(store, run, owner, limits, settings, batch or BatchSettings(), credentials, spool,
                                timing.wall, timing.sleep, lane=Lane(upto=boundary), shared=shared)  # fmt: skip
        sync = SyncExecutor(store, run, owner, limits, settings, credentials, None, timing.wall, timing.monotonic,
                            timing.sleep, lane=Lane(above=boundary or 0, most=(lane or Lane()).most),
                            shared=shared, transport=transport)  # fmt: skip
        if decision.mode == "batch":
            stopped = timing.run(_execute, (batches,), progress, shared, say if signals else None)
            notices = batches.notices
        elif decision.mode == "split":  # both lanes at once: batches run on the server while sync sends the rest
            both: tuple[Executor, ...] = (sync, batches)
            stopped = timing.run(_execute, both, progress, shared, say if signals else None)
            notices = sync.notices + batches.notices
        else:
            stopped, notices = _run_sync(store, run, sync, batches, progress, shared, say if signals else None, timing)
        notices = ([problem] if problem else []) + notices
    except BaseException:
        with contextlib.suppress(DiskFull):  # the run is left owned by this process, which is gone: taken over
            store.runs.release(run, owner, "error")
        raise
    try:
        store.runs.release(run, owner, None if stopped is None else type(stopped).__name__)
    except DiskFull as exc:  # as above; the next run takes it over
        stopped = stopped if isinstance(stopped, DiskFull) else exc
    counts = store.requests.counts(run)
    if isinstance(stopped, DeadlineReached | BudgetReached) and not (
        counts["pending"] + counts["in_flight"] + counts["batched"]
    ):
        stopped = None  # the stop came as the last requests were finishing (within the grace): nothing is left
    return RunOutcome(run, counts, report, stopped, store.takeovers + notices)


def _run_sync(
    store: Store,
    run: str,
    executor: SyncExecutor,
    batches: BatchExecutor,
    progress: bool | None,
    shared: SharedGate | None,
    signals: Say | None,
    timing: Timing,
) -> tuple[RunnerError | None, list[str]]:
    """A sync pass: first collect what batches of the run have finished, then send the rest."""
    if store.batches.batch_rows(run, RUNNING):
        timing.run(_collect_batches, batches)
    stopped = timing.run(_execute, (executor,), progress, shared, signals)
    still = store.requests.counts(run)["batched"]
    if stopped is None and still:
        stopped = StoppedEarly(
            f"{still:,} requests are in batches still running: re-run with --mode batch "
            "to collect them, or `runner batches --cancel` to take them back"
        )
    return stopped, executor.notices + batches.notices


class Executor(Protocol):
    """What a run's executors (``SyncExecutor``, ``BatchExecutor``) share: opened with ``async with``, worked by
    ``execute`` to the end or a stop, stopped gracefully by ``interrupt`` and at once by ``abort``, watched
    through ``snapshot`` and ``notices``."""

    @property
    def notices(self) -> list[str]: ...

    async def execute(self) -> RunnerError | None: ...

    def interrupt(self, reason: str) -> None: ...

    def abort(self) -> None: ...

    def snapshot(self) -> Snapshot: ...

    async def __aenter__(self) -> Executor: ...

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


async def _execute(
    executors: Sequence[Executor], progress: bool | None, shared: SharedGate | None = None, signals: Say | None = None
) -> RunnerError | None:
    """Join the gate shared with the other runners on the key, open the executors' connections, show the first
    one's progress, run them side by side to the end or a stop (when one stops, the others stop too). With
    ``signals`` (said to it; the main thread only), a first SIGINT or SIGTERM stops them gracefully, a second at
    once; both leave the run resumable."""
    outcomes: list[RunnerError | None] = [None] * len(executors)

    async def work(i: int) -> None:
        outcomes[i] = await executors[i].execute()
        if outcomes[i] is not None:
            for other in executors:
                other.interrupt(str(outcomes[i]))

    try:
        async with contextlib.AsyncExitStack() as stack:
            if shared is not None:  # left last: this process's part of the limits goes to the others at once
                await stack.enter_async_context(shared)
            for executor in executors:
                await stack.enter_async_context(executor)
            display = await stack.enter_async_context(Progress(executors[0].snapshot, progress))
            tg = await stack.enter_async_context(anyio.create_task_group())
            tg.start_soon(display.tick)
            if signals is not None:
                tg.start_soon(_signals, executors, signals)
            async with anyio.create_task_group() as workers:
                for i in range(len(executors)):
                    workers.start_soon(work, i)
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # a task group wraps what its tasks raise: one clear error, not a tree
        raise _first(group) from None
    return next((o for o in outcomes if o is not None), None)


async def _signals(executors: Sequence[Executor], say: Say) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        count = 0
        async for number in received:
            count += 1
            name = signal.Signals(number).name
            if count == 1:
                say(f"{name}: stopping; finishing what is in flight (a second signal stops at once)")
                for executor in executors:
                    executor.interrupt(name)
            else:
                say(f"{name}: stopping at once")
                for executor in executors:
                    executor.abort()


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a user should see in ``group``: its first RunnerError, else (a bug) the group itself."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc)
            if found is not exc:
                return found
        elif isinstance(exc, RunnerError | KeyboardInterrupt):
            return exc
    return group


async def _collect_batches(executor: BatchExecutor) -> None:
    async with executor:
        await executor.poll_once()


def run_name(store: Store, name: str | None) -> str:
    names = store.runs.names()
    if name:
        if name not in names:
            raise ConfigError(f"no run named {name!r} in {store.path} (runs: {', '.join(names) or 'none'})")
        return name
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError(f"{store.path} holds no runs yet")
    raise ConfigError(f"{store.path} holds several runs ({', '.join(names)}): name one (--name)")


def status_report(store: Store, name: str | None, limits: Limits | None = None) -> Status:
    """Where a run stands: requests by state, spend, owner, batches and the wave plan, first failures."""
    run = run_name(store, name)
    info = store.runs.get(run) or {}
    counts = store.requests.counts(run)
    batches: dict[str, int] = {}
    for row in store.batches.batch_rows(run):
        key = row.status or row.state.value
        batches[key] = batches.get(key, 0) + 1
    waves = batches_report(store, run, limits, info.get("tier")).plan if limits and batches else ()
    owner_state = store.runs.owner_of(run)[1]
    return Status(
        run=run,
        input=info.get("input_path"),
        total=sum(counts.values()),
        states=counts,
        spent=usd(store.results.total_cost(run)),
        working=owner_state == "alive",
        owner=Owner(info["owner"], owner_state) if info.get("owner") else None,
        last_stop=info.get("stop_reason"),
        tier=info.get("tier"),
        mode=info.get("mode"),
        plan=store.history.plan_of(run),
        batches=batches,
        wave_plan=waves,
        first_failures=tuple(Failure(c, r) for c, r in store.results.failures(run)),
    )


def batches_report(store: Store, name: str | None, limits: Limits, tier: str | None = None) -> Batches:
    """A run's batches (status, counts, age) and the wave plan for what is still pending."""
    run = run_name(store, name)
    now = time.time()
    rows = tuple(
        BatchInfo(
            r.chunk,
            r.model,
            r.requests,
            r.state.value,
            r.status,
            r.batch_id,
            json.loads(r.counts) if r.counts else None,
            r.note,
            round(now - r.created_at),
        )
        for r in store.batches.batch_rows(run)
    )
    plan = []
    for model, requests, tokens in store.requests.pending_by_model(run):
        limit = limits.model(model).limits_for(tier).batch_queue_tokens if tier else None
        plan.append(Wave(model, requests, tokens, limit, None if not limit else max(1, -(-tokens // limit))))
    return Batches(run, rows, tuple(plan))


def manage_batches(
    store: Store, name: str | None, limits: Limits, settings: RunSettings, credentials: Credentials, action: str
) -> int:
    """``cancel`` the run's running batches or ``reconcile`` (collect finished ones); returns batches touched."""
    run = run_name(store, name)
    owner = store.runs.acquire(run, None)
    try:
        executor = BatchExecutor(store, run, owner, limits, settings, BatchSettings(), credentials,
                                 spool_dir(store, run))  # fmt: skip

        async def go() -> int:
            async with executor:
                if action == "cancel":
                    return await executor.cancel_all()
                await executor.poll_once()
                return len(store.batches.batch_rows(run, [BatchState.DONE]))

        return anyio.run(go, backend="asyncio")
    finally:
        store.runs.release(run, owner)


def cancel_requests(store: Store, name: str | None, custom_ids: Iterable[str] | None = None) -> Cancelled:
    """Withdraw the run's pending requests (all, or ``custom_ids``): they end cancelled and are never sent.
    Requests in flight or in running batches are not touched; the report says how many there are."""
    run = run_name(store, name)
    owner = store.runs.acquire(run, None)
    try:
        wanted = list(custom_ids) if custom_ids is not None else None
        cancelled = store.requests.cancel(run, wanted)
    finally:
        store.runs.release(run, owner)
    counts = store.requests.counts(run)
    return Cancelled(cancelled, counts["batched"], counts["pending"])


def spend_report(store: Store, name: str | None = None) -> Spend:
    """Money spent, by run, model and service tier."""
    found = store.results.spend_by(name)
    rows = tuple(
        SpendRow(
            r["run"],
            r["model"],
            r["service_tier"],
            int(r["responses"]),
            int(r["prompt_tokens"]),
            int(r["cached_tokens"]),
            int(r["output_tokens"]),
            usd(int(r["cost"])),
        )
        for r in found
    )
    return Spend(usd(sum(int(r["cost"]) for r in found)), rows)


@contextlib.contextmanager
def private_file(path: str | Path) -> Iterator[TextIO]:
    """``path`` opened for writing text, readable by its owner only (prompts and answers are private)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode on open: make it private too
        yield f


def write_private(path: str | Path, lines: Iterable[str]) -> int:
    """Write ``lines`` to ``path``, readable by its owner only; returns how many."""
    count = 0
    with private_file(path) as f:
        for line in lines:
            f.write(line + "\n")
            count += 1
    return count


def export_results(store: Store, name: str | None) -> Iterator[str]:
    """OpenAI batch-output JSONL lines, one per final request, the same whichever mode answered."""
    run = run_name(store, name)
    for r in store.results.of(run):
        response = None
        if r["status_code"] is not None:
            body: Any = None
            if r["body"] is not None:
                try:
                    body = json.loads(r["body"])
                except ValueError:
                    body = r["body"]
            response = {"status_code": r["status_code"], "request_id": r["response_id"], "body": body}
        error = None
        if r["outcome"] == "failed":
            error = {"code": r["error_code"], "message": r["error_message"]}
        line = {
            "id": f"runner_req_{r['request_id']}",
            "custom_id": r["custom_id"],
            "response": response,
            "error": error,
        }
        yield json.dumps(line, ensure_ascii=False)


@dataclass(frozen=True)
class PlanAsk:
    """What ``runner plan`` is asked about: an input file, a stored run's pending requests, or plain figures."""

    input_path: str | None = None
    name: str | None = None
    requests: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    shared_prefix: int = 0
    model: str | None = None


def plan_job(
    store: Store | None,
    limits: Limits,
    ask: PlanAsk,
    *,
    tier: str | None = None,
    deadline: float | None = None,
    headroom: float = 0.02,
    stated: dict[str, RateLimits] | None = None,
    pilot: bool = False,
) -> tuple[Plan, list[str]]:
    """The plan for ``ask`` at every tier, and the lines to say first (tier detection, warnings).

    Expected output comes from answers already given (a pilot, an earlier run of the same job) where the database
    has them; batch times from the batches it has seen; the current tier from ``tier``, else from the limits
    servers stated (headers, the admin API)."""
    if tier is not None:
        limits.tier(tier)
    run = ask.name or (Path(ask.input_path).stem if ask.input_path else None)
    if ask.input_path:
        reused = None if store is None else functools.partial(store.results.answered, other_than=run)
        workload = from_file(ask.input_path, limits, ask.model, reused)
    elif ask.name:
        if store is None:
            raise ConfigError(f"no database to find run {ask.name!r} in")
        workload = from_store(store, run_name(store, ask.name), limits)
    else:
        if not (ask.requests and ask.input_tokens is not None and ask.output_tokens is not None):
            raise ConfigError("plan what? give INPUT.jsonl, --name RUN, or --requests, --input-tokens and "
                              "--output-tokens")  # fmt: skip
        workload = synthetic(limits, ask.model or "gpt-4.1-mini", ask.requests, ask.input_tokens, ask.output_tokens,
                             ask.shared_prefix)  # fmt: skip
    said: list[str] = []
    if workload.reused:
        said.append(f"{workload.reused:,} requests were answered before in this database: a run reuses those answers "
                    "at $0, so the plan leaves them out (runner run --fresh sends them again)")  # fmt: skip
    turnarounds: list[float] = []
    models = [p.model for p in workload.pools]
    if store is not None:
        if run is not None and run in store.runs.names():
            what = f"the pilot (run {run!r})" if pilot else f"run {run!r}"
            workload = workload.calibrated(store.history.calibration(run), what)
        turnarounds = store.history.turnarounds()
        if not stated:
            found = detect(store, limits, models, tier)
            tier = found.tier
            if found.said:
                said.append(found.said)
    if stated:
        tier, line = _admin_tier(limits, models, stated, tier)
        said.append(line)
    result = plan(workload, limits, headroom=headroom, deadline=deadline, current=tier, turnarounds=turnarounds,
                  stated=stated)  # fmt: skip
    return result, said


def plan_with(
    db: Path,
    limits: Limits,
    ask: PlanAsk,
    *,
    tier: str | None = None,
    deadline: float | None = None,
    headroom: float = 0.02,
    pilot: int | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    project: str | None = None,
    say: Say = silent,
) -> tuple[Plan, list[str]]:
    """``runner plan`` whole: a ``pilot`` of that many requests first (a real run of the job's first requests, in
    database ``db``), the project's own limits from the admin API when ``OPENAI_ADMIN_KEY`` is set, then the plan
    (``plan_job``), from what ``db`` knows if it exists."""
    store: Store | None = None
    try:
        if pilot is not None:
            if ask.input_path is None:
                raise ConfigError("a pilot needs the job file (INPUT.jsonl)")
            store = Store(db)
            settings = RunSettings(tier=tier or "tier-1", headroom=headroom)
            outcome = run_job(store, ask.input_path, limits, settings, Credentials.from_env(base_url, api_key),
                              name=ask.name, default_model=ask.model, lane=Lane(most=pilot), say=say)  # fmt: skip
            say(f"pilot: {outcome.counts['succeeded']:,} answered in run {outcome.name} "
                f"(spent {fmt_usd(store.results.total_cost(outcome.name))}; `runner run` sends the rest)")  # fmt: skip
            if outcome.stopped is not None:
                raise outcome.stopped
        elif db.is_file():
            store = Store(db, readonly=True)
        stated = None
        if os.environ.get("OPENAI_ADMIN_KEY"):
            url = Credentials.from_env(base_url, api_key="unused").base_url
            stated = admin_limits(url, project)
            if store is not None and not store.readonly:
                for model_name, row in stated.items():
                    store.history.state_limits(model_name, "admin", row.rpm, row.tpm, row.rpd, row.batch_queue_tokens)
        return plan_job(store, limits, ask, tier=tier, deadline=deadline, headroom=headroom, stated=stated,
                        pilot=pilot is not None)  # fmt: skip
    finally:
        if store is not None:
            store.close()


def _admin_tier(
    limits: Limits, models: list[str], stated: dict[str, RateLimits], claimed: str | None
) -> tuple[str | None, str]:
    """The tier to plan the project's own limits as (``claimed``, else the tier they match), and what to say."""
    own = [m for m in models if m in stated]
    matched = next((t for m in own if (t := tier_for(limits, m, stated[m].rpm, stated[m].tpm))), None)
    tier = claimed or matched
    line = f"your project's own limits (admin API) for {', '.join(own) or 'none of the models'}: " + (
        f"planned as {tier}" if tier else "they match no tier; pass --tier to plan on them"
    )
    if claimed and matched and matched != claimed:
        line += f" (warning: they are {matched}'s limits, not {claimed}'s)"
    return tier, line


def gate_members(credentials: Credentials, gate: str = "host") -> list[Peer]:
    """The runner processes sharing limits with ``credentials`` through ``gate`` (this host's gate file, or a
    Redis), each limit."""
    shared, problem = open_gate(RunSettings(gate=gate), credentials)
    if shared is None:
        raise ConfigError(problem or "--gate none shares nothing: name the gate (host, or a redis:// URL)")
    if isinstance(shared, RedisGate):
        return anyio.run(shared.members_once, backend="asyncio")
    try:
        return shared.members()
    finally:
        shared.close()
