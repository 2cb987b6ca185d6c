"""Files and batches endpoints of the simulator (issue 3). For now: none installed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from runner.sim.server import Simulator


class BatchService:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def install(self, app: web.Application) -> None:
        return None

    async def stop(self) -> None:
        return None
