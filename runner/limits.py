"""tier_limits.json -> typed tiers, per-model limits and prices.

The file is data the user owns (tiers get renamed, limits change): nothing here hard-codes a tier or a number.
``load_limits`` validates the whole file and raises one ``ConfigError`` naming the key path of the first problem,
e.g. ``tier_limits.json: models.gpt-4.1-mini.limits.tier-1.tpm: expected a positive integer, got "lots"``.

Where the file is looked for, first hit wins: the explicit path, ``$RUNNER_TIER_LIMITS``, ``./tier_limits.json``,
then the copy shipped inside the package (``runner/data``, the repository's own file).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from runner.errors import ConfigError
from runner.money import from_usd, price_per_token, usd

__all__ = ["Limits", "ModelInfo", "Prices", "RateLimits", "Tier", "find_limits_file", "load_limits", "packaged"]

TOKENIZERS = ("o200k_base", "cl100k_base")
SERVICE_TIERS = ("standard", "batch", "fast", "flex")


@dataclass(frozen=True)
class Tier:
    name: str
    qualification: str
    monthly_usage_limit: int  # picodollars
    paid: int | None = None  # picodollars paid to the API to reach this tier
    days: int | None = None  # days since the first payment (older docs)

    def requirement(self) -> str:
        """What it takes to reach this tier, in words: ``$50 paid, 7+ days since the first payment``."""
        if not self.paid:
            return self.qualification or "see OpenAI's limits page"
        days = f", {self.days}+ days since the first payment" if self.days else ""
        return f"${usd(self.paid):,} paid{days}"


@dataclass(frozen=True)
class RateLimits:
    """One model's limits at one tier. ``None`` means no limit on that dimension."""

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    tpd: int | None = None
    batch_queue_tokens: int | None = None

    def override(self, rpm: int | None, tpm: int | None, rpd: int | None) -> RateLimits:
        """These limits with the user's --rpm/--tpm/--rpd in place of the tier's numbers."""
        return replace(
            self,
            rpm=self.rpm if rpm is None else rpm,
            tpm=self.tpm if tpm is None else tpm,
            rpd=self.rpd if rpd is None else rpd,
        )


@dataclass(frozen=True)
class Prices:
    """Picodollars per token."""

    input: int
    cached_input: int
    output: int


@dataclass(frozen=True)
class ModelInfo:
    name: str
    tokenizer: str
    endpoints: tuple[str, ...]
    context_window: int
    max_output_tokens: int
    prices: dict[str, Prices]
    limits: dict[str, RateLimits]
    long_context_above: int | None = None
    long_context_limits: dict[str, RateLimits] = field(default_factory=dict[str, RateLimits])
    max_input_tokens: int | None = None
    snapshot: str | None = None
    shutdown_date: str | None = None
    first_token_seconds: Decimal = Decimal("0.6")
    output_tokens_per_second: int = 90

    def is_long(self, input_tokens: int) -> bool:
        """Whether a request of ``input_tokens`` falls under the long-context row (priced and limited apart)."""
        return self.long_context_above is not None and input_tokens > self.long_context_above

    def limits_for(self, tier: str, input_tokens: int = 0) -> RateLimits:
        """The limits that apply at ``tier`` to a request of ``input_tokens`` (long-context rows above the line)."""
        if self.is_long(input_tokens):
            table, what = self.long_context_limits, "long-context limits"
        else:
            table, what = self.limits, "limits"
        if tier not in table:
            known = ", ".join(table) or "none"
            raise ConfigError(f"{self.name} has no {what} for tier {tier!r} in tier_limits.json (has: {known})")
        return table[tier]

    def expected_seconds(self, output_tokens: int) -> float:
        """Typical time to answer a request of ``output_tokens``: first token + tokens at the typical speed."""
        speed = self.output_tokens_per_second
        return float(self.first_token_seconds) + (output_tokens / speed if speed else 0.0)

    @property
    def input_limit(self) -> int:
        return self.max_input_tokens or self.context_window


@dataclass(frozen=True)
class Limits:
    """The whole of tier_limits.json, validated."""

    source: str
    tiers: dict[str, Tier]
    models: dict[str, ModelInfo]
    output_reservation_tokens: int

    def tier(self, name: str) -> Tier:
        if name not in self.tiers:
            raise ConfigError(f"unknown tier {name!r}; tiers in {self.source}: {', '.join(self.tiers)}")
        return self.tiers[name]

    def model(self, name: str) -> ModelInfo:
        """Model by name or dated snapshot (``gpt-4.1-mini-2025-04-14`` -> gpt-4.1-mini)."""
        if name in self.models:
            return self.models[name]
        for info in self.models.values():
            if info.snapshot == name:
                return info
        raise ConfigError(f"unknown model {name!r}; models in {self.source}: {', '.join(self.models)}")


def find_limits_file(explicit: str | None = None) -> Path:
    """The limits file to read: ``explicit`` (``--limits``), else ``$RUNNER_TIER_LIMITS``, else ``./tier_limits.json``,
    else the copy shipped inside the package. A file named explicitly or by the variable must exist."""
    for given, source in ((explicit, "--limits"), (os.environ.get("RUNNER_TIER_LIMITS"), "RUNNER_TIER_LIMITS")):
        if given:
            if not Path(given).is_file():
                raise ConfigError(f"{given}: no such limits file (named by {source})")
            return Path(given)
    local = Path("tier_limits.json")
    if local.is_file():
        return local
    return packaged("tier_limits.json")


def packaged(name: str) -> Path:
    """A data file shipped inside the package (runner/data), wherever the package is installed."""
    path = Path(str(resources.files("runner").joinpath("data", name)))
    if not path.is_file():
        raise ConfigError(f"{name} is missing from the installed package ({path}); reinstall runner")
    return path


def load_limits(path: str | Path | None = None) -> Limits:
    """Read and validate tier_limits.json; raises ConfigError naming the file and the key of the first problem."""
    file = find_limits_file(str(path) if path else None)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"), parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from exc
    return _Reader(str(file)).limits(raw)


class _Reader:
    """Validating reader; every accessor names the key path in its error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {problem}")

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {json.dumps(value, default=str)[:40]}")
        return value

    def key(self, parent: dict[str, Any], name: str, where: str) -> Any:
        if name not in parent:
            raise self.fail(f"{where}.{name}" if where else name, "missing")
        return parent[name]

    def count(self, value: Any, where: str, *, allow_zero: bool = False) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool) and (value > 0 or (allow_zero and value == 0))
        if not ok:
            kind = "a non-negative" if allow_zero else "a positive"
            raise self.fail(where, f"expected {kind} integer, got {json.dumps(value, default=str)}")
        return int(value)

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {json.dumps(value, default=str)}")
        return value

    def usd(self, value: Any, where: str) -> Decimal:
        try:
            amount = Decimal(str(value)) if isinstance(value, str | int | Decimal) else None
        except InvalidOperation:
            amount = None
        if amount is None or isinstance(value, bool) or not amount.is_finite() or amount < 0:
            raise self.fail(where, f'expected a price in USD like "0.40", got {json.dumps(value, default=str)}')
        return amount

    def limits(self, raw: Any) -> Limits:
        top = self.obj(raw, "top level")
        tiers: dict[str, Tier] = {}
        tier_list = self.key(top, "tiers", "")
        if not isinstance(tier_list, list) or not tier_list:
            raise self.fail("tiers", "expected a non-empty list of tiers")
        for i, item in enumerate(tier_list):
            where = f"tiers[{i}]"
            entry = self.obj(item, where)
            name = self.text(self.key(entry, "name", where), f"{where}.name")
            limit = self.usd(self.key(entry, "monthly_usage_limit_usd", where), f"{where}.monthly_usage_limit_usd")
            paid = entry.get("paid_usd")
            days = entry.get("days_since_first_payment")
            tiers[name] = Tier(
                name,
                str(entry.get("qualification", "")),
                from_usd(limit),
                None if paid is None else from_usd(self.usd(paid, f"{where}.paid_usd")),
                None if days is None else self.count(days, f"{where}.days_since_first_payment", allow_zero=True),
            )
        defaults = self.obj(top.get("defaults", {}), "defaults")
        reservation = self.count(defaults.get("output_reservation_tokens", 4096), "defaults.output_reservation_tokens")
        models_raw = self.obj(self.key(top, "models", ""), "models")
        models = {name: self.model(name, value, tiers) for name, value in models_raw.items()}
        if not models:
            raise self.fail("models", "no models")
        return Limits(self.source, tiers, models, reservation)

    def model(self, name: str, value: Any, tiers: dict[str, Tier]) -> ModelInfo:
        where = f"models.{name}"
        entry = self.obj(value, where)
        tokenizer = self.text(self.key(entry, "tokenizer", where), f"{where}.tokenizer")
        if tokenizer not in TOKENIZERS:
            raise self.fail(f"{where}.tokenizer", f"unknown tokenizer {tokenizer!r} (known: {', '.join(TOKENIZERS)})")
        endpoints = self.key(entry, "endpoints", where)
        if not isinstance(endpoints, list) or not all(isinstance(e, str) and e.startswith("/v1/") for e in endpoints):
            raise self.fail(f"{where}.endpoints", 'expected a list of paths like "/v1/chat/completions"')
        prices_raw = self.obj(self.key(entry, "prices", where), f"{where}.prices")
        prices: dict[str, Prices] = {}
        for service_tier, table in prices_raw.items():
            pw = f"{where}.prices.{service_tier}"
            if service_tier not in SERVICE_TIERS:
                raise self.fail(pw, f"unknown service tier (known: {', '.join(SERVICE_TIERS)})")
            t = self.obj(table, pw)
            values = [self.usd(self.key(t, k, pw), f"{pw}.{k}") for k in ("input", "cached_input", "output")]
            try:
                prices[service_tier] = Prices(*(price_per_token(v) for v in values))
            except ValueError as exc:
                raise self.fail(pw, str(exc)) from exc
        for needed in ("standard", "batch"):
            if needed not in prices:
                raise self.fail(f"{where}.prices.{needed}", "missing")
        limits = self.tier_table(self.key(entry, "limits", where), f"{where}.limits", tiers)
        long_above: int | None = None
        long_limits: dict[str, RateLimits] = {}
        if "long_context" in entry:
            lw = f"{where}.long_context"
            long = self.obj(entry["long_context"], lw)
            long_above = self.count(self.key(long, "above_input_tokens", lw), f"{lw}.above_input_tokens")
            long_limits = self.tier_table(self.key(long, "limits", lw), f"{lw}.limits", tiers)
        speed = self.obj(entry.get("speed", {}), f"{where}.speed")
        max_input = entry.get("max_input_tokens")
        return ModelInfo(
            name=name,
            tokenizer=tokenizer,
            endpoints=tuple(endpoints),
            context_window=self.count(self.key(entry, "context_window", where), f"{where}.context_window"),
            max_output_tokens=self.count(
                self.key(entry, "max_output_tokens", where), f"{where}.max_output_tokens", allow_zero=True
            ),
            prices=prices,
            limits=limits,
            long_context_above=long_above,
            long_context_limits=long_limits,
            max_input_tokens=None if max_input is None else self.count(max_input, f"{where}.max_input_tokens"),
            snapshot=entry.get("snapshot"),
            shutdown_date=entry.get("shutdown_date"),
            first_token_seconds=self.usd(speed.get("first_token_seconds", "0.6"), f"{where}.speed.first_token_seconds"),
            output_tokens_per_second=self.count(
                speed.get("output_tokens_per_second", 90),
                f"{where}.speed.output_tokens_per_second",
                allow_zero=True,
            ),
        )

    def tier_table(self, value: Any, where: str, tiers: dict[str, Tier]) -> dict[str, RateLimits]:
        table = self.obj(value, where)
        out: dict[str, RateLimits] = {}
        for tier, row in table.items():
            tw = f"{where}.{tier}"
            if tier not in tiers:
                raise self.fail(tw, f"tier {tier!r} is not in the tiers list")
            r = self.obj(row, tw)
            unknown = set(r) - {"rpm", "tpm", "rpd", "tpd", "batch_queue_tokens"}
            if unknown:
                raise self.fail(
                    f"{tw}.{sorted(unknown)[0]}",
                    "unknown limit (known: rpm, tpm, rpd, tpd, batch_queue_tokens)",
                )
            out[tier] = RateLimits(**{k: None if v is None else self.count(v, f"{tw}.{k}") for k, v in r.items()})
        return out
