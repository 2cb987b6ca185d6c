"""Installed as a user installs it (not editable), the package carries its data: ``runner demo`` works from any
folder, with the bundled tier limits unless the folder has a tier_limits.json of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install .`` (non-editable, dependencies from this environment) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), str(ROOT)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return target


def runner_at(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "OPENAI_API_KEY": ""}
    env.pop("RUNNER_TIER_LIMITS", None)
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_demo_runs_from_any_folder(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [sys.executable, "-c", "import runner; print(runner.__file__)"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(installed)), "the installed copy, not the checkout"
    ran = runner_at(installed, tmp_path, "demo", "--db", str(tmp_path / "demo.db"), "--no-progress", "--tier", "tier-2")
    assert ran.returncode == 0, ran.stderr
    assert "150 succeeded" in ran.stderr


def test_a_tier_limits_json_in_the_folder_takes_precedence(installed: Path, tmp_path: Path) -> None:
    limits = json.loads((ROOT / "tier_limits.json").read_text())
    limits["tiers"].append({"name": "my-tier", "monthly_usage_limit_usd": "10"})
    for model in limits["models"].values():
        model["limits"]["my-tier"] = {"rpm": 60, "tpm": 100000}
    (tmp_path / "tier_limits.json").write_text(json.dumps(limits))
    job = tmp_path / "job.jsonl"
    job.write_text(json.dumps({"custom_id": "a", "body": {"model": "gpt-4.1-mini", "messages": []}}) + "\n")
    ran = runner_at(installed, tmp_path, "run", str(job), "--tier", "my-tier", "--base-url", "http://127.0.0.1:9",
                    "--db", str(tmp_path / "r.db"), "--deadline", "0s")  # fmt: skip
    assert "unknown tier" not in ran.stderr and ran.returncode == 3, ran.stderr
    ran = runner_at(installed, tmp_path.parent, "run", str(job), "--tier", "my-tier", "--base-url",
                    "http://127.0.0.1:9", "--db", str(tmp_path / "r.db"))  # fmt: skip
    assert ran.returncode == 2 and "unknown tier 'my-tier'" in ran.stderr
