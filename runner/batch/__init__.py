"""Batch mode: the same job through the Batch API at half the price (``executor``), packed into files under every
limit (``packing``), through the control plane (``api``, the only module that imports the openai SDK)."""
