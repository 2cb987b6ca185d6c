"""tier_limits.json: loaded with its reference numbers, overridden per run, and every mistake named by its key."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ConfigError
from runner.limits import Limits, load_limits
from runner.money import usd

from .conftest import ROOT


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


def test_progress_line_shows_rates_against_limits_in_sync_and_batch_states_in_batch() -> None:
    from runner.progress import Snapshot, render

    sync = Snapshot(78, 2, 150, 8, 477.0, 118_800.0, 500, 200_000, 10**10, 25.4, 0.0, ())
    text = render(sync).plain
    assert "80/150 done" in text and "2 failed" in text and "477 of 500 req/min" in text
    assert "118.8k of 200k tok/min" in text and "$0.010000" in text and "ETA 25s" in text
    batch = Snapshot(12, 0, 30, 12, 0.0, 0.0, None, None, 0, None, 0.0, (), "batches: 1 in_progress", "batch")
    assert render(batch).plain == "12/30 done · 12 in batches · $0.000000 · batches: 1 in_progress"
