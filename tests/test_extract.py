"""``runner extract``: strict schemas, answers judged, one repair, long documents, the table, and re-runs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest

from runner.encodings import encoding
from runner.errors import ConfigError
from runner.extract.answers import judge
from runner.extract.job import Extraction, extract
from runner.extract.requests import pieces
from runner.extract.schema import Schema, load_schema, strict
from runner.extract.sources import Document, read_documents
from runner.limits import Limits
from runner.settings import RunSettings
from runner.store import Store
from runner.transport import Credentials

from .conftest import ROOT, runner_cli

TICKET = json.loads((ROOT / "jobs" / "ticket.schema.json").read_text())


def test_a_schema_is_made_strict_at_every_level() -> None:
    user = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "default": "x"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "ref": {"$ref": "#/$defs/Thing"},
        },
        "required": ["name"],
        "$defs": {"Thing": {"type": "object", "properties": {"x": {"type": "number"}}}},
    }
    out = strict(user)
    assert out["required"] == ["name", "age", "tags", "kind", "ref"] and out["additionalProperties"] is False
    assert out["properties"]["name"] == {"type": "string"}  # required: not nullable; default dropped
    assert out["properties"]["age"]["type"] == ["integer", "null"]
    assert out["properties"]["kind"]["enum"] == ["a", "b", None]
    assert out["properties"]["ref"] == {"anyOf": [{"$ref": "#/$defs/Thing"}, {"type": "null"}]}
    item = out["properties"]["tags"]["items"]
    assert item["required"] == ["k"] and item["additionalProperties"] is False
    assert out["$defs"]["Thing"]["additionalProperties"] is False
    assert user["required"] == ["name"]  # the user's schema is left alone
    many = Schema(user, many=True, name="things")
    assert many.sent["required"] == ["items"] and "$defs" in many.sent
    assert many.problem({"items": [{"name": "a", "age": None, "tags": [], "kind": None, "ref": None}]}) is None


def test_a_pydantic_model_is_a_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymodels.py").write_text(
        "from pydantic import BaseModel\n"
        "class Invoice(BaseModel):\n    supplier: str\n    total: float\n    note: str | None = None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    schema = load_schema("mymodels:Invoice")
    assert schema.name == "Invoice" and schema.kinds == {"supplier": "text", "total": "number", "note": "json"}
    assert schema.problem({"supplier": "A", "total": 1.5, "note": None}) is None
    assert schema.problem({"supplier": "A", "total": 1.5}) == "the answer: 'note' is a required property"
    with pytest.raises(ConfigError, match="cannot load the Pydantic model"):
        load_schema("mymodels:Nothing")


def result(content: str | None, finish: str = "stop", refusal: str | None = None) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, "refusal": refusal}
    body = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    return {"custom_id": "d", "response": {"status_code": 200, "body": body}, "error": None}


GOOD = {"category": "bug", "urgency": "high", "product": None, "summary": "It crashes.", "needs_human": True}


@pytest.mark.parametrize(
    ("line", "reason", "repairable"),
    [
        (result(json.dumps(GOOD)), None, False),
        (result('{"category": "bug"'), "not JSON (Expecting ',' delimiter at character 18)", True),
        (result(json.dumps({**GOOD, "urgency": "soon"})), "urgency: 'soon' is not one of", True),
        (result(json.dumps({k: v for k, v in GOOD.items() if k != "product"})), "'product' is a required", True),
        (result(json.dumps({**GOOD, "extra": 1})), "Additional properties are not allowed", True),
        (result('{"category": "b', finish="length"), "cut off at max_tokens", True),
        (result(None, refusal="I can't help with that."), "refused: I can't help with that.", False),
        (
            {"custom_id": "d", "response": None, "error": {"code": "x", "message": "bad request"}},
            "request failed",
            False,
        ),
    ],
)
def test_every_answer_is_judged_against_the_schema_that_was_sent(
    line: dict[str, Any], reason: str | None, repairable: bool
) -> None:
    verdict = judge(line, Schema(TICKET, many=False, name="t"))
    assert (verdict.reason is None) == (reason is None)
    if reason is not None:
        assert verdict.reason is not None and reason in verdict.reason
    else:
        assert verdict.rows == [GOOD]
    assert verdict.repairable == repairable


def test_long_documents_are_split_with_overlap_for_many_rows_and_refused_for_one(limits: Limits) -> None:
    model = limits.model("gpt-4.1-mini")
    text = " ".join(f"word{i}" for i in range(3000))
    total = len(encoding(model.tokenizer).encode_ordinary(text))
    docs = [Document("long", text, "docs/long.txt:1"), Document("short", "An invoice.", "docs/short.txt:1")]
    many = Schema(TICKET, many=True, name="t")
    parts, refused = pieces(docs, model, many, max_input_tokens=1000, overlap=100)
    chunks = [p for p in parts if p.document == "long"]
    assert refused == [] and len(chunks) == -(-(total - 100) // 900) and chunks[0].custom_id == f"long#1/{len(chunks)}"
    assert all(p.tokens <= 1000 for p in chunks) and sum(p.tokens for p in chunks) >= total
    enc = encoding(model.tokenizer)
    head = enc.decode(enc.encode_ordinary(chunks[1].text)[:50])
    assert head in chunks[0].text[len(chunks[0].text) // 2 :]  # the next chunk starts inside the previous one
    parts, refused = pieces(docs, model, Schema(TICKET, many=False, name="t"), max_input_tokens=1000, overlap=100)
    assert [p.document for p in parts] == ["short"]
    assert refused[0].document == "long" and f"{total:,} tokens, over the limit of 1,000" in refused[0].reason


def test_sources_name_the_file_and_line_of_a_problem(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,body\n1,hello\n")
    with pytest.raises(ConfigError, match=r"t.csv:1: no column 'text' \(columns: id, body\)"):
        read_documents(tmp_path / "t.csv")
    (tmp_path / "t.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(ConfigError, match=r"t.jsonl:2: duplicate document id 'a' \(also .*t.jsonl:1\)"):
        read_documents(tmp_path / "t.jsonl", id_column="id")
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.md").write_text("A")
    (folder / "b.txt").write_text("B")
    (folder / "skip.pdf").write_bytes(b"%PDF")
    assert [d.id for d in read_documents(folder)] == ["b", "sub/a"]


def ticket_job(folder: Path, count: int, complaint: str) -> Extraction:
    """An extraction of ``count`` one-line tickets (files t00.txt...) in ``folder`` with the example ticket schema."""
    folder.mkdir()
    for i in range(count):
        (folder / f"t{i:02d}.txt").write_text(f"Ticket {i}: {complaint}")
    return Extraction(str(folder), str(ROOT / "jobs" / "ticket.schema.json"), max_output_tokens=200)


def test_extraction_repairs_once_and_a_rerun_sends_nothing_and_duplicates_nothing(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(tier="tier-5", latency_scale=0, flawed_rate=0.4, seed=3)
    job = ticket_job(tmp_path / "tickets", 30, "the app crashes when I open settings.")
    settings, creds = RunSettings(tier="tier-5"), Credentials(sim.base_url, "k")
    report = extract(store, job, limits, settings, creds, progress=False)
    assert report.valid + report.repaired + report.failed == 30 and report.repaired > 0
    repairs = store.requests.counts("tickets~repair")
    assert sum(repairs.values()) == report.repaired + report.failed  # one repair for each failed answer, no more
    assert report.repair_spend == store.results.total_cost("tickets~repair") > 0
    rows = list(store.extractions.extraction_rows("tickets"))
    assert len(rows) == 30 and {r["_status"] for r in rows} <= {"valid", "repaired", "failed"}
    schema = Schema(TICKET, many=False, name="t")
    for row in rows:
        if row["_status"] != "failed":
            value = {k: row[k] for k in TICKET["properties"]} | {"needs_human": bool(row["needs_human"])}
            assert schema.problem(value) is None
        else:
            assert row["_reason"] and "after repair" in row["_reason"]
    sent = sim.call(lambda: sim.sim.stats.requests)
    again = extract(store, job, limits, settings, creds, progress=False)
    assert (again.valid, again.repaired, again.failed) == (report.valid, report.repaired, report.failed)
    assert (
        sim.call(lambda: sim.sim.stats.requests) == sent
        and len(list(store.extractions.extraction_rows("tickets"))) == 30
    )


def test_one_spending_cap_covers_the_extraction_and_its_repairs(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(tier="tier-5", latency_scale=0, flawed_rate=0.5, seed=5)
    job = ticket_job(tmp_path / "notes", 20, "billing charged me twice.")
    first = extract(store, job, limits, RunSettings(tier="tier-5"), Credentials(sim.base_url, "k"), progress=False)
    spent = store.results.total_cost(
        "notes"
    )  # what the first pass costs: a cap just above it leaves little for repairs
    assert first.repaired + first.failed > 0
    store2 = Store(tmp_path / "capped.db")
    cap = spent + spent // 10
    capped = extract(store2, job, limits, RunSettings(tier="tier-5", max_spend=cap), Credentials(sim.base_url, "k"),
                     progress=False)  # fmt: skip
    assert store2.results.total_cost("notes") + store2.results.total_cost("notes~repair") <= cap
    assert capped.exit_code == 3 and "--max-spend" in str(capped.stopped)


def test_many_rows_per_document_from_chunks_are_merged(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(tier="tier-5", latency_scale=0)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "big.txt").write_text(" ".join(f"item{i}" for i in range(2500)))
    (tmp_path / "docs" / "small.txt").write_text("One line item.")
    job = Extraction(str(tmp_path / "docs"), str(ROOT / "jobs" / "invoice.schema.json"), many=True,
                     max_input_tokens=1000, max_output_tokens=800)  # fmt: skip
    report = extract(store, job, limits, RunSettings(tier="tier-5"), Credentials(sim.base_url, "k"), progress=False)
    assert report.failed == 0 and report.documents == 2
    rows = list(store.extractions.extraction_rows("docs"))
    big = [r for r in rows if r["_source_id"] == "big"]
    assert len(big) >= 3 and [r["_row"] for r in big] == list(range(len(big)))  # one per chunk, numbered


@pytest.mark.slow
def test_the_cli_runs_a_spec_file_and_writes_csv_and_jsonl(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=0.5)
    env = {**os.environ, "OPENAI_API_KEY": "sk-x", "RUNNER_DB": str(tmp_path / "e.db")}
    out = tmp_path / "tickets.jsonl"
    ran = runner_cli("extract", str(ROOT / "jobs" / "tickets.toml"), "--base-url", sim.base_url, "-o", str(out),
                     "--poll-every", "0.1", env=env)  # fmt: skip
    assert ran.returncode in (0, 1), ran.stderr
    assert "auto: batch" in ran.stderr  # 40 tickets, a 24 h deadline: the Batch API at half price
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 40 and all(isinstance(x["needs_human"], bool) for x in lines if x["_status"] != "failed")
    assert out.stat().st_mode & 0o077 == 0  # private: it holds what the documents said
    as_csv = tmp_path / "tickets.csv"
    again = runner_cli("extract", str(ROOT / "jobs" / "tickets.toml"), "--base-url", sim.base_url, "-o",
                       str(as_csv), env=env)  # fmt: skip
    assert again.returncode == ran.returncode, again.stderr
    with as_csv.open() as f:
        assert len(list(csv.DictReader(f))) == 40


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--schema", "nope.json"], "--schema nope.json: no such file"),
        (["--schema", str(ROOT / "jobs" / "ticket.schema.json"), "--text-column", "body"], "no column 'body'"),
        (["--schema", str(ROOT / "jobs" / "ticket.schema.json"), "-o", "out.xlsx"], "give a .csv or .jsonl file"),
    ],
)
def test_extraction_mistakes_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-x", "RUNNER_DB": str(tmp_path / "e.db")}
    ran = runner_cli("extract", str(ROOT / "jobs" / "tickets.csv"), *args, "--base-url", "http://127.0.0.1:9", env=env)
    assert ran.returncode == 2 and message in ran.stderr and "Traceback" not in ran.stderr
