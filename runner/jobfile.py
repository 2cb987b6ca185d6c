"""Read an input JSONL into the store, streaming, with a clear error for the first bad line.

A line is the Batch API's input line: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body": {...}}``; ``method`` and ``url`` may be left out (POST to /v1/chat/completions), and ``body.model`` may
come from ``--model``. The same file therefore runs in sync or batch mode unchanged.

Queue semantics: the run remembers how many bytes of the input it stored and their SHA-256. If the file still
starts with those bytes, only the lines after them are read (appended work); otherwise every line is checked
against what is stored. A custom_id stored with another body, or repeated within the file, is an error. The whole
ingest is one transaction: on an error nothing of this pass is kept.

Requests that can never succeed as written (longer than the model's context window) are stored and marked
failed with the reason, so they show in results and the exit code; they are never sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.endpoints import ENDPOINTS
from runner.errors import ConfigError, InputError
from runner.limits import Limits
from runner.store import RequestRow, Store, dumps
from runner.tokens import estimate

__all__ = ["IngestReport", "ingest", "read"]

CHECKPOINT_AFTER = 10_000  # lines added by one ingest after which the WAL is folded into the database
CHUNK = 2000


@dataclass
class IngestReport:
    added: int = 0
    lines: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list[tuple[int, str, str]])  # line, id, reason


def ingest(store: Store, run: str, path: str | Path, limits: Limits, default_model: str | None = None) -> IngestReport:
    """Store the new lines of ``path`` as requests of ``run``; raises InputError naming the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such input file")
    info = store.run(run) or {}
    report = IngestReport()
    watermark = store.last_request_id()
    with path.open("rb") as f, store.transaction():
        digest, line_no = _resume_point(f, info)
        pending: list[RequestRow] = []
        refusals: dict[str, str] = {}
        for raw in _lines(f, digest):
            line_no += 1
            report.lines += 1
            if not raw.strip():
                continue
            row, refusal = _parse(str(path), line_no, raw, limits, default_model)
            pending.append(row)
            if refusal:
                refusals[row.custom_id] = refusal
                report.refused.append((line_no, row.custom_id, refusal))
            if len(pending) >= CHUNK:
                report.added += _store(store, run, str(path), pending, watermark, refusals)
                pending, refusals = [], {}
        report.added += _store(store, run, str(path), pending, watermark, refusals)
        store.set_ingested(run, f.tell(), digest.hexdigest(), line_no)
    if report.added >= CHECKPOINT_AFTER:
        store.checkpoint()
    return report


def read(path: str | Path, limits: Limits, default_model: str | None = None) -> Iterator[tuple[RequestRow, str]]:
    """Every request of ``path`` as ingest would store it, with the reason it could never be sent ("" if none),
    without storing anything (the planner reads a job this way). Raises InputError naming the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such input file")
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            if raw.strip():
                yield _parse(str(path), line_no, raw, limits, default_model)


def _resume_point(f: Any, info: dict[str, Any]) -> tuple[Any, int]:
    """Hash of the already-stored prefix and its line count, with ``f`` positioned after it; else the start."""
    stored_bytes, stored_hash = int(info.get("ingest_bytes") or 0), info.get("ingest_sha256")
    if stored_bytes and stored_hash:
        digest = hashlib.sha256()
        remaining = stored_bytes
        while remaining:
            block = f.read(min(remaining, 1 << 20))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
        if not remaining and digest.hexdigest() == stored_hash:
            return digest, int(info.get("ingest_lines") or 0)
    f.seek(0)
    return hashlib.sha256(), 0


def _lines(f: Any, digest: Any) -> Iterator[bytes]:
    for raw in f:
        digest.update(raw)
        yield raw


def _parse(path: str, line: int, raw: bytes, limits: Limits, default_model: str | None) -> tuple[RequestRow, str]:
    def bad(problem: str) -> InputError:
        return InputError(path, line, problem)

    try:
        item = json.loads(raw, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"not valid JSON ({exc})") from exc
    except ValueError as exc:  # NaN, Infinity
        raise bad(str(exc)) from exc
    except RecursionError as exc:
        raise bad("nested too deeply to be a request") from exc
    if not isinstance(item, dict):
        raise bad("expected a JSON object with custom_id and body")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise bad("missing custom_id (a non-empty string)")
    body = item.get("body")
    if not isinstance(body, dict):
        raise bad(f"request {custom_id!r}: missing body (a JSON object)")
    method = item.get("method", "POST")
    url = item.get("url", "/v1/chat/completions")
    if method != "POST":
        raise bad(f"request {custom_id!r}: method must be POST, not {method!r}")
    if url not in ENDPOINTS:
        raise bad(f"request {custom_id!r}: unsupported url {url!r} (supported: {', '.join(ENDPOINTS)})")
    if body.get("stream"):
        raise bad(f"request {custom_id!r}: stream is not supported; remove it")
    model_name = body.get("model") or default_model
    if not isinstance(model_name, str):
        raise bad(f"request {custom_id!r}: no model; set body.model or pass --model")
    try:
        model = limits.model(model_name)
    except ConfigError as exc:
        raise bad(f"request {custom_id!r}: {exc}") from exc
    if url not in model.endpoints:
        raise bad(f"request {custom_id!r}: {model_name} does not serve {url} (serves {', '.join(model.endpoints)})")
    if "model" not in body:
        body = {"model": model_name, **body}
    try:
        text = dumps(body)
        text.encode()
    except UnicodeEncodeError as exc:
        raise bad(f"request {custom_id!r}: text with a lone surrogate ({exc.object[exc.start:exc.end]!r}) is not "
                  "valid UTF-8; OpenAI would refuse it") from exc  # fmt: skip
    except (RecursionError, ValueError) as exc:
        raise bad(f"request {custom_id!r}: body cannot be sent as JSON ({exc})") from exc
    if not custom_id.isprintable() or custom_id != custom_id.encode(errors="replace").decode():
        raise bad(f"request {custom_id!r}: custom_id must be printable text")
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens", "n"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10**9):
            raise bad(f"request {custom_id!r}: {key} must be a whole number from 1, not {json.dumps(value)[:40]}")
    cost = estimate(url, body, model.tokenizer, limits.output_reservation_tokens, model.max_output_tokens)
    refusal = ""
    if cost.prompt_tokens > model.input_limit:
        refusal = f"prompt of {cost.prompt_tokens:,} tokens exceeds {model.name}'s input limit of {model.input_limit:,}"
    elif model.max_output_tokens and cost.output_tokens > model.max_output_tokens:
        refusal = f"asks for {cost.output_tokens:,} output tokens; {model.name} allows {model.max_output_tokens:,}"
    elif cost.prompt_tokens + cost.output_tokens > model.context_window:
        refusal = (
            f"prompt {cost.prompt_tokens:,} + output {cost.output_tokens:,} tokens exceeds {model.name}'s "
            f"context window of {model.context_window:,}"
        )
    digest = hashlib.sha256(f"{url}\n{text}".encode()).hexdigest()
    row = RequestRow(custom_id, line, url, model.name, text, digest, cost.prompt_tokens, cost.output_tokens, cost.n)
    return row, refusal


def _store(store: Store, run: str, path: str, rows: list[RequestRow], watermark: int, refusals: dict[str, str]) -> int:
    if not rows:
        return 0
    inserted, conflicts = store.add_requests(run, rows)
    for row, stored_id, stored_line, stored_hash in conflicts:
        if stored_id > watermark:
            raise InputError(path, row.line, f"duplicate custom_id {row.custom_id!r} (also on line {stored_line})")
        if stored_hash != row.body_hash:
            raise InputError(
                path,
                row.line,
                f"custom_id {row.custom_id!r} is already stored (line {stored_line}) with a different body; "
                "give the new request its own custom_id",
            )
    for custom_id, reason in refusals.items():
        if (store.request_id(run, custom_id) or 0) > watermark:
            store.refuse(run, custom_id, "request_too_large", reason)
    return inserted


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number OpenAI accepts")
