"""Schema of the runner database, as named migrations applied on open. Never edit one; add the next."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

__all__ = ["known", "migrations"]

migrations = Migrations("runner")


@migrations()
def m001_initial(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE runs (
            name            TEXT PRIMARY KEY,
            input_path      TEXT,
            created_at      REAL NOT NULL,
            ingest_bytes    INTEGER NOT NULL DEFAULT 0,   -- bytes of the input already stored
            ingest_sha256   TEXT,                         -- hash of those bytes: appended lines are detected
            ingest_lines    INTEGER NOT NULL DEFAULT 0,
            owner           TEXT,                         -- pid@host:token of the live process, or NULL
            heartbeat_at    REAL,
            stop_reason     TEXT
        )"""
    )
    db.execute(
        """
        CREATE TABLE requests (
            id              INTEGER PRIMARY KEY,
            run             TEXT NOT NULL REFERENCES runs(name),
            custom_id       TEXT NOT NULL,
            line            INTEGER NOT NULL,             -- 1-based line of the input file
            endpoint        TEXT NOT NULL,
            model           TEXT NOT NULL,
            body            TEXT NOT NULL,                -- the request body, JSON, as sent
            body_hash       TEXT NOT NULL,
            prompt_tokens   INTEGER NOT NULL,             -- estimate, tiktoken
            output_tokens   INTEGER NOT NULL,             -- reservation per choice
            n               INTEGER NOT NULL DEFAULT 1,
            state           TEXT NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending','in_flight','batched','succeeded','failed','cancelled')),
            attempts        INTEGER NOT NULL DEFAULT 0,
            not_before      REAL NOT NULL DEFAULT 0,
            lease_owner     TEXT,
            lease_expires   REAL,
            batch_id        INTEGER,
            last_error      TEXT,
            updated_at      REAL NOT NULL,
            UNIQUE (run, custom_id)
        )"""
    )
    db.execute("CREATE INDEX requests_queue ON requests(run, state, not_before)")
    db.execute(
        """
        CREATE TABLE results (
            request_id      INTEGER PRIMARY KEY REFERENCES requests(id),  -- one result per request, ever
            run             TEXT NOT NULL,
            custom_id       TEXT NOT NULL,
            outcome         TEXT NOT NULL CHECK (outcome IN ('succeeded','failed')),
            status_code     INTEGER,                      -- NULL when no HTTP answer (e.g. batch_expired)
            response_id     TEXT,                         -- x-request-id or the batch line's request_id
            body            TEXT,                         -- the response body, JSON
            error_code      TEXT,
            error_message   TEXT,
            mode            TEXT NOT NULL CHECK (mode IN ('sync','batch')),
            created_at      REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX results_run ON results(run, custom_id)")
    db.execute(
        """
        CREATE TABLE spend (
            id              INTEGER PRIMARY KEY,
            run             TEXT NOT NULL,
            request_id      INTEGER NOT NULL REFERENCES requests(id),
            model           TEXT NOT NULL,
            service_tier    TEXT NOT NULL,                -- standard, batch, fast, flex
            prompt_tokens   INTEGER NOT NULL,
            cached_tokens   INTEGER NOT NULL,
            output_tokens   INTEGER NOT NULL,
            cost            INTEGER NOT NULL,             -- picodollars (1e-12 USD)
            created_at      REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX spend_run ON spend(run)")
    db.execute(
        """
        CREATE TABLE daily_usage (                        -- RPD / TPD survive restarts; shared by all runs
            model           TEXT NOT NULL,
            day             TEXT NOT NULL,                -- UTC date
            requests        INTEGER NOT NULL DEFAULT 0,
            tokens          INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (model, day)
        )"""
    )


@migrations()
def m002_batches(db: Database) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta(key, value) VALUES ('store_id', lower(hex(randomblob(6))))")
    db.execute("ALTER TABLE requests ADD COLUMN resubmits INTEGER NOT NULL DEFAULT 0")
    db.execute(
        """
        CREATE TABLE batches (                            -- one Batch API batch of a run, and its intent log
            id              INTEGER PRIMARY KEY,
            run             TEXT NOT NULL REFERENCES runs(name),
            chunk           INTEGER NOT NULL,             -- sequence number within the run (in the metadata)
            model           TEXT NOT NULL,
            endpoint        TEXT NOT NULL,
            state           TEXT NOT NULL CHECK (state IN
                            ('packed','uploading','uploaded','creating','submitted','done')),
            spool_path      TEXT NOT NULL,                -- the JSONL file as uploaded
            sha256          TEXT NOT NULL,
            bytes           INTEGER NOT NULL,
            requests        INTEGER NOT NULL,
            est_tokens      INTEGER NOT NULL,             -- counted against the batch queue limit
            input_file_id   TEXT,
            batch_id        TEXT,
            status          TEXT,                         -- the API's status, last seen
            output_file_id  TEXT,
            error_file_id   TEXT,
            counts          TEXT,                         -- request_counts, JSON
            note            TEXT,                         -- why it ended as it did
            polls           INTEGER NOT NULL DEFAULT 0,
            next_poll_at    REAL NOT NULL DEFAULT 0,
            created_at      REAL NOT NULL,
            updated_at      REAL NOT NULL,
            UNIQUE (run, chunk)
        )"""
    )
    db.execute("CREATE INDEX batches_open ON batches(run, state)")
    db.execute("CREATE INDEX requests_batch ON requests(batch_id)")


@migrations()
def m003_run_settings(db: Database) -> None:
    db.execute("ALTER TABLE runs ADD COLUMN tier TEXT")  # as last run, for status and the wave plan
    db.execute("ALTER TABLE runs ADD COLUMN mode TEXT")


@migrations()
def m004_retryable_failures(db: Database) -> None:
    # a failure that time may cure (connection, timeout, 5xx, rate limits, attempts or resubmissions exhausted):
    # the next run of the same command tries the request again
    db.execute("ALTER TABLE results ADD COLUMN retryable INTEGER NOT NULL DEFAULT 0")


@migrations()
def m005_planning(db: Database) -> None:
    # what the planner learns from runs: each sync answer's round trip, each batch's turnaround on the server,
    # the rate limits the server's headers (or its admin API) gave per model, and the plan a run was started with
    db.execute("ALTER TABLE results ADD COLUMN seconds REAL")  # sync: request sent to answer read
    db.execute("ALTER TABLE batches ADD COLUMN turnaround REAL")  # seconds from created_at to completed_at (server)
    db.execute("ALTER TABLE runs ADD COLUMN plan TEXT")  # JSON: the mode chosen and why (--mode auto)
    db.execute(
        """
        CREATE TABLE observed_limits (                  -- rate limits as the server stated them, per model
            model           TEXT NOT NULL,
            source          TEXT NOT NULL,                -- headers, admin (the project's rate_limits)
            rpm             INTEGER,
            tpm             INTEGER,
            rpd             INTEGER,
            batch_queue_tokens INTEGER,
            seen_at         REAL NOT NULL,
            PRIMARY KEY (model, source)
        )
        """
    )


@migrations()
def m006_claim_order(db: Database) -> None:
    # claiming takes the oldest due pending requests: with this index SQLite walks pending ids in order and stops
    # at the limit, instead of sorting every due row (0.2 s a claim at 1,000,000 pending)
    db.execute("CREATE INDEX requests_claim ON requests(run, state, id)")


@migrations()
def m007_one_queue_index(db: Database) -> None:
    # requests_claim serves every query of the queue (claims, counts, what is pending or due); the older index on
    # (run, state, not_before) only cost time on every insert and state move (packing 200,000: 4.2 s -> 2.7 s)
    db.execute("DROP INDEX requests_queue")


@migrations(transactional=False)
def m008_cheap_state_check(db: Database) -> None:
    # the state CHECK as comparisons: SQLite evaluates an IN list of more than two values by building a temporary
    # table on every insert and every state move (ingest of 1,000,000 requests: 8.5 -> 5.8 us a row). A CHECK can
    # only change by rebuilding the table (SQLite's documented 12 steps); foreign keys are off meanwhile, and the
    # whole rebuild is one transaction, so a crash leaves the old table and this migration pending
    old = "CHECK (state IN ('pending','in_flight','batched','succeeded','failed','cancelled'))"
    new = (
        "CHECK (state = 'pending' OR state = 'in_flight' OR state = 'batched'\n"
        "                            OR state = 'succeeded' OR state = 'failed' OR state = 'cancelled')"
    )
    db.execute("PRAGMA foreign_keys=OFF")
    try:
        with db.atomic():
            table = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='requests'").fetchone()[0]
            if old not in table:
                return
            indexes = [
                sql
                for (sql,) in db.execute(
                    "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name='requests' AND sql IS NOT NULL"
                )
            ]
            db.execute(table.replace(old, new).replace("CREATE TABLE requests", "CREATE TABLE requests_rebuilt", 1))
            db.execute("INSERT INTO requests_rebuilt SELECT * FROM requests")
            db.execute("DROP TABLE requests")
            db.execute("ALTER TABLE requests_rebuilt RENAME TO requests")
            for sql in indexes:
                db.execute(sql)
            broken = db.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise sqlite3.IntegrityError(f"rebuilding requests broke {len(broken)} references: {broken[:3]}")
    finally:
        db.execute("PRAGMA foreign_keys=ON")


@migrations()
def m009_reused_answers(db: Database) -> None:
    # a request whose endpoint and body were answered before (any run of the database) is not sent again: its
    # result is the earlier answer, pointing at the request that paid for it; found by body among the answered
    db.execute("ALTER TABLE results ADD COLUMN reused_from INTEGER REFERENCES requests(id)")
    db.execute("CREATE INDEX requests_answered_body ON requests(body_hash) WHERE state = 'succeeded'")


def known() -> list[str]:
    """The names of every migration this runner knows, in order."""
    return [m.name for m in migrations.pending(Database(memory=True))]
