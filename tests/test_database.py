"""What goes wrong with a database file ends in one clear line and the documented exit code, with nothing lost."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runner.store import Store
from runner.store.migrations import known

from .conftest import ROOT, chat_line, write_jsonl

pytestmark = pytest.mark.slow  # each test runs the CLI in child processes, some several times


def cli(*args: str, env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
        check=False, **kw,
    )  # fmt: skip


def env_for(db: Path) -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": "sk-db-test", "RUNNER_DB": str(db)}


@pytest.fixture
def finished(tmp_path: Path, start_sim: Any) -> tuple[Path, Any]:
    """A database holding one finished run of 20 requests, and the simulator that answered them."""
    sim = start_sim(latency_scale=0, tier="tier-5")  # at Tier 5 twenty requests take no time to pace
    db = tmp_path / "done.db"
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line(f"r{i}") for i in range(20)])
    ran = cli("run", str(path), "--base-url", sim.base_url, "--tier", "tier-5", env=env_for(db))
    assert ran.returncode == 0, ran.stderr
    return db, sim


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"not a database at all " * 200), "is not a runner database, or it is damaged"),
        (lambda p: p.mkdir(), "is a folder, not a database file"),
        (lambda p: None, "does not exist"),  # its folder is missing
    ],
)
def test_an_unusable_database_is_a_clear_configuration_error(tmp_path: Path, make: Any, message: str) -> None:
    db = tmp_path / "missing" / "x.db" if message == "does not exist" else tmp_path / "x.db"
    make(db)
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a")])
    for args in (["run", str(path), "--base-url", "http://127.0.0.1:9"], ["status"]):
        ran = cli(*args, env=env_for(db))
        assert ran.returncode == 2 and message in ran.stderr, ran.stderr
        assert "Traceback" not in ran.stderr


def test_a_damaged_database_says_so(finished: tuple[Path, Any]) -> None:
    db, _ = finished
    with sqlite3.connect(db) as conn:  # fold the WAL in, then scribble over the table of tables (page 1)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    db.write_bytes(data[:100] + b"\xa5" * 400 + data[500:])
    ran = cli("status", env=env_for(db))
    assert ran.returncode == 2 and "damaged" in ran.stderr and "Traceback" not in ran.stderr, ran.stderr


def test_a_database_from_a_newer_runner_is_refused_naming_both_versions(finished: tuple[Path, Any]) -> None:
    db, _ = finished
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations(migration_set, name, applied_at) VALUES ('runner', 'm099_future', 'x')"
        )
    for args in (["status"], ["results"], ["spend"]):
        ran = cli(*args, env=env_for(db))
        assert ran.returncode == 2, ran.stderr
        assert f"written by a newer runner (schema m099_future; this runner knows up to {known()[-1]})" in ran.stderr


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` on a read-only disk: a read-only tmpfs where the system allows mounting, else no write
    permission (which binds a user that is not root)."""
    mount = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)]
    mounted = subprocess.run(mount, capture_output=True, check=False)
    if mounted.returncode == 0:
        yield
        subprocess.run(["umount", str(folder)], check=True)
        return
    folder.chmod(0o555)
    try:
        yield
    finally:
        folder.chmod(0o755)


def test_read_commands_work_on_a_read_only_disk(finished: tuple[Path, Any], tmp_path: Path) -> None:
    db, _ = finished
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    copy = tmp_path / "ro"
    copy.mkdir()
    content = db.read_bytes()
    with read_only(copy):
        if os.access(copy, os.W_OK):  # a tmpfs: fill it, then make it read-only
            (copy / "done.db").write_bytes(content)
            subprocess.run(["mount", "-o", "remount,ro", str(copy)], check=True)
        else:
            pytest.fail("could neither mount a read-only disk nor drop write permission")  # pragma: no cover
        env = env_for(copy / "done.db")
        status = cli("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["states"]["succeeded"] == 20
        results = cli("results", env=env)
        assert results.returncode == 0 and len(results.stdout.splitlines()) == 20
        assert cli("spend", env=env).returncode == 0
        ran = cli("run", str(ROOT / "jobs" / "demo.jsonl"), "--base-url", "http://127.0.0.1:9", env=env)
        assert ran.returncode == 2 and "cannot write the database" in ran.stderr, ran.stderr


def test_a_full_disk_stops_the_run_resumably_with_nothing_recorded_half_way(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, answer_words=(800, 800), tier="tier-5")
    db = tmp_path / "full.db"
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line(f"r{i:04d}", max_tokens=1200) for i in range(1500)])
    Store(db).close()
    # bytes any file of the process may grow to: past the tokenizer's file (3.6 MB), short of the database's
    limit = 5_000_000

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    fast = ("--base-url", sim.base_url, "--tier", "tier-5")
    ran = cli("run", str(path), *fast, env=env_for(db), preexec_fn=small_disk)
    assert ran.returncode == 3, ran.stderr
    assert "cannot write" in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
    store = Store(db, readonly=True)
    counts = store.requests.counts("job")
    answered = counts["succeeded"]
    lost = sim.call(lambda: sim.sim.stats.answered) - answered  # answers that came as the disk filled up
    assert 0 < answered < 1500
    assert rows(store) == (answered, answered)  # every final request has its result and its spend row, or neither
    store.close()
    resumed = cli("run", str(path), *fast, env=env_for(db))
    assert resumed.returncode == 0, resumed.stderr
    store = Store(db, readonly=True)
    assert store.requests.counts("job")["succeeded"] == 1500 and rows(store) == (1500, 1500)
    store.close()
    # paid twice: only the answers that could not be recorded
    assert sim.call(lambda: sim.sim.stats.answered) - 1500 == lost


def rows(store: Store) -> tuple[int, int]:
    """How many results and spend rows ``store`` holds."""
    with store.conn as conn:
        results = conn.execute("SELECT count(*) FROM results").fetchone()[0]
        spend = conn.execute("SELECT count(*) FROM spend").fetchone()[0]
    return results, spend


def test_files_holding_prompts_and_answers_are_private(finished: tuple[Path, Any], tmp_path: Path) -> None:
    db, _ = finished
    out = tmp_path / "results.jsonl"
    assert cli("results", "-o", str(out), env=env_for(db)).returncode == 0
    for file in (db, out, *tmp_path.glob("done.db-*")):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
