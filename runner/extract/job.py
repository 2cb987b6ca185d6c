"""An extraction from start to table: read the documents, build one request per document (or chunk), run them
through the runner like any job (sync, batch or auto; resumable; paced; spend recorded), judge every answer
against the schema, repair each failed answer once, and store the rows.

Repairs go out as a short sync pass (run ``{name}-repair``) whatever the first pass's mode: they are few, and a
second batch could add up to 24 h. A repair's spend is recorded like any other, under its own run name.
The request files are written next to the database (``{db}.extract/``), private to their owner; they are rebuilt
identically on every run, so a re-run resumes: answered requests are not sent again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runner.commands import RunOutcome, export_results, run_job, write_private
from runner.errors import ConfigError, RunnerError
from runner.events import Say, silent
from runner.extract.answers import Verdict, judge
from runner.extract.requests import CHUNK, REPAIR, pieces, repair_line, request_line
from runner.extract.schema import load_schema
from runner.extract.sources import read_documents
from runner.limits import Limits
from runner.settings import BatchSettings, RunSettings
from runner.store import Store
from runner.transport import Credentials

__all__ = ["ExtractReport", "Extraction", "extract"]

DEFAULT_INSTRUCTIONS = "Extract the information from the user's document into JSON that follows the schema."


@dataclass(frozen=True)
class Extraction:
    """What to extract: the keys of ``runner extract`` and of a job spec file."""

    source: str
    schema: str
    instructions: str = DEFAULT_INSTRUCTIONS
    text_column: str = "text"
    id_column: str | None = None
    many: bool = False
    model: str = "gpt-4.1-mini"
    name: str | None = None
    max_output_tokens: int = 1000
    max_input_tokens: int | None = None
    overlap_tokens: int = 200

    @property
    def run_name(self) -> str:
        return self.name or Path(self.source).stem


@dataclass
class ExtractReport:
    name: str
    table: str
    kinds: dict[str, str] = field(default_factory=dict[str, str])  # the table's fields and how each is stored
    documents: int = 0
    valid: int = 0
    repaired: int = 0
    failed: int = 0
    waiting: int = 0  # documents with a request still to answer (the run stopped early)
    rows: int = 0
    spend: int = 0
    repair_spend: int = 0
    stopped: RunnerError | None = None
    reasons: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])  # first failures

    @property
    def exit_code(self) -> int:
        if self.stopped is not None:
            return self.stopped.exit_code
        return 1 if self.failed else 0


def extract(
    store: Store,
    job: Extraction,
    limits: Limits,
    settings: RunSettings,
    credentials: Credentials,
    *,
    mode: str = "sync",
    batch: BatchSettings | None = None,
    progress: bool | None = None,
    say: Say = silent,
    signals: bool = True,
) -> ExtractReport:
    docs = read_documents(job.source, job.text_column, job.id_column)
    schema = load_schema(job.schema, job.many)
    model = limits.model(job.model)
    if job.max_output_tokens > model.max_output_tokens:
        raise ConfigError(f"--max-output-tokens {job.max_output_tokens:,} is over {model.name}'s maximum of "
                          f"{model.max_output_tokens:,}")  # fmt: skip
    parts, refused = pieces(docs, model, schema, job.max_input_tokens, job.overlap_tokens)
    name = job.run_name
    folder = Path(store.path + ".extract")
    lines = {p.custom_id: request_line(p, model.name, job.instructions, schema, job.max_output_tokens) for p in parts}
    first = _run(store, folder / f"{name}.jsonl", list(lines.values()), name, limits, settings, credentials,
                 mode=mode, batch=batch, progress=progress, say=say, signals=signals)  # fmt: skip
    verdicts = {r["custom_id"]: judge(r, schema) for r in map(json.loads, export_results(store, name))}
    repairs = [
        repair_line(lines[cid], v.content, v.reason or "", v.cut_off, model.max_output_tokens)
        for cid, v in verdicts.items()
        if v.repairable and cid in lines
    ]
    second: RunOutcome | None = None
    repaired: dict[str, Verdict] = {}
    if repairs and first.stopped is None:
        say(f"repairing {len(repairs):,} answers (one sync pass)")
        cap = settings.max_spend  # one cap for both passes: the repairs may spend what the first pass left
        left = settings if cap is None else replace(settings, max_spend=max(cap - store.results.total_cost(name), 0))
        second = _run(store, folder / f"{name}-repair.jsonl", repairs, f"{name}{REPAIR}", limits, left,
                      credentials, mode="sync", progress=progress, say=say, signals=signals)  # fmt: skip
        results = map(json.loads, export_results(store, f"{name}{REPAIR}"))
        repaired = {r["custom_id"].removesuffix(REPAIR): judge(r, schema) for r in results}
    report = ExtractReport(name, "", schema.kinds, documents=len(docs))
    report.stopped = first.stopped or (second.stopped if second else None)
    report.spend = store.results.total_cost(name)
    report.repair_spend = store.results.total_cost(f"{name}{REPAIR}") if second else 0
    rows = _table(docs, parts, refused, verdicts, repaired, report)
    report.table = store.extractions.save_extraction(name, schema.kinds, rows)
    report.rows = sum(1 for r in rows if r["_status"] != "failed")
    return report


def _run(
    store: Store,
    path: Path,
    lines: list[dict[str, Any]],
    name: str,
    limits: Limits,
    settings: RunSettings,
    credentials: Credentials,
    **kw: Any,
) -> RunOutcome:
    """Write ``lines`` as a private job file and run it (resuming what an earlier run of it answered)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, (json.dumps(line, ensure_ascii=False) for line in lines))
    return run_job(store, str(path), limits, settings, credentials, name=name, **kw)


def _table(
    docs: list[Any],
    parts: list[Any],
    refused: list[Any],
    verdicts: dict[str, Verdict],
    repaired: dict[str, Verdict],
    report: ExtractReport,
) -> list[dict[str, Any]]:
    """One row per extracted object (several per document with --many, merged over chunks, duplicates from
    overlaps dropped); a document that gave nothing valid has one row with its status and reason."""
    by_doc: dict[str, list[str]] = {}
    for p in parts:
        by_doc.setdefault(p.document, []).append(p.custom_id)
    why_refused = {r.document: r.reason for r in refused}
    rows: list[dict[str, Any]] = []
    for doc in docs:
        ids = by_doc.get(doc.id, [])
        status, reason, found = "valid", None, []
        if doc.id in why_refused:
            status, reason = "failed", why_refused[doc.id]
        elif any(cid not in verdicts for cid in ids):
            report.waiting += 1
            continue
        for cid in ids:
            verdict = verdicts[cid]
            if verdict.reason is not None and cid in repaired:
                fixed = repaired[cid]
                verdict = fixed if fixed.reason is None else Verdict(reason=f"{verdict.reason}; after repair: "
                                                                           f"{fixed.reason}")  # fmt: skip
                status = "repaired" if fixed.reason is None and status == "valid" else status
            if verdict.reason is not None:
                status, reason = "failed", f"{_chunk(cid)}{verdict.reason}"
                break
            found += [r for r in verdict.rows if r not in found]
        if status == "failed":
            report.failed += 1
            if len(report.reasons) < 5:
                report.reasons.append((doc.id, reason or ""))
            rows.append({"_source_id": doc.id, "_row": 0, "_status": status, "_reason": reason})
            continue
        report.valid += status == "valid"
        report.repaired += status == "repaired"
        rows += [{"_source_id": doc.id, "_row": i, **row, "_status": status, "_reason": None}
                 for i, row in enumerate(found)]  # fmt: skip
    return rows


def _chunk(custom_id: str) -> str:
    return f"chunk {custom_id.rsplit(CHUNK, 1)[1]}: " if CHUNK in custom_id else ""
