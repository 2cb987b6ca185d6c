"""The simulator as the sync executor's transport, without sockets, as httpx takes ``transport=MockTransport(...)``.

The simulator answers each request with its own pipeline (its counting, buckets, latency, faults, 429 bodies and
headers) on the caller's event loop and clock, so with ``FakeTime.timing(virtual_loop=True)`` a whole run plays out
on virtual time: minutes of pacing in milliseconds. Timeouts are the transport's, as aiohttp's are.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import anyio
from multidict import CIMultiDict, CIMultiDictProxy

from runner.sim import SimConfig
from runner.sim.server import Simulator
from runner.transport import Reply, TransportError

__all__ = ["InProcessAPI"]


class InProcessAPI:
    """``post`` asks the simulator; ``sim`` is there for its stats and scripts."""

    def __init__(self, timeout: float = 600.0, **config: Any) -> None:
        self.sim = Simulator(SimConfig(**config))
        self.timeout = timeout

    async def __aenter__(self) -> InProcessAPI:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        return None

    async def post(self, endpoint: str, data: bytes) -> Reply:
        started = asyncio.get_running_loop().time()
        try:
            with anyio.fail_after(self.timeout):
                response = await self.sim.call(endpoint, data)
        except TimeoutError as exc:
            raise TransportError("timeout", f"no answer within {self.timeout:g}s") from exc
        except ConnectionResetError as exc:
            raise TransportError("connection", f"ServerDisconnectedError: {exc}") from exc
        body = response.body if isinstance(response.body, bytes) else b""
        headers = CIMultiDictProxy(CIMultiDict(response.headers))
        return Reply(response.status, headers, body, asyncio.get_running_loop().time() - started)

    def stats(self) -> dict[str, Any]:
        return self.sim.stats.as_dict()
