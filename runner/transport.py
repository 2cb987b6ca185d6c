"""HTTP to the API for the sync hot path: aiohttp, one pooled session, the request body sent as stored.

Why not the openai SDK here: the runner sends bodies it already holds as JSON and stores answers as JSON, so the
SDK's request models and response parsing are pure cost; bench/throughput.py measures the difference on this
machine. The SDK (with ``DefaultAioHttpClient`` and ``max_retries=0``) serves the Batch API control plane.

Credentials follow the SDK's environment: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID``,
``OPENAI_PROJECT_ID``. The key goes into the Authorization header and nowhere else.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp
from multidict import CIMultiDictProxy

from runner.errors import ConfigError

__all__ = ["DEFAULT_BASE_URL", "Credentials", "Poster", "Reply", "Transport", "TransportError", "open_files_allowed"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Credentials:
    base_url: str
    api_key: str
    organization: str | None = None
    project: str | None = None

    def __repr__(self) -> str:  # never show the key
        return f"Credentials(base_url={self.base_url!r}, api_key='***')"

    @classmethod
    def from_env(cls, base_url: str | None = None, api_key: str | None = None) -> Credentials:
        url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if url == DEFAULT_BASE_URL:
                raise ConfigError("OPENAI_API_KEY is not set (or pass --base-url to use another server)")
            key = "unused"
        if not key.isprintable() or any(c.isspace() for c in key):
            raise ConfigError("OPENAI_API_KEY has a line break or a space in it: set it to the key alone")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"base URL {url!r} must start with http:// or https://")
        return cls(url, key, os.environ.get("OPENAI_ORG_ID"), os.environ.get("OPENAI_PROJECT_ID"))

    def headers(self) -> dict[str, str]:
        out = {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "User-Agent": "runner/0.1",
        }
        if self.organization:
            out["OpenAI-Organization"] = self.organization
        if self.project:
            out["OpenAI-Project"] = self.project
        return out


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    seconds: float


class TransportError(Exception):
    """No HTTP answer: ``kind`` is timeout or connection."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind, self.detail = kind, detail
        super().__init__(f"{kind}: {detail}")


class Poster(Protocol):
    """What the sync executor sends through: ``Transport`` (aiohttp), or in tests any stand-in for the network, as
    httpx takes ``transport=MockTransport(...)``. ``post`` returns the HTTP answer, whatever its status, or raises
    ``TransportError`` when there is none."""

    async def post(self, endpoint: str, data: bytes) -> Reply: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def open_files_allowed() -> int:
    """How many files (connections) this process may hold open, raising the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return hard if soft == resource.RLIM_INFINITY else soft


class Transport:
    """One pooled aiohttp session. ``max_connections`` None: no pool limit (the executor bounds what is in flight,
    by Little's law)."""

    def __init__(self, credentials: Credentials, timeout: float = 600.0, max_connections: int | None = None) -> None:
        self.credentials = credentials
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 30.0))
        self.max_connections = max_connections
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Transport:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections or 0,
            limit_per_host=self.max_connections or 0,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers=self.credentials.headers(),
            timeout=self.timeout,
            raise_for_status=False,
        )
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.session is not None:
            await self.session.close()

    def url(self, endpoint: str) -> str:
        """``/v1/chat/completions`` -> ``{base_url}/chat/completions``."""
        return self.credentials.base_url + endpoint.removeprefix("/v1")

    async def post(self, endpoint: str, data: bytes) -> Reply:
        assert self.session is not None, "use Transport as an async context manager"
        started = time.monotonic()
        try:
            async with self.session.post(self.url(endpoint), data=data) as response:
                body = await response.read()
                return Reply(response.status, response.headers, body, time.monotonic() - started)
        except TimeoutError as exc:
            raise TransportError("timeout", f"no answer within {self.timeout.total:g}s") from exc
        except aiohttp.ClientError as exc:
            raise TransportError("connection", type(exc).__name__ + (f": {exc}" if str(exc) else "")) from exc

    async def get_json(self, path: str) -> Any:
        assert self.session is not None
        async with self.session.get(self.credentials.base_url + path) as response:
            return await response.json()
