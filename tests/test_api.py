"""The Python API (``import runner``): the command's use cases as functions, against a real simulator; silent
unless asked; typed results; usable from a running event loop."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pydantic
import pytest

import runner
from runner.errors import ConfigError

from .conftest import ROOT, chat_line, write_jsonl


def _requests(n: int, prefix: str = "q") -> list[dict[str, Any]]:
    return [chat_line(f"{prefix}{i}", f"What is {i} squared?", max_tokens=20) for i in range(n)]


def test_a_run_of_request_dicts_returns_a_report_and_typed_results_and_prints_nothing(
    tmp_path: Path, start_sim: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    sim = start_sim(latency_scale=0, tier="tier-5")
    db = tmp_path / "api.db"
    report = runner.run(_requests(30), name="squares", db=db, base_url=sim.base_url, api_key="k", tier="tier-5")
    assert isinstance(report, runner.RunReport)
    assert report.exit_code == 0 and report.counts["succeeded"] == 30
    assert isinstance(report.spent, Decimal) and report.spent > 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing below the command prints
    found = list(runner.results("squares", db=db))
    assert [r.custom_id for r in found] == [f"q{i}" for i in range(30)]
    first = found[0]
    assert isinstance(first, runner.Result) and first.state == "succeeded" and first.error is None
    assert first.text and first.usage and first.usage["total_tokens"] > 0
    assert sum(r.cost for r in found) == report.spent
    where = runner.status(db=db)
    assert isinstance(where, runner.Status) and where.states["succeeded"] == 30 and where.spent == report.spent
    assert where.as_json()["spend_usd"] == str(report.spent) and not where.working
    spent = runner.spend(db=db)
    assert isinstance(spent, runner.Spend) and spent.total == report.spent
    assert [(r.run, r.model, r.responses) for r in spent.rows] == [("squares", "gpt-4.1-mini", 30)]


def test_a_second_run_reuses_answers_and_says_so_to_the_callback(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, tier="tier-5")
    db, said = tmp_path / "api.db", list[str]()
    runner.run(_requests(10), name="one", db=db, base_url=sim.base_url, api_key="k", tier="tier-5")
    again = runner.run(_requests(12), name="two", db=db, base_url=sim.base_url, api_key="k", tier="tier-5",
                       on_event=said.append)  # fmt: skip
    assert again.counts["succeeded"] == 12 and sim.call(lambda: sim.sim.stats.requests) == 12
    assert any(line.startswith("reused 10 answers, saved $") for line in said), said
    reused = [r for r in runner.results("two", db=db) if r.reused]
    assert len(reused) == 10 and all(r.cost == 0 for r in reused)
    fresh = runner.run(_requests(12), name="three", db=db, base_url=sim.base_url, api_key="k", tier="tier-5",
                       fresh=True)  # fmt: skip
    assert fresh.counts["succeeded"] == 12 and sim.call(lambda: sim.sim.stats.requests) == 24


@pytest.mark.anyio
async def test_arun_works_inside_a_running_loop_and_results_follow_it(tmp_path: Path, start_sim: Any) -> None:
    """As in a notebook: the loop is running; ``arun`` needs no nest_asyncio, and ``aresults(follow=True)`` yields
    every answer once, as they arrive, ending when the run ends."""
    import anyio

    sim = start_sim(latency_scale=0, rpm=1_200, window=1.0)  # 20 a second: the run takes a second or two
    db = tmp_path / "api.db"
    seen: list[str] = []

    async def follow() -> None:
        async for result in runner.aresults("live", db=db, follow=True, poll=0.05):
            seen.append(result.custom_id)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        report = await runner.arun(_requests(30), name="live", db=db, base_url=sim.base_url, api_key="k", rpm=1_200)
    assert report.counts["succeeded"] == 30
    assert sorted(seen) == sorted(f"q{i}" for i in range(30))


def test_plan_takes_a_file_or_figures_and_returns_the_plan(tmp_path: Path) -> None:
    job = write_jsonl(tmp_path / "job.jsonl", _requests(25))
    planned = runner.plan(job, db=tmp_path / "none.db")
    assert isinstance(planned, runner.Plan) and planned.workload.requests == 25
    assert planned.as_json()["requests"] == 25
    figures = runner.plan(requests=10_000, input_tokens=800, output_tokens=200, deadline="6h", db=tmp_path / "x.db")
    assert figures.workload.requests == 10_000 and figures.deadline == 6 * 3600


class Ticket(pydantic.BaseModel):
    category: Literal["billing", "bug", "how-to", "outage", "feature request"]
    urgency: Literal["low", "normal", "high", "critical"]
    product: str | None
    summary: str
    needs_human: bool


def test_extract_with_a_pydantic_model_gives_instances_back(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(tier="tier-5", latency_scale=0)
    folder = tmp_path / "tickets"
    folder.mkdir()
    for i in range(8):
        (folder / f"t{i}.txt").write_text(f"Ticket {i}: I was charged twice this month.")
    db = tmp_path / "api.db"
    report = runner.extract(folder, schema=Ticket, db=db, tier="tier-5", base_url=sim.base_url, api_key="k",
                            max_output_tokens=200)  # fmt: skip
    assert report.exit_code == 0 and report.documents == 8
    tickets = runner.rows(report.name, db=db, model=Ticket)
    assert len(tickets) == report.rows == 8 and all(isinstance(t, Ticket) for t in tickets)
    table = runner.rows(report.name, db=db)
    assert {row["_source_id"] for row in table} == {f"t{i}" for i in range(8)}


def test_mistakes_are_runner_errors_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name= is needed"):
        runner.run(_requests(2), db=tmp_path / "a.db", base_url="http://127.0.0.1:9", api_key="k")
    with pytest.raises(ConfigError, match="deadline 'soon'"):
        runner.run(_requests(2), name="x", deadline="soon", db=tmp_path / "a.db", base_url="http://127.0.0.1:9")
    assert issubclass(ConfigError, runner.RunnerError)


def _readme_api() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("<!-- api:begin -->\n", 1)[1].split("<!-- api:end -->", 1)[0]


def test_the_readme_api_section_is_the_code_s() -> None:
    """Every function the README's API section shows exists in ``runner`` with the parameters and defaults shown,
    and every public function of ``runner`` is shown."""
    calls = r"^(?:await |async for \w+ in )?runner\.(\w+)\((.*?)\)(?: *->[^\n]*)?$"
    shown = dict(re.findall(calls, _readme_api(), re.MULTILINE | re.DOTALL))
    functions = {n for n in runner.__all__ if inspect.isfunction(getattr(runner, n))}
    assert set(shown) == functions
    for name, args in shown.items():
        parameters = inspect.signature(getattr(runner, name)).parameters
        for part in (p.strip() for p in args.replace("\n", " ").split(",")):
            if part in ("", "*", "...") or part.startswith("**"):
                continue
            key, _, default = part.partition("=")
            assert key in parameters, f"runner.{name} has no parameter {key!r}"
            if default and default != "...":
                assert repr(parameters[key].default) == default, f"runner.{name}({key}=...)"


@pytest.mark.slow
def test_the_notebook_example_runs_and_reuses_what_it_can() -> None:
    """``examples/notebook.py`` as a user runs it: plan, run, rows, then a second run that sends only the ten
    reworded requests."""
    shown = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "notebook.py"), "--requests", "200", "--tier", "tier-2"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "run: 200 answered" in shown.stdout and "rows: 200" in shown.stdout
    assert "again: 200 answered, 10 sent" in shown.stdout and "reused 190 answers" in shown.stdout


def test_batch_mode_and_its_batches_report(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=0.1)
    db = tmp_path / "api.db"
    report = runner.run(_requests(12), name="half-price", db=db, mode="batch", poll_every=0.05,
                        base_url=sim.base_url, api_key="k")  # fmt: skip
    assert report.exit_code == 0 and report.counts["succeeded"] == 12
    listed = runner.batches("half-price", db=db)
    assert isinstance(listed, runner.Batches) and [b.requests for b in listed.batches] == [12]
    assert listed.batches[0].state == "done" and listed.plan == ()
    assert [r.run for r in runner.spend(db=db).rows] == ["half-price"]
    assert {r.service_tier for r in runner.spend(db=db).rows} == {"batch"}
    with pytest.raises(ConfigError, match="action 'stop'"):
        runner.batches("half-price", db=db, action="stop")


def test_plan_with_a_pilot_and_a_chart(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, tier="tier-2")
    job = write_jsonl(tmp_path / "job.jsonl", _requests(20))
    said: list[str] = []
    planned = runner.plan(job, pilot=4, chart=tmp_path / "plan.png", db=tmp_path / "p.db", base_url=sim.base_url,
                          api_key="k", on_event=said.append)  # fmt: skip
    assert planned.current == "tier-2" and "4 answers of the pilot" in planned.workload.basis
    assert any(line.startswith("pilot: 4 answered") for line in said), said
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"
