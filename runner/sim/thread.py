"""A simulator serving from its own thread and event loop: for tests and for ``runner demo``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from runner.sim.config import SimConfig
from runner.sim.server import Simulator

__all__ = ["SimThread"]


class SimThread:
    """A simulator serving from its own thread and event loop: for tests and for ``runner demo``."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.sim = Simulator(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="runner-sim", daemon=True)
        self.base_url = ""

    def __enter__(self) -> SimThread:
        self.thread.start()
        self.base_url = asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the simulator's loop (its state is not thread-safe) and return its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)
