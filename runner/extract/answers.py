"""What an answer to an extraction request is worth: the rows it gives, or why it gives none.

An answer fails when the request itself failed, the model refused, the answer was cut off at max_tokens
(``finish_reason: length``), its content is not JSON, or the JSON breaks the schema (the first error, in words).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from runner.extract.schema import Schema

__all__ = ["Verdict", "judge"]


@dataclass(frozen=True)
class Verdict:
    rows: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    reason: str | None = None  # None: valid
    content: str = ""  # the answer's text, for a repair
    cut_off: bool = False
    repairable: bool = False  # an answer came back, but not a valid one


def judge(result: dict[str, Any], schema: Schema) -> Verdict:
    """``result``: one line of ``runner results`` (OpenAI's batch-output shape)."""
    error = result.get("error")
    if isinstance(error, dict):
        return Verdict(reason=f"request failed: {error.get('message') or error.get('code')}")
    body: Any = (result.get("response") or {}).get("body")
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (TypeError, KeyError, IndexError):
        return Verdict(reason="the answer has no message")
    content = message.get("content") or ""
    if message.get("refusal"):
        return Verdict(reason=f"refused: {message['refusal']}")
    if choice.get("finish_reason") == "length":
        return Verdict(reason="cut off at max_tokens", content=content, cut_off=True, repairable=True)
    try:
        value = json.loads(content)
    except json.JSONDecodeError as exc:
        return Verdict(reason=f"not JSON ({exc.msg} at character {exc.pos})", content=content, repairable=True)
    problem = schema.problem(value)
    if problem is not None:
        return Verdict(reason=problem, content=content, repairable=True)
    return Verdict(rows=schema.rows(value), content=content)
