"""What a response cost: usage read from any endpoint's body, priced in picodollars at its service tier.

Cost = (prompt - cached) * input + cached * cached_input + output * output (reasoning tokens are inside output).
"""

from __future__ import annotations

from typing import Any

from runner.endpoints import Usage, endpoint
from runner.limits import ModelInfo, Prices

__all__ = ["SERVICE_TIERS", "Usage", "cost", "price_table", "usage_of"]

# what the API reports (or a body asks for) as ``service_tier`` -> the price table that bills it
SERVICE_TIERS = {
    "default": "standard",
    "auto": "standard",
    "scale": "standard",
    "flex": "flex",
    "priority": "fast",
    "fast": "fast",
    "batch": "batch",
}


def usage_of(body: dict[str, Any], path: str) -> Usage:
    """Usage of an answer from endpoint ``path`` (chat completion, Responses API response, embeddings list)."""
    return endpoint(path).read_usage(body)


def price_table(model: ModelInfo, body: dict[str, Any], mode: str = "sync") -> tuple[str, Prices]:
    """The service tier name and prices that bill this response."""
    if mode == "batch":
        return "batch", model.prices["batch"]
    name = SERVICE_TIERS.get(str(body.get("service_tier") or "default"), "standard")
    if name not in model.prices:
        name = "standard"
    return name, model.prices[name]


def cost(prices: Prices, usage: Usage) -> int:
    """Picodollars for ``usage`` at ``prices``."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    return (
        (usage.prompt_tokens - cached) * prices.input
        + cached * prices.cached_input
        + usage.output_tokens * prices.output
    )
