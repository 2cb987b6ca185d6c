"""A batch's input file as the Batch API checks it when the batch starts: every line a JSON request with a body,
unique custom_ids, the batch's endpoint and one model, at most ``MAX_REQUESTS`` lines, not empty. The first
problem fails the batch, with OpenAI's error codes (``invalid_json_line``, ``duplicate_custom_id``,
``url_mismatch``, ``model_mismatch``, ``too_many_tasks``, ``empty_file``) and the line it is on."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_REQUESTS", "Line", "line_error", "read_input"]

MAX_REQUESTS = 50_000  # requests one batch may hold

Line = tuple[str, dict[str, Any], str]  # custom_id, body, the line as sent


def line_error(code: str, message: str, param: str | None = None, line: int | None = None) -> dict[str, Any]:
    """One entry of a failed batch's ``errors.data``."""
    return {"code": code, "message": message, "param": param, "line": line}


def read_input(content: bytes, endpoint: str) -> tuple[list[Line], set[str], list[dict[str, Any]]]:
    """The file's lines, the models they name, and the errors that fail the batch (empty when it may run)."""
    raw_lines = [x for x in content.split(b"\n") if x.strip()]
    if not raw_lines:
        return [], set(), [line_error("empty_file", "The input file is empty.")]
    if len(raw_lines) > MAX_REQUESTS:
        message = f"The batch has {len(raw_lines)} requests; the limit is {MAX_REQUESTS}."
        return [], set(), [line_error("too_many_tasks", message)]
    seen: set[str] = set()
    models: set[str] = set()
    lines: list[Line] = []
    for number, raw in enumerate(raw_lines, 1):
        try:
            item = json.loads(raw)
        except ValueError:
            item = None
        if not isinstance(item, dict) or not isinstance(item.get("body"), dict):
            return lines, models, [line_error("invalid_json_line", "This line is not parseable as valid JSON.",
                                              line=number)]  # fmt: skip
        custom_id = str(item.get("custom_id", ""))
        if custom_id in seen:
            message = f"The custom_id '{custom_id}' is duplicated in the file."
            return lines, models, [line_error("duplicate_custom_id", message, "custom_id", number)]
        if item.get("url") != endpoint:
            message = f"The url {item.get('url')!r} does not match the batch endpoint {endpoint!r}."
            return lines, models, [line_error("url_mismatch", message, "url", number)]
        models.add(str(item["body"].get("model")))
        if len(models) > 1:
            message = "All requests in a batch must use the same model."
            return lines, models, [line_error("model_mismatch", message, "body.model", number)]
        seen.add(custom_id)
        lines.append((custom_id, item["body"], raw.decode()))
    return lines, models, []
