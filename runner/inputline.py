"""One input line into the request row ingest stores, with the first problem that makes the line unusable.

A line is the Batch API's input line: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
"body": {...}}``; ``method`` and ``url`` may be left out, and ``body.model`` may come from ``--model``. The stored
body is the line's body as compact JSON with ``model`` set; its hash covers the url too. A request that can never
succeed as written (longer than the model's context window) gets the reason, and is stored as failed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from runner.endpoints import ENDPOINTS
from runner.errors import ConfigError, InputError
from runner.limits import Limits, ModelInfo
from runner.rows import RequestRow
from runner.tokens import RequestCost, estimate

__all__ = ["LineReader", "dumps"]

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Compact JSON as stored: no spaces, text as it is."""
    return _ENCODER.encode(value)


_BOM = b"\xef\xbb\xbf"


class LineReader:
    """Input lines of ``path`` into rows as stored, with the reason a row could never be sent ("" if none).

    Made for millions of lines: the JSON decoder is built once and each model is looked up once per endpoint."""

    def __init__(self, path: str, limits: Limits, default_model: str | None) -> None:
        self.path, self.limits, self.default_model = path, limits, default_model
        self._models: dict[tuple[str, str], ModelInfo] = {}
        self._decode = json.JSONDecoder(parse_constant=_refuse_constant).decode

    def __reduce__(self) -> tuple[type[LineReader], tuple[str, Limits, str | None]]:
        return LineReader, (self.path, self.limits, self.default_model)  # sent to parser processes

    def __call__(self, line: int, raw: bytes) -> tuple[RequestRow, str]:
        def bad(problem: str) -> InputError:
            return InputError(self.path, line, problem)

        try:
            item = self._decode(raw.decode("utf-8-sig" if raw.startswith(_BOM) else "utf-8"))
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
        if body.get("stream"):
            raise bad(f"request {custom_id!r}: stream is not supported; remove it")
        model_name = body.get("model") or self.default_model
        model = self._models.get((url, model_name)) if isinstance(url, str) and isinstance(model_name, str) else None
        if model is None:
            model = self._model(custom_id, url, model_name, bad)
        if "model" not in body:
            body = {"model": model_name, **body}
        try:
            text = dumps(body)
            encoded = text.encode()
        except UnicodeEncodeError as exc:
            raise bad(f"request {custom_id!r}: text with a lone surrogate ({exc.object[exc.start:exc.end]!r}) is "
                      "not valid UTF-8; OpenAI would refuse it") from exc  # fmt: skip
        except (RecursionError, ValueError) as exc:
            raise bad(f"request {custom_id!r}: body cannot be sent as JSON ({exc})") from exc
        if not custom_id.isprintable() or custom_id != custom_id.encode(errors="replace").decode():
            raise bad(f"request {custom_id!r}: custom_id must be printable text")
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens", "n"):
            value = body.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10**9):
                raise bad(f"request {custom_id!r}: {key} must be a whole number from 1, not {json.dumps(value)[:40]}")
        cost = estimate(url, body, model.tokenizer, self.limits.output_reservation_tokens, model.max_output_tokens)
        digest = hashlib.sha256(url.encode() + b"\n" + encoded).hexdigest()
        row = RequestRow(custom_id, line, url, model.name, text, digest, cost.prompt_tokens, cost.output_tokens, cost.n)
        return row, _refusal(model, cost)

    def _model(self, custom_id: str, url: Any, model_name: Any, bad: Callable[[str], InputError]) -> ModelInfo:
        """The model a request names, checked once per endpoint and name."""
        if not isinstance(url, str) or url not in ENDPOINTS:
            raise bad(f"request {custom_id!r}: unsupported url {url!r} (supported: {', '.join(ENDPOINTS)})")
        if not isinstance(model_name, str):
            raise bad(f"request {custom_id!r}: no model; set body.model or pass --model")
        try:
            model = self.limits.model(model_name)
        except ConfigError as exc:
            raise bad(f"request {custom_id!r}: {exc}") from exc
        if url not in model.endpoints:
            raise bad(f"request {custom_id!r}: {model_name} does not serve {url} (serves {', '.join(model.endpoints)})")
        self._models[url, model_name] = model
        return model


def _refusal(model: ModelInfo, cost: RequestCost) -> str:
    """Why a request can never succeed as written on ``model`` ("" if it can)."""
    if cost.prompt_tokens > model.input_limit:
        return f"prompt of {cost.prompt_tokens:,} tokens exceeds {model.name}'s input limit of {model.input_limit:,}"
    if model.max_output_tokens and cost.output_tokens > model.max_output_tokens:
        return f"asks for {cost.output_tokens:,} output tokens; {model.name} allows {model.max_output_tokens:,}"
    if cost.prompt_tokens + cost.output_tokens > model.context_window:
        return (
            f"prompt {cost.prompt_tokens:,} + output {cost.output_tokens:,} tokens exceeds {model.name}'s "
            f"context window of {model.context_window:,}"
        )
    return ""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number OpenAI accepts")
