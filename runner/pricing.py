"""What a response cost: usage read from any endpoint's body, priced in picodollars at its service tier.

Cost = (prompt - cached) * input + cached * cached_input + output * output (reasoning tokens are inside output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.limits import ModelInfo, Prices

__all__ = ["Usage", "cost", "price_table", "usage_of"]

# what the API reports in a response's ``service_tier`` -> the price table that bills it
_SERVICE_TIERS = {
    "default": "standard",
    "auto": "standard",
    "scale": "standard",
    "flex": "flex",
    "priority": "fast",
    "fast": "fast",
    "batch": "batch",
}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.output_tokens


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_of(body: dict[str, Any]) -> Usage:
    """Usage of a chat completion, a Responses API response or an embeddings list."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return Usage()
    if "input_tokens" in usage:  # Responses API
        details = usage.get("input_tokens_details") or {}
        return Usage(_int(usage["input_tokens"]), _int(details.get("cached_tokens")), _int(usage.get("output_tokens")))
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        _int(usage.get("prompt_tokens")),
        _int(details.get("cached_tokens")),
        _int(usage.get("completion_tokens")),
    )


def price_table(model: ModelInfo, body: dict[str, Any], mode: str = "sync") -> tuple[str, Prices]:
    """The service tier name and prices that bill this response."""
    if mode == "batch":
        return "batch", model.prices["batch"]
    name = _SERVICE_TIERS.get(str(body.get("service_tier") or "default"), "standard")
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
