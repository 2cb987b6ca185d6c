"""The use cases below the CLI (runner.commands), called directly: which run a command means, what --mode auto
chooses, cancelling, and files written private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from runner.commands import cancel_requests, choose_mode, run_name, write_private
from runner.errors import ConfigError
from runner.jobfile import ingest
from runner.limits import Limits
from runner.settings import RunSettings
from runner.store import Store

from .conftest import chat_line, write_jsonl


def stored(store: Store, limits: Limits, run: str, n: int, folder: Path) -> None:
    path = write_jsonl(folder / f"{run}.jsonl", [chat_line(f"{run}-{i}", f"Question {i}?") for i in range(n)])
    owner = store.runs.acquire(run, str(path))
    ingest(store, run, path, limits)
    store.runs.release(run, owner)


def test_a_command_works_on_the_only_run_or_the_one_named(tmp_path: Path, store: Store, limits: Limits) -> None:
    with pytest.raises(ConfigError, match="holds no runs yet"):
        run_name(store, None)
    stored(store, limits, "first", 2, tmp_path)
    assert run_name(store, None) == "first"
    stored(store, limits, "second", 2, tmp_path)
    with pytest.raises(ConfigError, match=r"several runs \(first, second\): name one \(--name\)"):
        run_name(store, None)
    assert run_name(store, "second") == "second"
    with pytest.raises(ConfigError, match=r"no run named 'third' .* \(runs: first, second\)"):
        run_name(store, "third")


def test_auto_mode_sends_sync_what_the_rate_limit_finishes_before_the_deadline(
    tmp_path: Path, store: Store, limits: Limits
) -> None:
    stored(store, limits, "job", 3_000, tmp_path)
    now = 1_800_000_000.0
    assert choose_mode(store, "job", limits, RunSettings(), "batch", now).batch_requests == 3_000
    roomy = choose_mode(store, "job", limits, RunSettings(deadline=now + 3_600), "auto", now)
    assert roomy.mode == "sync" and roomy.sync_requests == 3_000  # 3,000 at 500 RPM: 6 minutes
    tight = choose_mode(store, "job", limits, RunSettings(rpm=60, deadline=now + 25 * 3_600), "auto", now)
    assert tight.mode in ("split", "batch") and tight.batch_requests > 0, tight  # 50 h at 60 RPM: batches help
    assert tight.batch_requests + tight.sync_requests == 3_000
    store.requests.cancel("job", None)
    assert choose_mode(store, "job", limits, RunSettings(), "auto", now).reason == "auto: nothing pending"


def test_cancelling_withdraws_the_named_pending_requests_and_counts_what_is_left(
    tmp_path: Path, store: Store, limits: Limits
) -> None:
    stored(store, limits, "job", 5, tmp_path)
    cancelled = cancel_requests(store, None, ["job-1", "job-3", "not-there"])
    assert (cancelled.cancelled, cancelled.pending, cancelled.batched) == (2, 3, 0)
    assert cancel_requests(store, "job").cancelled == 3
    assert store.requests.counts("job")["cancelled"] == 5


def test_files_of_prompts_and_answers_are_written_for_their_owner_only(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text("old\n")
    os.chmod(out, 0o644)  # an existing file keeps its mode on open: it is made private too
    assert write_private(out, ["a", "b"]) == 2
    assert out.read_text() == "a\nb\n" and stat.S_IMODE(out.stat().st_mode) == 0o600
