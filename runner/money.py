"""Money without floats.

Amounts are integer **picodollars** (1e-12 USD). Prices are quoted in USD per 1M tokens, so a price of
``$0.40 / 1M`` is exactly 400,000 picodollars per token, and the cheapest published price ($0.0125 / 1M, gpt-5-mini
batch cached input) is 12,500: every token costs a whole number, sums are exact and SQLite stores them as INTEGER
(up to $9.2M per value).
"""

from __future__ import annotations

from decimal import Decimal

PICO_PER_USD = 10**12


def price_per_token(usd_per_million: Decimal) -> int:
    """Picodollars per token for a price in USD per 1M tokens; refuses prices finer than that grid."""
    pico = usd_per_million * PICO_PER_USD / 10**6
    if pico != pico.to_integral_value():
        raise ValueError(f"price {usd_per_million} per 1M tokens is finer than a picodollar per token")
    return int(pico)


def usd(pico: int) -> Decimal:
    """Picodollars as a Decimal amount of USD, exact."""
    return Decimal(pico) / PICO_PER_USD


def from_usd(amount: Decimal | str) -> int:
    """A USD amount (``"12.50"``) as picodollars."""
    return int(Decimal(amount) * PICO_PER_USD)


def fmt_usd(pico: int) -> str:
    """Human form: cents for large amounts, more digits for small ones (``$0.000123``)."""
    value = usd(pico)
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return f"${value:.6f}"
