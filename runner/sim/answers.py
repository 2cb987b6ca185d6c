"""Deterministic answers in the official shapes: the same request body always gets the same text and usage.

Text is drawn from a vocabulary of one-token English words, its length seeded by the body's hash; a request
with ``response_format`` / ``text.format`` of type json_schema gets a JSON document valid against the schema.
A maximum below the natural length cuts the answer there with ``finish_reason: "length"``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import time
from collections.abc import Callable
from typing import Any

from runner.encodings import encoding
from runner.limits import ModelInfo
from runner.sim.counting import inputs_of, schema_of

__all__ = ["SHAPES", "Answer", "chat_completion", "compose", "embedding_list", "response_object", "schema_instance"]

WORDS = [
    "data",
    "model",
    "value",
    "result",
    "report",
    "system",
    "process",
    "order",
    "number",
    "market",
    "group",
    "service",
    "customer",
    "product",
    "level",
    "point",
    "price",
    "change",
    "record",
    "review",
    "status",
    "source",
    "table",
    "account",
    "amount",
    "answer",
    "area",
    "balance",
    "base",
    "benefit",
    "block",
    "board",
    "body",
    "book",
    "branch",
    "budget",
    "case",
    "cause",
    "center",
    "chance",
    "charge",
    "check",
    "choice",
    "city",
    "class",
    "client",
    "code",
    "cost",
    "count",
    "course",
    "court",
    "credit",
    "cycle",
    "date",
    "deal",
    "degree",
    "design",
    "detail",
    "device",
    "draft",
    "effect",
    "energy",
    "entry",
    "error",
    "event",
    "factor",
    "field",
    "figure",
    "file",
    "film",
    "focus",
    "form",
    "frame",
    "fund",
    "future",
    "game",
    "goal",
    "growth",
    "guide",
    "health",
    "history",
    "hour",
    "idea",
    "image",
    "index",
    "issue",
    "item",
    "job",
    "key",
    "land",
    "language",
    "law",
    "layer",
    "lead",
    "letter",
    "light",
    "limit",
    "line",
    "list",
    "loss",
    "map",
    "match",
]


def seed_of(body_text: str) -> int:
    return int.from_bytes(hashlib.sha256(body_text.encode()).digest()[:8], "big")


class Answer:
    """The generated output of one request: its text, token count and finish reason."""

    def __init__(self, text: str, tokens: int, finish_reason: str) -> None:
        self.text, self.tokens, self.finish_reason = text, tokens, finish_reason


def compose(
    seed: int,
    limit: int | None,
    schema: dict[str, Any] | None,
    tokenizer: str,
    length: tuple[int, int],
    flawed: float = 0.0,
) -> Answer:
    """The answer for ``seed``: schema JSON if asked, else ``length[0]..length[1]`` words; cut at ``limit``.
    ``flawed``: the share of schema answers that are wrong the ways models get them wrong (not JSON, a required
    field missing, cut off at max_tokens)."""
    rng = random.Random(seed)
    if schema is not None:
        value = schema_instance(schema, rng)
        text = json.dumps(value, separators=(",", ":"))
        if flawed and rng.random() < flawed:
            return _flawed(value, text, rng.choice(("not json", "missing", "cut off")), tokenizer)
    else:
        count = rng.randint(*length)
        text = " ".join(rng.choice(WORDS) for _ in range(count)).capitalize() + "."
    enc = encoding(tokenizer)
    ids = enc.encode_ordinary(text)
    if limit is not None and len(ids) > limit:
        return Answer(enc.decode(ids[:limit]), limit, "length")
    return Answer(text, len(ids), "stop")


def _flawed(value: Any, text: str, how: str, tokenizer: str) -> Answer:
    enc = encoding(tokenizer)
    if how == "missing" and isinstance(value, dict) and value:
        text = json.dumps(dict(list(value.items())[1:]), separators=(",", ":"))
    elif how == "cut off":
        ids = enc.encode_ordinary(text)
        return Answer(enc.decode(ids[: max(len(ids) // 2, 1)]), max(len(ids) // 2, 1), "length")
    else:
        text = text[: max(len(text) - 2, 1)]  # unbalanced: not JSON
    return Answer(text, len(enc.encode_ordinary(text)), "stop")


def schema_instance(schema: dict[str, Any], rng: random.Random, depth: int = 0) -> Any:
    """A small value valid against a JSON schema (the subset structured outputs allow)."""
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], rng, depth + 1)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: schema_instance(sub, rng, depth + 1) for name, sub in props.items()}
    if kind == "array":
        n = max(int(schema.get("minItems", 1)), 1) if depth < 4 else 0
        return [schema_instance(schema.get("items", {}), rng, depth + 1) for _ in range(n)]
    if kind == "string":
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 1000)))
    if kind == "number":
        return round(rng.uniform(float(schema.get("minimum", 0)), float(schema.get("maximum", 1000))), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _id(prefix: str, seed: int, counter: int) -> str:
    return f"{prefix}{hashlib.sha1(f'{seed}:{counter}'.encode()).hexdigest()[:24]}"


def chat_completion(
    seed: int, counter: int, model: str, choices: list[Answer], prompt_tokens: int, cached: int
) -> dict[str, Any]:
    completion = sum(a.tokens for a in choices)
    return {
        "id": _id("chatcmpl-", seed, counter),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": a.text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": a.finish_reason,
            }
            for i, a in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_sim0000001",
    }


def response_object(
    seed: int, counter: int, model: str, body: dict[str, Any], answer: Answer, prompt_tokens: int, cached: int
) -> dict[str, Any]:
    incomplete = answer.finish_reason == "length"
    return {
        "id": _id("resp_", seed, counter),
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if incomplete else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [
            {
                "type": "message",
                "id": _id("msg_", seed, counter),
                "status": "incomplete" if incomplete else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": answer.text, "annotations": [], "logprobs": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text", {"format": {"type": "text"}}),
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "metadata": body.get("metadata", {}),
        "usage": {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": answer.tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + answer.tokens,
        },
    }


def embedding_list(seed: int, model: str, inputs: int, dimensions: int, as_base64: bool, tokens: int) -> dict[str, Any]:
    data = []
    for i in range(inputs):
        rng = random.Random(seed + i)
        vector = [rng.uniform(-1, 1) for _ in range(dimensions)]
        norm = sum(v * v for v in vector) ** 0.5 or 1.0
        vector = [v / norm for v in vector]
        encoded: Any = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _chat(seed: int, counter: int, model: ModelInfo, body: dict[str, Any], prompt: int, cached: int,
          words: tuple[int, int], flawed: float = 0.0) -> tuple[dict[str, Any], int]:  # fmt: skip
    schema = schema_of("/v1/chat/completions", body)
    explicit = body.get("max_completion_tokens", body.get("max_tokens"))
    n = body.get("n", 1) if isinstance(body.get("n", 1), int) else 1
    choices = [compose(seed + i, explicit, schema, model.tokenizer, words, flawed) for i in range(n)]
    name = model.snapshot or model.name
    return chat_completion(seed, counter, name, choices, prompt, cached), sum(c.tokens for c in choices)


def _responses(seed: int, counter: int, model: ModelInfo, body: dict[str, Any], prompt: int, cached: int,
               words: tuple[int, int], flawed: float = 0.0) -> tuple[dict[str, Any], int]:  # fmt: skip
    schema = schema_of("/v1/responses", body)
    answer = compose(seed, body.get("max_output_tokens"), schema, model.tokenizer, words, flawed)
    name = model.snapshot or model.name
    return response_object(seed, counter, name, body, answer, prompt, cached), answer.tokens


def _embeddings(seed: int, counter: int, model: ModelInfo, body: dict[str, Any], prompt: int, cached: int,
                words: tuple[int, int], flawed: float = 0.0) -> tuple[dict[str, Any], int]:  # fmt: skip
    count = inputs_of(body)
    default = 3072 if model.name.endswith("large") else 1536
    dims = body.get("dimensions", default) if isinstance(body.get("dimensions"), int) else default
    as_b64 = body.get("encoding_format") == "base64"
    return embedding_list(seed, model.name, count, dims, as_b64, prompt), 0


# path -> builder of the answer body and its output tokens
SHAPES: dict[str, Callable[..., tuple[dict[str, Any], int]]] = {
    "/v1/chat/completions": _chat,
    "/v1/responses": _responses,
    "/v1/embeddings": _embeddings,
}
