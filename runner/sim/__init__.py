"""A local OpenAI stand-in: see ``runner.sim.server`` (sync endpoints), ``files`` and ``batches``."""

from runner.sim.config import SimConfig
from runner.sim.server import Simulator
from runner.sim.thread import SimThread

__all__ = ["SimConfig", "SimThread", "Simulator"]
