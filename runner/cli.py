"""The ``runner`` command: parses arguments, delegates to ``runner.commands``, prints ``runner.render``'s lines, exits
with design.md's codes.

0 all answered · 1 some requests failed permanently · 2 usage or configuration error · 3 stopped early, resumable.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from runner import commands, render
from runner.durations import parse_duration
from runner.errors import RunnerError
from runner.events import to_stderr
from runner.limits import load_limits
from runner.logs import configure
from runner.money import from_usd
from runner.redis_gate import redis_url_problem
from runner.settings import BatchSettings, RunSettings
from runner.store import Store, default_db_path
from runner.transport import Credentials

__all__ = ["main"]

db_option = click.option("--db", default=None, help="SQLite database (default: $RUNNER_DB or ./runner.db).")
name_option = click.option("--name", default=None, help="Run name (default: the only run in the database).")
limits_option = click.option("--limits", "limits_path", default=None, help="tier_limits.json to use.")
base_url_option = click.option("--base-url", default=None, help="API base URL (default: $OPENAI_BASE_URL or OpenAI).")
progress_option = click.option(
    "--progress/--no-progress", default=None, help="Live progress on stderr (default: when a TTY)."
)


class GateType(click.ParamType[str]):
    """``--gate``: host, none, or a Redis URL (redis://, rediss://, unix://)."""

    name = "host|none|redis://HOST:PORT/DB"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if text in ("host", "none"):
            return text
        problem = redis_url_problem(text)
        if problem:
            self.fail(problem, param, ctx)
        return text


gate_option = click.option(
    "--gate",
    type=GateType(),
    default="host",
    show_default=True,
    envvar="RUNNER_GATE",
    help="Share each limit with the other runner processes that use the same key. host: those on this host (a "
    "gate file); redis://[:PASSWORD@]HOST:PORT/DB (or rediss:// with TLS): those on every host that names this "
    "Redis; none: pace alone.",
)
fresh_option = click.option(
    "--fresh",
    is_flag=True,
    help="Send every request, even one whose endpoint and body were answered before in this database (by default "
    "that answer is reused, at $0).",
)
poll_every_option = click.option(
    "--poll-every",
    type=click.FloatRange(min=0.01),
    default=10.0,
    show_default=True,
    help="Batch mode: seconds before the first poll of a batch (backs off to 5 minutes).",
)
verbose_option = click.option(
    "-v", "--verbose", is_flag=True, help="Log every request, retry, pause and batch on stderr."
)


def _store(db: str | None, readonly: bool = False) -> Store:
    """The database; read commands open it without writing (they work on a read-only disk too)."""
    return Store(db or default_db_path(), readonly=readonly)


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
    default=None,
    help="Most requests in flight at once (default: the tier's rate x the latency, by Little's law).",
)
@click.option(
    "--headroom",
    type=click.FloatRange(0, 0.9),
    default=0.02,
    show_default=True,
    help="Fraction of each limit left unused.",
)
@gate_option
@base_url_option
@poll_every_option
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="After Ctrl-C, SIGTERM, --deadline or --max-spend: seconds what is in flight may take to finish.",
)
@click.option("--retry-failed", is_flag=True, help="Retry every failed request (default: those time may cure).")
@fresh_option
@progress_option
@verbose_option
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
    concurrency: int | None,
    headroom: float,
    gate: str,
    base_url: str | None,
    poll_every: float,
    grace: float,
    retry_failed: bool,
    fresh: bool,
    progress: bool | None,
    verbose: bool,
) -> None:
    """Run (or resume) the requests in INPUT.jsonl: sync (paced), batch (Batch API, half price) or auto."""
    configure(verbose)
    if mode != "sync":
        import runner.batch.api  # noqa: F401  (the openai SDK takes a second: before the deadline counts)
    limits = load_limits(limits_path)
    seconds = _duration(deadline)
    settings = RunSettings(
        tier=tier,
        rpm=rpm,
        tpm=tpm,
        rpd=rpd,
        batch_queue_tokens=batch_queue_tokens,
        headroom=headroom,
        gate=gate,
        concurrency=concurrency,
        max_spend=_usd(max_spend),
        deadline=None if seconds is None else time.time() + seconds,
        grace_seconds=grace,
        retry_failed=retry_failed,
        reuse=not fresh,
    )
    store = _store(db)
    outcome = commands.run_job(
        store,
        input_path,
        limits,
        settings,
        Credentials.from_env(base_url),
        name=name,
        default_model=model,
        mode=mode,
        batch=BatchSettings(poll_min=poll_every),
        progress=progress,
        say=to_stderr,
    )
    _finish(outcome, store)


def _finish(outcome: commands.RunOutcome, store: Store) -> None:
    lines = render.run_summary(
        outcome.name,
        outcome.counts,
        store.results.total_cost(outcome.name),
        outcome.notices,
        None if outcome.stopped is None else str(outcome.stopped),
        store.results.failures(outcome.name, 3),
        store.path,
    )
    for line in lines:
        click.echo(line, err=True)
    sys.exit(outcome.exit_code)


@cli.command()
@db_option
@name_option
@limits_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(db: str | None, name: str | None, limits_path: str | None, as_json: bool) -> None:
    """Where a run stands: requests by state, spend, batches and the wave plan, first failures."""
    report = commands.status_report(_store(db, readonly=True), name, load_limits(limits_path))
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
        return
    for line in render.status_lines(report):
        click.echo(line)


@cli.command()
@db_option
@name_option
@limits_option
@click.option("--tier", default="tier-1", show_default=True, help="Tier whose batch queue limit plans the waves.")
@click.option("--cancel", "action", flag_value="cancel", help="Cancel the run's running batches.")
@click.option("--reconcile", "action", flag_value="reconcile", help="Collect the run's finished batches now.")
@base_url_option
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
    store = _store(db, readonly=action is None)
    limits = load_limits(limits_path)
    if action:
        touched = commands.manage_batches(
            store, name, limits, RunSettings(tier=tier), Credentials.from_env(base_url), action
        )
        click.echo(f"{action}: {touched} batches", err=True)
    report = commands.batches_report(store, name, limits, tier)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
        return
    for line in render.batches_lines(report):
        click.echo(line)


@cli.command()
@db_option
@name_option
@click.option("--custom-id", "custom_ids", multiple=True, help="Cancel only this request (repeatable).")
def cancel(db: str | None, name: str | None, custom_ids: tuple[str, ...]) -> None:
    """Withdraw a run's pending requests (all, or --custom-id ones): they end cancelled and are never sent."""
    counts = commands.cancel_requests(_store(db), name, list(custom_ids) or None)
    click.echo(f"cancelled {counts.cancelled:,} pending requests", err=True)
    if counts.batched:
        click.echo(
            f"{counts.batched:,} are inside running batches: `runner batches --cancel` takes them back first",
            err=True,
        )


@cli.command()
@db_option
@name_option
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False), help="Write here instead of stdout.")
def results(db: str | None, name: str | None, output: str | None) -> None:
    """Results as OpenAI batch-output JSONL: one line per finished custom_id."""
    lines = commands.export_results(_store(db, readonly=True), name)
    if output is None:
        for line in lines:
            click.echo(line)
        return
    count = commands.write_private(Path(output), lines)
    click.echo(f"wrote {count:,} results to {output}", err=True)


@cli.command()
@db_option
@name_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def spend(db: str | None, name: str | None, as_json: bool) -> None:
    """Money spent, by run, model and service tier, from the recorded usage of every billed response."""
    report = commands.spend_report(_store(db, readonly=True), name)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
        return
    for line in render.spend_lines(report):
        click.echo(line)


@cli.command()
@click.argument("input_path", metavar="[INPUT.jsonl]", required=False, type=click.Path(dir_okay=False))
@name_option
@db_option
@limits_option
@click.option("--requests", type=click.IntRange(min=1), default=None, help="Plan this many requests alike ...")
@click.option("--input-tokens", type=click.IntRange(min=0), default=None, help="... of this many prompt tokens ...")
@click.option("--output-tokens", type=click.IntRange(min=0), default=None, help="... and output tokens each.")
@click.option(
    "--shared-prefix", type=click.IntRange(min=0), default=0, help="Prompt tokens every request starts with alike."
)
@click.option("--model", default=None, help="Model (default: the lines' own; gpt-4.1-mini for --requests).")
@click.option("--tier", default=None, help="The tier you are at (default: detected from the server's limits).")
@click.option("--deadline", default=None, help="When it must be done, e.g. 6h: marks the cheapest plan that makes it.")
@click.option("--headroom", type=click.FloatRange(0, 0.9), default=0.02, show_default=True)
@click.option(
    "--pilot",
    type=click.IntRange(min=1),
    default=None,
    help="First send this many requests of INPUT (sync; they count as done) and plan on their real output.",
)
@click.option("--base-url", default=None, help="API base URL for --pilot and the admin API.")
@click.option("--project", default=None, help="Project for the admin API (default: $OPENAI_PROJECT_ID).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--chart", default=None, type=click.Path(dir_okay=False), help="Draw the plan: a .png or .svg file.")
def plan(
    input_path: str | None,
    name: str | None,
    db: str | None,
    limits_path: str | None,
    requests: int | None,
    input_tokens: int | None,
    output_tokens: int | None,
    shared_prefix: int,
    model: str | None,
    tier: str | None,
    deadline: str | None,
    headroom: float,
    pilot: int | None,
    base_url: str | None,
    project: str | None,
    as_json: bool,
    chart: str | None,
) -> None:
    """How long a job takes and what it costs at each tier, sync or batch, and what one tier up would buy.

    Plan INPUT.jsonl, a stored run's pending requests (--name), or --requests N --input-tokens X
    --output-tokens Y. With OPENAI_ADMIN_KEY set, your project's own limits are read from the admin API."""
    limits = load_limits(limits_path)
    seconds = _duration(deadline)
    if chart is not None:
        from runner.chart import check_chart_path

        check_chart_path(chart)
    if pilot is not None and input_path is None:
        raise click.UsageError("--pilot needs INPUT.jsonl")
    ask = commands.PlanAsk(input_path, name, requests, input_tokens, output_tokens, shared_prefix, model)
    result, said = commands.plan_with(
        Path(db or default_db_path()), limits, ask, tier=tier, deadline=seconds, headroom=headroom, pilot=pilot,
        base_url=base_url, project=project, say=to_stderr,
    )  # fmt: skip
    if chart is not None:
        from runner.chart import draw

        draw(result, chart)
        said.append(f"chart: {chart}")
    if as_json:
        click.echo(json.dumps({**result.as_json(), "notes": said}, indent=2))
        return
    for line in said:
        click.echo(line, err=True)
    for line in render.plan_lines(result):
        click.echo(line)


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
@click.option(
    "--enforcement",
    type=click.Choice(["bucket", "fixed", "sliding"]),
    default="bucket",
    show_default=True,
    help="How the window is enforced: a token bucket refilled continuously, fixed clock windows, or a sliding log "
    "of the last window's requests.",
)
@click.option(
    "--headers",
    "header_reading",
    type=click.Choice(["minute", "bucket", "window", "none"]),
    default="minute",
    show_default=True,
    help="What x-ratelimit-* report: per-minute units, the enforcing bucket's level, a clock minute's count, none.",
)
@click.option(
    "--header-time",
    type=click.Choice(["answered", "sent"]),
    default="answered",
    show_default=True,
    help="When the headers are read: at the answer or at the request's admission.",
)
@click.option(
    "--background-load",
    type=click.FloatRange(0, 0.95),
    default=0.0,
    show_default=True,
    help="Share of every limit another client of the organisation uses (seen only in headers and 429s).",
)
@click.option(
    "--background-seconds",
    type=float,
    default=None,
    help="The other client of --background-load stops this many seconds after the simulator starts.",
)
@click.option(
    "--counting",
    default="tiktoken",
    show_default=True,
    help="What the TPM limit counts of a request: tiktoken (prompt + max output, corrected at the answer), chars "
    "(characters/4 + max output, corrected), chars-no-refund (never corrected), chars-max (the larger of "
    "characters/4 and max output, never corrected), xK (K x tiktoken, e.g. x1.5).",
)
@click.option("--latency-scale", type=float, default=1.0, show_default=True, help="0 answers at once.")
@click.option("--first-token", type=float, default=None, help="Seconds to the first token (default: the model's).")
@click.option("--tokens-per-second", type=float, default=None, help="Output speed (default: the model's; 0: instant).")
@click.option("--fault-rate", type=float, default=0.0, show_default=True, help="Share of requests given a fault.")
@click.option(
    "--flawed-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of structured-output answers that are not JSON, miss a field or are cut off.",
)
@click.option(
    "--hang-seconds", type=float, default=30.0, show_default=True, help="How long a timeout fault holds the request."
)
@click.option(
    "--batch-seconds", type=float, default=2.0, show_default=True, help="How long a batch takes (the 24 h, shrunk)."
)
@click.option(
    "--batch-line-error-rate", type=float, default=0.0, show_default=True, help="Share of batch lines given a 500."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the faults and answers.")
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
    enforcement: str,
    header_reading: str,
    header_time: str,
    background_load: float,
    background_seconds: float | None,
    counting: str,
    latency_scale: float,
    first_token: float | None,
    tokens_per_second: float | None,
    fault_rate: float,
    flawed_rate: float,
    hang_seconds: float,
    batch_seconds: float,
    batch_line_error_rate: float,
    seed: int,
    quota_usd: str | None,
    api_key: str | None,
    duration: float | None,
) -> None:
    """Serve the OpenAI simulator on loopback (point OPENAI_BASE_URL at it)."""
    from runner.sim import SimConfig
    from runner.sim.serve import serve

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"warning: serving on {host}: anyone who can reach this machine can use the simulator (it checks no key "
            "unless --api-key is given)",
            err=True,
        )

    config = SimConfig(
        tier=tier,
        limits=load_limits(limits_path),
        rpm=rpm,
        tpm=tpm,
        rpd=rpd,
        window=window,
        enforcement=enforcement,
        headers=header_reading,
        header_time=header_time,
        background=background_load,
        background_seconds=background_seconds,
        counting=counting,
        latency_scale=latency_scale,
        first_token_seconds=first_token,
        tokens_per_second=tokens_per_second,
        fault_rate=fault_rate,
        flawed_rate=flawed_rate,
        hang_seconds=hang_seconds,
        batch_seconds=batch_seconds,
        batch_line_error_rate=batch_line_error_rate,
        seed=seed,
        quota_usd=None if quota_usd is None else Decimal(quota_usd),
        api_key=api_key,
    )
    serve(config, host, port, duration)


@cli.command()
@db_option
@click.option("--tier", default="tier-1", show_default=True)
@progress_option
@verbose_option
def demo(db: str | None, tier: str, progress: bool | None, verbose: bool) -> None:
    """Run the bundled extraction job against an in-process simulator. No API key needed."""
    from runner.demo import run_demo

    configure(verbose)
    outcome, store = run_demo(db, tier, progress)
    click.echo(f"see the answers: runner results --db {store.path} --name demo | head -3", err=True)
    _finish(outcome, store)


@cli.command()
@click.argument("source")
@click.option("--schema", default=None, help="JSON Schema file, or a Pydantic model as module:Class.")
@click.option("--instructions", default=None, help="What to extract, in words (the system message).")
@click.option("--prompt-file", default=None, type=click.Path(dir_okay=False), help="The instructions, from a file.")
@click.option("--text-column", default=None, help="CSV / JSONL: the column with the document's text [text].")
@click.option("--id-column", default=None, help="CSV / JSONL: the column with the document's id [row number].")
@click.option("--many/--one", default=None, help="Each document may give several rows (an items array).")
@click.option("--model", default=None, help="Model [gpt-4.1-mini].")
@click.option("--mode", type=click.Choice(["sync", "batch", "auto"]), default=None, help="[sync]")
@click.option("--deadline", default=None, help="With --mode auto: when it must be done (e.g. 6h).")
@click.option("--max-spend", default=None, help="Hard cap in USD, repairs included.")
@click.option("--max-output-tokens", type=click.IntRange(min=1), default=None, help="Per answer [1000].")
@click.option("--max-input-tokens", type=click.IntRange(min=100), default=None, help="Split or refuse past this.")
@click.option("--tier", default=None, help="Usage tier [tier-1].")
@click.option("-o", "--output", default=None, help="Also write the table as .csv or .jsonl.")
@db_option
@click.option("--name", default=None, help="Extraction name (default: the source's stem).")
@limits_option
@gate_option
@base_url_option
@poll_every_option
@fresh_option
@progress_option
@verbose_option
def extract(source: str, db: str | None, limits_path: str | None, gate: str, base_url: str | None,
            poll_every: float, fresh: bool, progress: bool | None, verbose: bool, **given: Any) -> None:  # fmt: skip
    """Documents and a JSON schema in, a validated table out. SOURCE: a folder of .txt/.md files, a CSV or JSONL
    file with a text column, or a job spec (.toml) with the same keys as these options."""
    from runner.extract.job import Extraction
    from runner.extract.job import extract as run_extraction
    from runner.extract.spec import read_spec

    configure(verbose)
    spec = read_spec(source) if source.endswith(".toml") else {"source": source}
    spec.update({k: v for k, v in given.items() if v is not None})
    if "schema" not in spec:
        raise click.UsageError("--schema is required (or a spec file with schema = ...)")
    if "prompt_file" in spec:
        if "instructions" in spec:
            raise click.UsageError("give --instructions or --prompt-file, not both")
        spec["instructions"] = _read_text(spec.pop("prompt_file"))
    mode, deadline, tier = spec.pop("mode", "sync"), _duration(spec.pop("deadline", None)), spec.pop("tier", "tier-1")
    max_spend, output = _usd(spec.pop("max_spend", None)), spec.pop("output", None)
    if output is not None and Path(output).suffix.lower() not in (".csv", ".jsonl"):
        raise click.UsageError(f"-o {output}: give a .csv or .jsonl file")
    if mode != "sync":
        import runner.batch.api  # noqa: F401  (the openai SDK takes a second: before the deadline counts)
    job = Extraction(**spec)
    limits = load_limits(limits_path)
    settings = RunSettings(tier=tier, max_spend=max_spend, gate=gate, reuse=not fresh,
                           deadline=None if deadline is None else time.time() + deadline)  # fmt: skip
    store = _store(db)
    report = run_extraction(store, job, limits, settings, Credentials.from_env(base_url), mode=mode,
                            batch=BatchSettings(poll_min=poll_every), progress=progress, say=to_stderr)  # fmt: skip
    for line in render.extract_lines(report):
        click.echo(line, err=True)
    if output is not None:
        from runner.extract.output import write_table

        written = write_table(store, report.name, report.kinds, output)
        click.echo(f"wrote {written:,} rows to {output}", err=True)
    sys.exit(report.exit_code)


@cli.command()
@gate_option
@base_url_option
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def gate(gate: str, base_url: str | None, as_json: bool) -> None:
    """The runner processes sharing limits with a run that uses this key (on this host, or through --gate's
    Redis): what each admits of which limit."""
    members = commands.gate_members(Credentials.from_env(base_url), gate)
    if as_json:
        click.echo(json.dumps([m.__dict__ for m in members], indent=2))
        return
    for line in render.gate_lines(members):
        click.echo(line)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"{path}: cannot read it ({exc})") from exc


def main(argv: list[str] | None = None) -> Any:
    os.umask(0o077)  # the database, results and batch files hold prompts and answers: private to their owner
    signal.signal(signal.SIGTERM, _terminated)  # outside a run's event loop (which stops gracefully itself)
    try:
        return cli.main(args=argv, prog_name="runner", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(3)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except RunnerError as exc:
        click.echo(f"runner: error: {exc}", err=True)
        sys.exit(exc.exit_code)


def _terminated(number: int, frame: object) -> None:
    raise KeyboardInterrupt
