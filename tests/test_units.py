"""Limits file validation, token counts, durations, money."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from runner.durations import format_go, parse_duration
from runner.errors import ConfigError
from runner.limits import Limits, load_limits
from runner.money import price_per_token, usd
from runner.pricing import Usage, cost
from runner.tokens import count_prompt, encoding

from .conftest import ROOT

COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch "
        "base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.mark.parametrize(("tokenizer", "api_count"), [("o200k_base", 124), ("cl100k_base", 129)])
def test_chat_estimate_matches_the_real_api_counts_from_the_cookbook(tokenizer: str, api_count: int) -> None:
    # OpenAI's cookbook "How to count tokens with tiktoken" printed these counts from the real API:
    # 124 for gpt-4o / gpt-4o-mini (o200k_base), 129 for gpt-4 (cl100k_base).
    assert count_prompt("/v1/chat/completions", {"messages": COOKBOOK_MESSAGES}, tokenizer) == api_count


def test_encodings_load_offline_from_verified_files() -> None:
    enc = encoding("o200k_base")
    assert enc.name == "o200k_base"
    assert enc.decode(enc.encode("hello world")) == "hello world"
    with pytest.raises(ConfigError, match="unknown tokenizer"):
        encoding("p50k_base")


def test_limits_file_loads_with_reference_numbers(limits: Limits) -> None:
    mini = limits.model("gpt-4.1-mini")
    assert mini.limits_for("tier-1").tpm == 200_000
    assert mini.limits_for("tier-1").rpd == 10_000
    assert mini.limits_for("tier-5", input_tokens=200_000).rpm == 8_000  # long-context row
    assert usd(mini.prices["batch"].output) * 10**6 == Decimal("0.80")
    assert limits.model("gpt-4.1-mini-2025-04-14") is mini
    assert limits.model("gpt-4.1").limits_for("tier-1").tpm == 30_000


def test_custom_limits_override_the_tier(limits: Limits) -> None:
    own = limits.model("gpt-4.1-mini").limits_for("tier-1").override(rpm=60, tpm=None, rpd=5)
    assert (own.rpm, own.tpm, own.rpd) == (60, 200_000, 5)


def test_unknown_tier_and_model_name_what_exists(limits: Limits) -> None:
    with pytest.raises(ConfigError, match=r"unknown tier 'tier-9'.*tier-1"):
        limits.tier("tier-9")
    with pytest.raises(ConfigError, match=r"unknown model 'gpt-9'.*gpt-4.1-mini"):
        limits.model("gpt-9")
    with pytest.raises(ConfigError, match="gpt-4.1 has no limits for tier 'free'"):
        limits.model("gpt-4.1").limits_for("free")


def _broken(tmp_path: Path, edit: Any) -> Path:
    data = json.loads((ROOT / "tier_limits.json").read_text())
    edit(data)
    path = tmp_path / "tier_limits.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda d: d["models"]["gpt-4.1-mini"]["limits"]["tier-1"].update(tpm="lots"),
            "models.gpt-4.1-mini.limits.tier-1.tpm",
        ),
        (lambda d: d["models"]["gpt-4.1"]["prices"]["standard"].pop("output"), "models.gpt-4.1.prices.standard.output"),
        (lambda d: d["models"]["gpt-4o-mini"].update(tokenizer="r50k"), "models.gpt-4o-mini.tokenizer"),
        (
            lambda d: d["models"]["gpt-4.1-mini"]["limits"].update({"tier-7": {"rpm": 1}}),
            "models.gpt-4.1-mini.limits.tier-7",
        ),
        (lambda d: d["tiers"][2].pop("name"), "tiers[2].name"),
        (
            lambda d: d["models"]["gpt-5-mini"]["prices"]["batch"].update(input="-1"),
            "models.gpt-5-mini.prices.batch.input",
        ),
        (
            lambda d: d["models"]["gpt-4.1-mini"]["limits"]["tier-2"].update(rpmm=3),
            "models.gpt-4.1-mini.limits.tier-2.rpmm",
        ),
    ],
)
def test_broken_limits_file_names_the_key(tmp_path: Path, edit: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_limits(_broken(tmp_path, edit))
    assert f": {key}:" in str(info.value)


def test_limits_file_that_is_not_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "tier_limits.json"
    path.write_text('{"tiers": [\n  oops\n]}')
    with pytest.raises(ConfigError, match="not valid JSON at line 2"):
        load_limits(path)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1), ("6m0s", 360), ("120ms", 0.12), ("19m45.394s", 1185.394), ("2h", 7200), ("1h30m", 5400), ("45", 45)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_go_format_round_trips() -> None:
    for seconds in (0.002, 0.913, 1.146, 360, 1185.394):
        assert parse_duration(format_go(seconds)) == pytest.approx(seconds)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_cost_is_exact_in_picodollars(limits: Limits) -> None:
    prices = limits.model("gpt-4.1-mini").prices["standard"]
    # 1,000 prompt tokens of which 512 cached, 100 out: 488*0.40 + 512*0.10 + 100*1.60 per 1M
    assert usd(cost(prices, Usage(1000, 512, 100))) == Decimal("0.0004064")
    assert price_per_token(Decimal("0.0125")) == 12_500


def test_progress_line_shows_rates_against_limits_in_sync_and_batch_states_in_batch() -> None:
    from runner.progress import Snapshot, render

    sync = Snapshot(78, 2, 150, 8, 477.0, 118_800.0, 500, 200_000, 10**10, 25.4, 0.0, ())
    text = render(sync).plain
    assert "80/150 done" in text and "2 failed" in text and "477 of 500 req/min" in text
    assert "118.8k of 200k tok/min" in text and "$0.010000" in text and "ETA 25s" in text
    batch = Snapshot(12, 0, 30, 12, 0.0, 0.0, None, None, 0, None, 0.0, (), "batches: 1 in_progress", "batch")
    assert render(batch).plain == "12/30 done · 12 in batches · $0.000000 · batches: 1 in_progress"
