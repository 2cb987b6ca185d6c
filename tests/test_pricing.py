"""What an answer costs: exact, in integer picodollars."""

from __future__ import annotations

from decimal import Decimal

from runner.limits import Limits
from runner.money import price_per_token, usd
from runner.pricing import Usage, cost


def test_cost_is_exact_in_picodollars(limits: Limits) -> None:
    prices = limits.model("gpt-4.1-mini").prices["standard"]
    # 1,000 prompt tokens of which 512 cached, 100 out: 488*0.40 + 512*0.10 + 100*1.60 per 1M
    assert usd(cost(prices, Usage(1000, 512, 100))) == Decimal("0.0004064")
    assert price_per_token(Decimal("0.0125")) == 12_500
