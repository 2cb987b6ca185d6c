"""``--max-spend`` as a hard cap: the worst case of every request is reserved before it is sent or packed.

A request's worst case is its prompt at the full input price plus its output maximum (times n) at the output price
of the mode that sends it (standard, batch, or the service tier its body asks for). The reservation is released
when the real cost is known. Recorded spend plus what is reserved never passes the cap, so neither does the bill,
whatever the concurrency, retries or batch sizes: a request that does not fit is not sent, and the run stops with
exit 3 once nothing in flight can free room (a higher cap resumes it).
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.limits import ModelInfo
from runner.pricing import SERVICE_TIERS

__all__ = ["Budget", "worst_case"]


def worst_case(model: ModelInfo, prompt_tokens: int, output_tokens: int, n: int, tier: str = "standard") -> int:
    """Picodollars the request could cost at most: no cached input, every output token used."""
    prices = model.prices.get(SERVICE_TIERS.get(tier, tier), model.prices["standard"])
    return prompt_tokens * prices.input + output_tokens * n * prices.output


@dataclass
class Budget:
    """What may still be spent: ``cap`` (None: no cap) minus ``spent`` minus ``reserved`` (picodollars)."""

    cap: int | None
    spent: int = 0
    reserved: int = 0

    @property
    def left(self) -> int | None:
        return None if self.cap is None else self.cap - self.spent - self.reserved

    def reserve(self, amount: int) -> bool:
        """Hold ``amount`` for a request about to go; False (nothing held) when it does not fit under the cap."""
        if self.cap is not None and self.spent + self.reserved + amount > self.cap:
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: int, cost: int) -> None:
        """A request that held ``reserved`` cost ``cost`` (0: not billed)."""
        self.reserved -= reserved
        self.spent += cost
