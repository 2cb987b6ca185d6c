"""How the simulator counts a request: its own reading of what OpenAI documents, written apart from the client's.

The simulator judges the client, so it never counts with the client's functions (it would agree with them by
construction); ``tests/test_layout.py`` keeps that boundary. Everything here is the simulator's own:

- ``prompt_tokens``: what an answer's usage reports and what is billed. Chat and Responses follow the formula of
  OpenAI's cookbook for o200k models (each message 3 tokens + the tokens of its values + 1 for a ``name``; 3
  priming the reply; tools and the output format as their JSON); embeddings the tokens of each input;
- ``output_cap``: the most a request may generate (``max_completion_tokens`` / ``max_tokens`` /
  ``max_output_tokens``, else the server's default);
- ``Counting``: what the rate limiter counts against TPM, at admission and once the answer is known. OpenAI's
  rate-limit guide says its limiter counts an estimate from the request's characters and its maximum output, not
  the model's tokenizer, and does not say whether the count is corrected after the answer; so each reading is a
  mode (``COUNTINGS``):

| counting          | counted at admission                     | corrected at the answer to     |
|-------------------|------------------------------------------|--------------------------------|
| tiktoken          | prompt + output cap x n                  | prompt + output                |
| chars             | characters of the request / 4 + cap x n  | characters / 4 + output        |
| chars-no-refund   | characters of the request / 4 + cap x n  | never corrected                |
| chars-max         | the larger of characters / 4 and cap x n | never corrected                |
| xK (x0.6, x1.5..) | K x (prompt + cap x n)                   | K x (prompt + output)          |

``prompt`` is the tokenizer's count above; "characters of the request" are those of its JSON body as sent.
``chars-max`` is the guide's wording read literally ("the maximum of max_tokens and the estimated number of tokens
based on the character count"): a short prompt with a large maximum output counts as the maximum alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import tiktoken

__all__ = ["COUNTINGS", "Counting", "choices_of", "counting", "inputs_of", "output_cap", "prompt_tokens", "schema_of"]

COUNTINGS = ("tiktoken", "chars", "chars-no-refund", "chars-max", "x0.6", "x1.5", "x2")

OUTPUT_KEYS = {
    "/v1/chat/completions": ("max_completion_tokens", "max_tokens"),
    "/v1/responses": ("max_output_tokens",),
    "/v1/embeddings": (),
}


def _flatten(value: Any) -> str:
    """The text a message's value is read as: text itself, text parts joined, anything else as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            part["text"]
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else part
            if isinstance(part, str)
            else json.dumps(part, separators=(",", ":"))
            for part in value
        )
    return json.dumps(value, separators=(",", ":"))


def _conversation(enc: tiktoken.Encoding, messages: list[Any]) -> int:
    tokens = 3  # priming the reply
    for message in messages:
        fields = message.items() if isinstance(message, dict) else [("content", message)]
        tokens += 3 + sum(len(enc.encode_ordinary(_flatten(v))) + (key == "name") for key, v in fields)
    return tokens


def _as_json(enc: tiktoken.Encoding, *values: Any) -> int:
    return sum(len(enc.encode_ordinary(json.dumps(v, separators=(",", ":")))) for v in values if v)


def prompt_tokens(path: str, body: dict[str, Any], enc: tiktoken.Encoding) -> int:
    """Prompt (input) tokens of a request to ``path``, as the answer's usage reports them."""
    extras = [body.get(key) for key in ("tools", "functions", "response_format")]
    if path == "/v1/embeddings":
        given = body.get("input", "")
        items = given if isinstance(given, list) else [given]
        return sum(len(x) if isinstance(x, list) else len(enc.encode_ordinary(str(x))) for x in items)
    if path == "/v1/responses":
        turns: list[Any] = [{"role": "developer", "content": body["instructions"]}] if body.get("instructions") else []
        given = body.get("input", "")
        turns += given if isinstance(given, list) else [{"role": "user", "content": given}]
        text = body.get("text")
        extras.append(text.get("format") if isinstance(text, dict) else None)
        return _conversation(enc, turns) + _as_json(enc, *extras)
    messages = body.get("messages") or []
    return _conversation(enc, messages if isinstance(messages, list) else [messages]) + _as_json(enc, *extras)


def output_cap(path: str, body: dict[str, Any], default: int, model_max: int) -> int:
    """The most a request to ``path`` may generate per choice: its own maximum, else the default (0: no output)."""
    keys = OUTPUT_KEYS.get(path, ())
    given = [body[k] for k in keys if isinstance(body.get(k), int) and not isinstance(body.get(k), bool)]
    if given:
        return int(given[0])
    return min(default, model_max) if keys and model_max else default if keys else 0


def choices_of(body: dict[str, Any]) -> int:
    n = body.get("n", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def schema_of(path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks its answer to follow ({} for one without a schema object), else None."""
    if path == "/v1/responses":
        text = body.get("text")
        fmt = holder = text.get("format") if isinstance(text, dict) else None
    else:
        fmt = body.get("response_format")
        holder = fmt.get("json_schema") if isinstance(fmt, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    found = holder.get("schema") if isinstance(holder, dict) else None
    return found if isinstance(found, dict) else {}


def inputs_of(body: dict[str, Any]) -> int:
    """How many inputs an embeddings request carries (a list of strings or of token lists; one otherwise)."""
    given = body.get("input")
    return len(given) if isinstance(given, list) and given and not isinstance(given[0], int) else 1


@dataclass(frozen=True)
class Counting:
    """One reading of what the TPM limiter counts (see the module docstring's table)."""

    name: str

    @property
    def refunds(self) -> bool:
        return self.name not in ("chars-no-refund", "chars-max")

    @property
    def scale(self) -> float:
        return float(self.name[1:]) if self.name.startswith("x") else 1.0

    def _input(self, prompt: int, text: str) -> float:
        return math.ceil(len(text) / 4) if self.name.startswith("chars") else prompt * self.scale

    def admitted(self, prompt: int, text: str, cap: int, n: int) -> int:
        """Tokens counted when the request is admitted."""
        if self.name == "chars-max":
            return max(math.ceil(len(text) / 4), cap * n)
        return math.ceil(self._input(prompt, text) + cap * n * self.scale)

    def answered(self, prompt: int, text: str, output: int) -> int:
        """What the count is corrected to once the answer is known (only where ``refunds``)."""
        return math.ceil(self._input(prompt, text) + output * self.scale)


def counting(name: str) -> Counting:
    """The counting called ``name``: one of ``COUNTINGS`` or any ``xK`` with K > 0; ValueError otherwise."""
    if not name.startswith("x") and name in COUNTINGS:
        return Counting(name)
    try:
        scale = float(name[1:]) if name.startswith("x") else math.nan
    except ValueError:
        scale = math.nan
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"unknown counting {name!r} (known: {', '.join(COUNTINGS)}, or xK for any K > 0)")
    return Counting(name)
