"""A local OpenAI stand-in: see ``runner.sim.server``."""

from runner.sim.server import SimConfig, SimThread, Simulator

__all__ = ["SimConfig", "SimThread", "Simulator"]
