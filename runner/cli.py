"""The ``runner`` command: parses arguments, delegates to ``runner.app``, prints, exits with design.md's codes.

0 all answered · 1 some requests failed permanently · 2 usage or configuration error · 3 stopped early, resumable.
"""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from runner import app
from runner.batch import BatchSettings
from runner.durations import parse_duration
from runner.errors import RunnerError
from runner.limits import load_limits
from runner.money import fmt_usd, from_usd
from runner.store import Store, default_db_path
from runner.sync import RunSettings
from runner.transport import Credentials

__all__ = ["main"]

db_option = click.option("--db", default=None, help="SQLite database (default: $RUNNER_DB or ./runner.db).")
name_option = click.option("--name", default=None, help="Run name (default: the only run in the database).")
limits_option = click.option("--limits", "limits_path", default=None, help="tier_limits.json to use.")


def _store(db: str | None) -> Store:
    return Store(db or default_db_path())


def _usd(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        amount = Decimal(value.lstrip("$"))
    except InvalidOperation as exc:
        raise click.BadParameter(f"not an amount of dollars: {value!r}") from exc
    return from_usd(amount)


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runner")
def cli() -> None:
    """Push large amounts of work through the OpenAI API within your tier's limits, resumably."""


@cli.command()
@click.argument("input_path", metavar="INPUT.jsonl", type=click.Path(dir_okay=False))
@name_option
@db_option
@limits_option
@click.option("--tier", default="tier-1", show_default=True, help="Usage tier whose limits to keep under.")
@click.option("--model", default=None, help="Model for lines whose body names none.")
@click.option("--mode", type=click.Choice(["sync", "batch", "auto"]), default="sync", show_default=True)
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute instead of the tier's.")
@click.option("--tpm", type=click.IntRange(min=1), default=None, help="Tokens per minute instead of the tier's.")
@click.option("--rpd", type=click.IntRange(min=1), default=None, help="Requests per day instead of the tier's.")
@click.option(
    "--batch-queue-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Batch queue limit (enqueued tokens per model) instead of the tier's.",
)
@click.option("--max-spend", default=None, help="Stop (resumably) once this many USD are spent, e.g. 12.50.")
@click.option("--deadline", default=None, help="Stop (resumably) after this long, e.g. 90m or 2h.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="Most requests in flight at once (the runner sizes it from rate x latency below this).",
)
@click.option(
    "--headroom",
    type=click.FloatRange(0, 0.9),
    default=0.03,
    show_default=True,
    help="Fraction of each limit left unused.",
)
@click.option("--base-url", default=None, help="API base URL (default: $OPENAI_BASE_URL or OpenAI).")
@click.option(
    "--poll-every",
    type=click.FloatRange(min=0.01),
    default=10.0,
    show_default=True,
    help="Batch mode: seconds before the first poll of a batch (backs off to 5 minutes).",
)
@click.option("--progress/--no-progress", default=None, help="Live progress on stderr (default: when a TTY).")
def run(
    input_path: str,
    name: str | None,
    db: str | None,
    limits_path: str | None,
    tier: str,
    model: str | None,
    mode: str,
    rpm: int | None,
    tpm: int | None,
    rpd: int | None,
    batch_queue_tokens: int | None,
    max_spend: str | None,
    deadline: str | None,
    concurrency: int,
    headroom: float,
    base_url: str | None,
    poll_every: float,
    progress: bool | None,
) -> None:
    """Run (or resume) the requests in INPUT.jsonl: sync (paced), batch (Batch API, half price) or auto."""
    limits = load_limits(limits_path)
    seconds = _duration(deadline)
    settings = RunSettings(
        tier=tier,
        rpm=rpm,
        tpm=tpm,
        rpd=rpd,
        batch_queue_tokens=batch_queue_tokens,
        headroom=headroom,
        concurrency=concurrency,
        max_spend=_usd(max_spend),
        deadline=None if seconds is None else time.time() + seconds,
    )
    store = _store(db)
    outcome = app.run_job(
        store,
        input_path,
        limits,
        settings,
        Credentials.from_env(base_url),
        name,
        model,
        progress,
        mode=mode,
        batch=BatchSettings(poll_min=poll_every),
    )
    _finish(outcome, store)


def _finish(outcome: app.RunOutcome, store: Store) -> None:
    counts = outcome.counts
    total = sum(counts.values())
    line = (
        f"run {outcome.name}: {counts['succeeded']:,} succeeded, {counts['failed']:,} failed, "
        f"{counts['pending'] + counts['in_flight'] + counts['batched']:,} pending of {total:,}; "
        f"spent {fmt_usd(store.total_cost(outcome.name))}"
    )
    click.echo(line, err=True)
    for notice in dict.fromkeys(outcome.notices):
        click.echo(f"note: {notice}", err=True)
    if outcome.stopped is not None:
        click.echo(f"stopped: {outcome.stopped}", err=True)
    elif counts["failed"]:
        for custom_id, reason in store.failures(outcome.name, 3):
            click.echo(f"  failed {custom_id}: {reason}", err=True)
        click.echo(f"see every failure: runner results --db {store.path} --name {outcome.name}", err=True)
    sys.exit(outcome.exit_code)


@cli.command()
@db_option
@name_option
@limits_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(db: str | None, name: str | None, limits_path: str | None, as_json: bool) -> None:
    """Where a run stands: requests by state, spend, batches and the wave plan, first failures."""
    report = app.status_report(_store(db), name, load_limits(limits_path))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    states = ", ".join(f"{k} {v:,}" for k, v in report["states"].items() if v)
    click.echo(f"run {report['run']} ({report['input']}): {report['total']:,} requests: {states or 'none'}")
    click.echo(f"spent ${report['spend_usd']}" + ("; a process is working on it" if report["working"] else ""))
    if report["batches"]:
        click.echo("batches: " + ", ".join(f"{n} {s}" for s, n in sorted(report["batches"].items())))
    for p in report["wave_plan"]:
        if p["waves"]:
            click.echo(
                f"wave plan {p['model']}: {p['pending_requests']:,} pending, ~{p['pending_tokens']:,} tokens = "
                f"{p['waves']} more wave(s) under the queue limit of {p['queue_limit']:,}"
            )
    for failure in report["first_failures"]:
        click.echo(f"  failed {failure['custom_id']}: {failure['reason']}")


@cli.command()
@db_option
@name_option
@limits_option
@click.option("--tier", default="tier-1", show_default=True, help="Tier whose batch queue limit plans the waves.")
@click.option("--cancel", "action", flag_value="cancel", help="Cancel the run's running batches.")
@click.option("--reconcile", "action", flag_value="reconcile", help="Collect the run's finished batches now.")
@click.option("--base-url", default=None, help="API base URL (default: $OPENAI_BASE_URL or OpenAI).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def batches(
    db: str | None,
    name: str | None,
    limits_path: str | None,
    tier: str,
    action: str | None,
    base_url: str | None,
    as_json: bool,
) -> None:
    """A run's Batch API batches (status, counts, age) and the wave plan; --cancel or --reconcile them."""
    store = _store(db)
    limits = load_limits(limits_path)
    if action:
        touched = app.manage_batches(
            store, name, limits, RunSettings(tier=tier), Credentials.from_env(base_url), action
        )
        click.echo(f"{action}: {touched} batches", err=True)
    report = app.batches_report(store, name, limits, tier)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for b in report["batches"]:
        counts = b["counts"] or {}
        click.echo(
            f"chunk {b['chunk']:>4} {b['model']:<14} {b['requests']:>7,} requests  {b['state']:<9} "
            f"{(b['status'] or '-'):<11} done {counts.get('completed', 0):,} failed {counts.get('failed', 0):,}"
            f"  age {b['age_seconds']:,}s  {b['batch_id'] or ''} {b['note'] or ''}".rstrip()
        )
    for p in report["plan"]:
        waves = f"{p['waves']} wave(s) under the queue limit of {p['queue_limit']:,}" if p["waves"] else "no limit"
        click.echo(
            f"pending {p['model']}: {p['pending_requests']:,} requests, ~{p['pending_tokens']:,} tokens: {waves}"
        )
    if not report["batches"] and not report["plan"]:
        click.echo("no batches and nothing pending")


@cli.command()
@db_option
@name_option
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False), help="Write here instead of stdout.")
def results(db: str | None, name: str | None, output: str | None) -> None:
    """Results as OpenAI batch-output JSONL: one line per finished custom_id."""
    store = _store(db)
    lines = app.export_results(store, name)
    if output is None:
        for line in lines:
            click.echo(line)
        return
    with Path(output).open("w", encoding="utf-8") as f:
        count = 0
        for line in lines:
            f.write(line + "\n")
            count += 1
    click.echo(f"wrote {count:,} results to {output}", err=True)


@cli.command()
@db_option
@name_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def spend(db: str | None, name: str | None, as_json: bool) -> None:
    """Money spent, by run, model and service tier, from the recorded usage of every billed response."""
    report = app.spend_report(_store(db), name)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for r in report["rows"]:
        click.echo(
            f"{r['run']:<24} {r['model']:<16} {r['service_tier']:<9} {r['responses']:>9,} responses "
            f"{r['prompt_tokens']:>12,} in ({r['cached_tokens']:,} cached) {r['output_tokens']:>11,} out "
            f"${r['cost_usd']}"
        )
    click.echo(f"total ${report['total_usd']}")


@cli.command()
@limits_option
@click.option("--tier", default="tier-1", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8787, show_default=True)
@click.option("--rpm", type=int, default=None)
@click.option("--tpm", type=int, default=None)
@click.option("--rpd", type=int, default=None)
@click.option(
    "--window",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds over which a minute's limit is enforced (e.g. 1 for per-second enforcement).",
)
@click.option("--latency-scale", type=float, default=1.0, show_default=True, help="0 answers at once.")
@click.option("--fault-rate", type=float, default=0.0, show_default=True, help="Share of requests given a fault.")
@click.option("--quota-usd", default=None, help="Answer insufficient_quota once this much is billed.")
@click.option("--api-key", default=None, help="Require this key (401 otherwise).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def sim(
    limits_path: str | None,
    tier: str,
    host: str,
    port: int,
    rpm: int | None,
    tpm: int | None,
    rpd: int | None,
    window: float,
    latency_scale: float,
    fault_rate: float,
    quota_usd: str | None,
    api_key: str | None,
    duration: float | None,
) -> None:
    """Serve the OpenAI simulator on loopback (point OPENAI_BASE_URL at it)."""
    from runner.sim import SimConfig
    from runner.sim.serve import serve

    config = SimConfig(
        tier=tier,
        limits=load_limits(limits_path),
        rpm=rpm,
        tpm=tpm,
        rpd=rpd,
        window=window,
        latency_scale=latency_scale,
        fault_rate=fault_rate,
        quota_usd=None if quota_usd is None else Decimal(quota_usd),
        api_key=api_key,
    )
    serve(config, host, port, duration)


@cli.command()
@db_option
@click.option("--tier", default="tier-1", show_default=True)
@click.option("--progress/--no-progress", default=None)
def demo(db: str | None, tier: str, progress: bool | None) -> None:
    """Run the bundled extraction job against an in-process simulator. No API key needed."""
    from runner.demo import run_demo

    outcome, store = run_demo(db, tier, progress)
    click.echo(f"see the answers: runner results --db {store.path} --name demo | head -3", err=True)
    _finish(outcome, store)


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="runner", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(3)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except RunnerError as exc:
        click.echo(f"runner: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(3)
