"""Prompt tokens as the API counts them, from tiktoken's encodings loaded offline and hash-checked."""

from __future__ import annotations

import pytest

from runner.errors import ConfigError
from runner.tokens import count_prompt, encoding

COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch "
        "base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.mark.parametrize(("tokenizer", "api_count"), [("o200k_base", 124), ("cl100k_base", 129)])
def test_chat_estimate_matches_the_real_api_counts_from_the_cookbook(tokenizer: str, api_count: int) -> None:
    # OpenAI's cookbook "How to count tokens with tiktoken" printed these counts from the real API:
    # 124 for gpt-4o / gpt-4o-mini (o200k_base), 129 for gpt-4 (cl100k_base).
    assert count_prompt("/v1/chat/completions", {"messages": COOKBOOK_MESSAGES}, tokenizer) == api_count


def test_encodings_load_offline_from_verified_files() -> None:
    enc = encoding("o200k_base")
    assert enc.name == "o200k_base"
    assert enc.decode(enc.encode("hello world")) == "hello world"
    with pytest.raises(ConfigError, match="unknown tokenizer"):
        encoding("p50k_base")
