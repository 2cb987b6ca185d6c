"""Shared fixtures: real simulators on free loopback ports, temporary databases, job files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_core import Config, OpenAPI

from runner.limits import Limits, load_limits
from runner.sim import SimConfig, SimThread
from runner.store import Store

ROOT = Path(__file__).resolve().parent.parent


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


SPEC = Path(__file__).resolve().parents[2] / "shared" / "openai-openapi" / "openapi.yaml"


@pytest.fixture(scope="session")
def openapi() -> OpenAPI:
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} not present")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open() as f:
        spec = yaml.load(f, Loader=loader)
    # The published spec fails strict spec validation (repeated "required" entries), and its discriminators
    # without a mapping name schemas that do not exist ("message"): validate answers with plain oneOf instead.
    _drop_unmapped_discriminators(spec)
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))


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


def runner_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
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
