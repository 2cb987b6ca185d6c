"""The API endpoints runner sends to: one row each, so adding an endpoint is adding a row.

A row says how to count a request's prompt tokens (what OpenAI bills and counts against TPM, as well as the
cookbook's formula estimates it), which body keys cap its output (reserved at admission), how to read the usage of
its answer, where a structured-output schema sits in its body, and how many inputs one request carries (the Batch
API caps embeddings files at 50,000 inputs).

Chat formula (cookbook, o200k models): 3 tokens per message + every value + 1 per ``name`` + 3 priming the reply;
``tools``, ``functions`` and ``response_format`` are counted as their JSON.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tiktoken

from runner.errors import ConfigError

__all__ = ["ENDPOINTS", "Endpoint", "Usage", "endpoint"]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


@dataclass(frozen=True)
class Usage:
    """Tokens an answer reports (cached ones are part of the prompt; reasoning ones of the output)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True)
class Endpoint:
    path: str
    count_prompt: Callable[[dict[str, Any], tiktoken.Encoding], int]
    output_keys: tuple[str, ...]  # the body keys that cap output, first found wins; none: no output
    read_usage: Callable[[dict[str, Any]], Usage]
    schema: Callable[[dict[str, Any]], dict[str, Any] | None]  # the json_schema a body asks its answer to follow
    inputs: Callable[[dict[str, Any]], int]  # inputs one request carries
    max_inputs: int | None = None  # most inputs in one batch file


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text_of(value: Any) -> str:
    """The text a message value contributes: strings as they are, text parts joined, other parts as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts: list[str] = []
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
            else:
                parts.append(json.dumps(part, separators=(",", ":")))
        return "".join(parts)
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


def _json_tokens(enc: tiktoken.Encoding, value: Any) -> int:
    return len(enc.encode_ordinary(json.dumps(value, separators=(",", ":"))))


@functools.lru_cache(maxsize=4096)
def _short_tokens(enc: tiktoken.Encoding, text: str) -> int:
    """Tokens of a short text (roles, names): the same few strings on every message."""
    return len(enc.encode_ordinary(text))


def _messages(enc: tiktoken.Encoding, messages: list[Any]) -> int:
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if not isinstance(message, dict):
            total += len(enc.encode_ordinary(_text_of(message)))
            continue
        for key, value in message.items():
            text = _text_of(value)
            total += _short_tokens(enc, text) if len(text) <= 16 else len(enc.encode_ordinary(text))
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _tools(enc: tiktoken.Encoding, body: dict[str, Any]) -> int:
    return sum(_json_tokens(enc, body[key]) for key in ("tools", "functions", "response_format") if body.get(key))


def _chat_prompt(body: dict[str, Any], enc: tiktoken.Encoding) -> int:
    messages = body.get("messages") or []
    return _messages(enc, messages if isinstance(messages, list) else [messages]) + _tools(enc, body)


def _responses_prompt(body: dict[str, Any], enc: tiktoken.Encoding) -> int:
    messages: list[Any] = []
    if body.get("instructions"):
        messages.append({"role": "developer", "content": body["instructions"]})
    given = body.get("input", "")
    messages.extend(given if isinstance(given, list) else [{"role": "user", "content": given}])
    text = body.get("text")
    extra = _json_tokens(enc, text["format"]) if isinstance(text, dict) and text.get("format") else 0
    return _messages(enc, messages) + _tools(enc, body) + extra


def _embeddings_prompt(body: dict[str, Any], enc: tiktoken.Encoding) -> int:
    inputs = body.get("input", "")
    items = inputs if isinstance(inputs, list) else [inputs]
    return sum(len(x) if isinstance(x, list) else len(enc.encode_ordinary(str(x))) for x in items)


def _chat_usage(body: dict[str, Any]) -> Usage:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        _int(usage.get("prompt_tokens")), _int(details.get("cached_tokens")), _int(usage.get("completion_tokens"))
    )


def _responses_usage(body: dict[str, Any]) -> Usage:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("input_tokens_details") or {}
    return Usage(_int(usage.get("input_tokens")), _int(details.get("cached_tokens")), _int(usage.get("output_tokens")))


def _chat_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    holder = fmt.get("json_schema")
    schema = holder.get("schema") if isinstance(holder, dict) else None
    return schema if isinstance(schema, dict) else {}


def _responses_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    schema = fmt.get("schema")
    return schema if isinstance(schema, dict) else {}


def _embedding_inputs(body: dict[str, Any]) -> int:
    given = body.get("input")
    return len(given) if isinstance(given, list) and given and not isinstance(given[0], int) else 1


ENDPOINTS: dict[str, Endpoint] = {
    e.path: e
    for e in (
        Endpoint(
            "/v1/chat/completions",
            _chat_prompt,
            ("max_completion_tokens", "max_tokens"),
            _chat_usage,
            _chat_schema,
            lambda body: 1,
        ),
        Endpoint(
            "/v1/responses", _responses_prompt, ("max_output_tokens",), _responses_usage, _responses_schema, lambda b: 1
        ),
        Endpoint(
            "/v1/embeddings",
            _embeddings_prompt,
            (),
            _chat_usage,
            lambda body: None,
            _embedding_inputs,
            max_inputs=50_000,
        ),
    )
}


def endpoint(path: str) -> Endpoint:
    """The row for ``path`` (``/v1/chat/completions``); ConfigError naming the supported ones otherwise."""
    try:
        return ENDPOINTS[path]
    except KeyError:
        raise ConfigError(f"unsupported url {path!r} (supported: {', '.join(ENDPOINTS)})") from None
