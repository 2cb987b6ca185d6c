"""runner: push large amounts of work through the OpenAI API within a usage tier's limits, resumably.

The public surface is the ``runner`` command (``runner.cli``); the modules below are importable for tests and
embedding, one noun each: limits, tokens, store, jobfile, ratelimit, retry, pricing, transport, sync, sim.
"""

__version__ = "0.1.0"
