"""runner: push large amounts of work through the OpenAI API within a usage tier's limits, resumably.

Two public surfaces: the ``runner`` command (``runner.cli``) and the Python API (``runner.api``, re-exported here:
``runner.run``, ``arun``, ``plan``, ``extract``, ``aextract``, ``rows``, ``results``, ``aresults``, ``status``,
``spend``, ``batches``, ``cancel``).
One noun per module:

    cli             parses the command line and delegates; prints what render gives it
    api             the Python API: the command's use cases as functions, typed results, silent by default
    commands        the use cases: run a job, status, batches, cancel, results, spend
    render          text for people: summaries, status, batch lists, spend
    reports         what the read commands report, as types (status, batches, spend, a cancellation)
    demo            the bundled job against an in-process simulator
    settings        how a run is worked: the limits the user set, budgets, timing knobs
    timing          where a run takes its time from (injected: tests use a fake clock)
    logs            -v log lines on stderr
    events          what a run says as it goes, to a callback (the command prints it; the API is silent)
    progress        the live progress line, and the Snapshot executors give it
    errors          the one exception tree, with exit codes
    limits          tier_limits.json: tiers, per-model limits, prices, speeds
    money           integer picodollars
    pricing         what an answer cost
    budget          --max-spend as a hard cap: worst cases reserved before sending or packing
    durations       Go durations (x-ratelimit-reset, deadlines)
    endpoints       one row per API endpoint: prompt counting, output keys, usage, schema, inputs
    encodings       tiktoken's encodings, offline and hash-checked
    tokens          what a request may consume: prompt tokens and output reservation
    caching         prompt caching as OpenAI describes it (the simulator bills by it, the planner expects it)
    jobfile         the input JSONL, ingested into the store
    inputline       one input line into the row ingest stores, or the problem that makes it unusable
    rows            a request as ingest stores it (a plain tuple), free of the store's dependencies
    parsers         a big input's lines parsed in child processes, one per core, rows back in file order
    retry           every retry decision, as pure functions
    stopping        why a run stops early (signal, deadline, takeover, ...): the executors' shared stop handling
    gate            pacing one model under RPM and TPM
    evidence        what the x-ratelimit-* headers say about other use of a limit
    candidates      every way the server might count a limit, judged by how well it predicts the readings
    gates           a run's gates by model, behind the Pacing interface
    redis_gate      the Redis gate: runner processes on several hosts share limits through one Redis
    transport       HTTP for the sync hot path (aiohttp)
    sync/           the sync executor: executor (the loop), inflight (the in-flight bound), daily (the day's
                    requests, for RPD), replies (what a reply means), recorder (outcomes to the store), tally
                    (what the run did, for progress)
    workload        what a plan is made for: a job file, a stored run's pending requests, or made-up figures
    planner         time and cost per tier, sync and batch; the decision of --mode auto
    detect          which tier the account is on: stated limits, the admin rate-limits endpoint
    chart           the plan as a picture (matplotlib, an optional extra)
    crash           named crash points (RUNNER_CRASH_AT) for the crash harness and kill -9 tests
    extract/        runner extract: sources, schema (strict), requests, answers, job, spec, output
    batch/          the Batch API mode: executor, collect (a finished batch), packing, queue (the batch queue's room),
                    reconcile (intents a killed process left), api (the openai SDK)
    store/          the SQLite database: states (the transition table), outcomes (what moves carry), base, runs,
                    requests, results, batches, history (what the planner learns), extractions, migrations, schema
                    (the README's description),
                    peers (the gate file runner processes on one host share their limits through)
    sim/            the OpenAI simulator: server, http, buckets, counting (its own token counts), cache, answers,
                    faults, files, batches, batch_input (a batch's input file checked), admin, config, thread, serve
"""

from runner import api
from runner.api import *  # noqa: F403  (the Python API is the package's surface: its __all__ is this one's)
from runner.errors import RunnerError

__all__ = ["RunnerError"]
__all__ += api.__all__
__version__ = "0.1.0"
