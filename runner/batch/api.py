"""The Batch API control plane: files and batches through the openai SDK, with our one retry layer.

This is the only module that imports the openai SDK (its typed models and pagination earn their cost here; the
sync hot path uses aiohttp directly): importing it is deferred until batch mode runs. The SDK runs with
``max_retries=0`` and its aiohttp transport; each call here is retried on rate limits, 5xx, timeouts and
connection errors by the same decision table as the sync path (``runner.retry``), and a refused key or exhausted
quota becomes the runner's own ``AuthError`` / ``QuotaExhausted``. Control-plane calls are few, so an
``AsyncLimiter`` keeps them under a polite rate (uploads are limited to about 1,000 a minute by OpenAI).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

import anyio
import openai
from aiolimiter import AsyncLimiter
from openai.types import Batch

from runner.errors import AuthError, BatchAPIError, QuotaExhausted, Unreachable
from runner.retry import Action, Failure, RetryPolicy, decide, retry_after_seconds
from runner.transport import Credentials

__all__ = ["BatchAPI"]

T = TypeVar("T")


class BatchAPI:
    def __init__(
        self,
        credentials: Credentials,
        policy: RetryPolicy | None = None,
        calls_per_second: float = 20,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        seed: int | None = None,
    ) -> None:
        self.credentials = credentials
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.rng = random.Random(seed)
        self.pace = AsyncLimiter(calls_per_second, 1)
        self.client: openai.AsyncOpenAI | None = None

    async def __aenter__(self) -> BatchAPI:
        c = self.credentials
        self.client = openai.AsyncOpenAI(
            api_key=c.api_key,
            base_url=c.base_url,
            organization=c.organization,
            project=c.project,
            max_retries=0,
            timeout=120.0,
            http_client=openai.DefaultAioHttpClient(),
        )
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.client is not None:
            await self.client.close()

    @property
    def api(self) -> openai.AsyncOpenAI:
        assert self.client is not None, "use BatchAPI as an async context manager"
        return self.client

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` with retries; ``what`` names the call in errors."""
        attempt = 0
        while True:
            attempt += 1
            async with self.pace:
                try:
                    return await fn()
                except openai.APIStatusError as exc:
                    body = exc.body if isinstance(exc.body, dict) else {}
                    error = body.get("error", body) if isinstance(body, dict) else {}
                    message = str(error.get("message") or exc.message)
                    failure = Failure(
                        exc.status_code,
                        error.get("type"),
                        error.get("code"),
                        retry_after=retry_after_seconds(exc.response.headers, message),
                    )
                    problem = f"{what}: {exc.status_code} {error.get('message') or exc.message}"
                except openai.APITimeoutError:
                    failure, problem = Failure(kind="timeout"), f"{what}: timed out"
                except openai.APIConnectionError as exc:
                    failure, problem = Failure(kind="connection"), f"{what}: {exc}"
            decision = decide(failure, attempt, self.policy, self.rng)
            if decision.action is Action.STOP_QUOTA:
                raise QuotaExhausted(f"insufficient quota ({problem}); add credit, then re-run")
            if decision.action is Action.STOP_AUTH:
                raise AuthError(f"the API refused the key ({problem})")
            if decision.action is Action.FAIL and decision.exhausted:
                raise Unreachable(f"the Batch API did not answer ({problem}, {attempt} tries); nothing is lost: "
                                  "re-run the same command later")  # fmt: skip
            if decision.action is Action.FAIL:
                raise BatchAPIError(problem, failure.status)
            await self.sleep(decision.delay)

    async def upload(self, path: Path, filename: str) -> str:
        async def go() -> Any:
            with path.open("rb") as f:
                return await self.api.files.create(file=(filename, f), purpose="batch")

        return str((await self.call(f"upload {filename}", go)).id)

    async def find_file(self, filename: str, nbytes: int) -> str | None:
        """The id of an uploaded batch file named ``filename`` of ``nbytes`` bytes, if the server has one."""

        async def go() -> list[Any]:
            return [f async for f in self.api.files.list(purpose="batch")]

        for file in await self.call("list files", go):
            if file.filename == filename and file.bytes == nbytes:
                return str(file.id)
        return None

    async def files_named(self, prefix: str) -> list[tuple[str, str]]:
        async def go() -> list[Any]:
            return [f async for f in self.api.files.list(purpose="batch")]

        return [
            (str(f.id), str(f.filename)) for f in await self.call("list files", go) if f.filename.startswith(prefix)
        ]

    async def delete_file(self, file_id: str) -> None:
        await self.call(f"delete {file_id}", lambda: self.api.files.delete(file_id))

    async def create(self, file_id: str, endpoint: str, metadata: dict[str, str]) -> Batch:
        return await self.call(
            f"create batch from {file_id}",
            lambda: self.api.batches.create(
                input_file_id=file_id, endpoint=cast(Any, endpoint), completion_window="24h", metadata=metadata
            ),
        )

    async def find_batch(self, metadata: dict[str, str], newer_than: float) -> Batch | None:
        """The newest batch whose metadata holds every pair of ``metadata``, created after ``newer_than``."""

        async def go() -> Batch | None:
            async for batch in self.api.batches.list(limit=100):
                if batch.created_at < newer_than:
                    return None
                given = batch.metadata or {}
                if all(given.get(k) == v for k, v in metadata.items()):
                    return batch
            return None

        return await self.call("list batches", go)

    async def retrieve(self, batch_id: str) -> Batch:
        return await self.call(f"get {batch_id}", lambda: self.api.batches.retrieve(batch_id))

    async def cancel(self, batch_id: str) -> Batch:
        return await self.call(f"cancel {batch_id}", lambda: self.api.batches.cancel(batch_id))

    async def download(self, file_id: str, dest: Path) -> None:
        """Stream a file's content to ``dest`` (output files can be hundreds of MB)."""

        async def go() -> None:
            async with self.api.files.with_streaming_response.content(file_id) as response:
                await response.stream_to_file(dest)

        await self.call(f"download {file_id}", go)
