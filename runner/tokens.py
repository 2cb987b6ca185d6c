"""What a request may consume: its prompt tokens, counted offline with tiktoken, and its output reservation.

``RequestCost`` is what the gate reserves at admission: prompt tokens plus the output maximum, times ``n``. The
counting rules per endpoint are rows of ``runner.endpoints``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from runner.encodings import encoding
from runner.endpoints import endpoint

__all__ = ["RequestCost", "admission_tokens", "count_prompt", "estimate", "output_reservation"]


def admission_tokens(prompt_tokens: int, output_tokens: int, n: int = 1) -> int:
    """What a request counts against TPM (and the batch queue) when admitted: its prompt, and its output maximum
    for each of its ``n`` choices. The one home of this rule; the store's SQL mirrors it
    (``runner.store.requests.ADMITTED``)."""
    return prompt_tokens + output_tokens * n


def count_prompt(path: str, body: dict[str, Any], tokenizer: str) -> int:
    """Prompt tokens of a request body for endpoint ``path``, as the simulator bills them and OpenAI roughly does."""
    return endpoint(path).count_prompt(body, encoding(tokenizer))


def output_reservation(path: str, body: dict[str, Any], default: int, model_max: int) -> int:
    """Output tokens to reserve: the request's own maximum, else ``default``, never above the model's maximum."""
    keys = endpoint(path).output_keys
    if not keys:
        return 0
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return min(default, model_max) if model_max else default


class RequestCost(NamedTuple):
    """What one request may consume: ``prompt_tokens`` in, up to ``output_tokens`` out per choice, ``n`` choices."""

    prompt_tokens: int
    output_tokens: int
    n: int = 1

    @property
    def reserved(self) -> int:
        """Tokens the gate (and OpenAI) counts against TPM at admission."""
        return admission_tokens(self.prompt_tokens, self.output_tokens, self.n)


def estimate(path: str, body: dict[str, Any], tokenizer: str, default_output: int, model_max: int) -> RequestCost:
    n = body.get("n", 1)
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    return RequestCost(
        count_prompt(path, body, tokenizer),
        output_reservation(path, body, default_output, model_max),
        choices,
    )
