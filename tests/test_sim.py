"""The simulator answers like OpenAI: shapes checked against the official openapi.yaml and parsed by the SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from runner.sim import SimThread
from runner.tokens import count_prompt


def call(
    sim: SimThread, method: str, path: str, body: dict[str, Any] | None = None, key: str = "sk-test"
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        sim.base_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def check(openapi: OpenAPI, method: str, path: str, body: dict[str, Any] | None, status: int, raw: bytes) -> None:
    request = MockRequest(
        "https://api.openai.com",
        method.lower(),
        f"/v1{path}",
        data=None if body is None else json.dumps(body).encode(),
        content_type="application/json",
    )
    openapi.validate_response(request, MockResponse(raw, status_code=status, content_type="application/json"))


CHAT = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 30}
JSON_CHAT = {
    **CHAT,
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "c",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"colours": {"type": "array", "items": {"type": "string"}}},
                "required": ["colours"],
                "additionalProperties": False,
            },
        },
    },
    "max_tokens": 200,
}
RESPONSES = {"model": "gpt-4.1-mini", "input": "Name three colours.", "max_output_tokens": 30}
EMBED = {"model": "text-embedding-3-small", "input": ["one", "two"]}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/chat/completions", CHAT),
        ("POST", "/chat/completions", JSON_CHAT),
        ("POST", "/responses", RESPONSES),
        ("POST", "/embeddings", EMBED),
        ("GET", "/models", None),
        ("GET", "/models/gpt-4.1-mini", None),
    ],
)
def test_answers_match_the_official_openapi_description(
    start_sim: Any, openapi: OpenAPI, method: str, path: str, body: dict[str, Any] | None
) -> None:
    sim = start_sim(latency_scale=0)
    status, headers, raw = call(sim, method, path, body)
    assert status == 200
    check(openapi, method, path, body, status, raw)
    if method == "POST":
        assert int(headers["x-ratelimit-limit-requests"]) > 0
        assert headers["x-request-id"].startswith("req_")


def test_the_admin_endpoint_lists_the_project_limits_in_pages(start_sim: Any, openapi: OpenAPI) -> None:
    sim = start_sim(latency_scale=0, tier="tier-2", rpm=1234)
    path = "/organization/projects/proj_sim/rate_limits"
    status, _, raw = call(sim, "GET", path + "?limit=2", key="sk-admin-abc")
    assert status == 200
    check(openapi, "GET", path, None, status, raw)
    seen, page = [], json.loads(raw)
    for _ in range(100):
        seen += page["data"]
        if not page["has_more"]:
            break
        status, _, raw = call(sim, "GET", f"{path}?limit=2&after={page['last_id']}", key="sk-admin-abc")
        page = json.loads(raw)
    mini = next(r for r in seen if r["model"] == "gpt-4.1-mini")
    # tier-2's row of tier_limits.json, with the simulator's own RPM
    assert (mini["max_requests_per_1_minute"], mini["max_tokens_per_1_minute"]) == (1234, 2_000_000)
    assert mini["batch_1_day_max_input_tokens"] == 20_000_000 and "max_requests_per_1_day" not in mini
    assert len({r["id"] for r in seen}) == len(seen) > 2
    assert call(sim, "GET", path, key="sk-test")[0] == 403  # a project key may not read it
    assert call(sim, "GET", "/organization/projects/proj_other/rate_limits", key="sk-admin-abc")[0] == 404


def test_the_sdk_parses_every_answer(start_sim: Any) -> None:
    sim = start_sim(latency_scale=0)
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
    chat = client.chat.completions.create(**CHAT)
    assert chat.usage is not None and chat.usage.prompt_tokens == count_prompt(
        "/v1/chat/completions", CHAT, "o200k_base"
    )
    assert chat.choices[0].finish_reason in ("stop", "length")
    structured = client.chat.completions.create(**JSON_CHAT)
    assert isinstance(json.loads(structured.choices[0].message.content or "")["colours"], list)
    response = client.responses.create(**RESPONSES)
    assert response.usage is not None and response.usage.input_tokens > 0
    vectors = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])  # SDK asks for base64
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 1536
    assert "gpt-4.1-mini" in {m.id for m in client.models.list()}
    client.close()


def test_same_request_same_answer(start_sim: Any) -> None:
    sim = start_sim(latency_scale=0)
    first = json.loads(call(sim, "POST", "/chat/completions", CHAT)[2])
    second = json.loads(call(sim, "POST", "/chat/completions", CHAT)[2])
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    assert first["usage"] == second["usage"]


@pytest.mark.parametrize("text", ["hi", "A longer message, with punctuation; numbers 12345 and émojis 🎉.", "x" * 3000])
def test_prompt_tokens_equal_the_runner_estimate(start_sim: Any, text: str) -> None:
    sim = start_sim(latency_scale=0)
    body = {
        "model": "gpt-4.1-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text, "name": "ana"}],
        "max_tokens": 5,
    }
    usage = json.loads(call(sim, "POST", "/chat/completions", body)[2])["usage"]
    assert usage["prompt_tokens"] == count_prompt("/v1/chat/completions", body, "o200k_base")


def test_max_tokens_cuts_the_answer_with_finish_reason_length(start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, answer_words=(50, 50))
    answer = json.loads(call(sim, "POST", "/chat/completions", {**CHAT, "max_tokens": 7})[2])
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 7


def test_sub_minute_window_rejects_a_burst_that_fits_the_minute(start_sim: Any, error_shape: Any) -> None:
    sim = start_sim(latency_scale=0, rpm=120, window=1.0)  # 2 per second
    statuses = [call(sim, "POST", "/chat/completions", CHAT) for _ in range(4)]
    assert [s for s, _, _ in statuses] == [200, 200, 429, 429]
    status, headers, raw = statuses[2]
    error = json.loads(raw)["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert "Please try again in" in error["message"] and "(RPM): Limit 120" in error["message"]
    assert int(headers["retry-after"]) >= 1 and 0 < int(headers["retry-after-ms"]) <= 1000
    assert headers["x-ratelimit-remaining-requests"] == "117"  # 2 answered + 1 refused: failed requests count
    error_shape(json.loads(raw))


def test_token_limit_and_request_too_large(start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, tpm=6_000, window=1.0)  # bucket of 100 tokens
    big = {**CHAT, "max_tokens": 7_000}
    status, headers, raw = call(sim, "POST", "/chat/completions", big)
    error = json.loads(raw)["error"]
    assert status == 429 and error["type"] == "tokens" and "Request too large" in error["message"]
    assert "retry-after" not in headers  # waiting never helps
    assert call(sim, "POST", "/chat/completions", {**CHAT, "max_tokens": 500})[0] == 200  # full bucket: into debt
    status, headers, raw = call(sim, "POST", "/chat/completions", CHAT)
    assert status == 429 and json.loads(raw)["error"]["type"] == "tokens"
    assert headers["x-ratelimit-reset-tokens"].endswith("s")


def test_requests_per_day(start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, rpd=2)
    assert [call(sim, "POST", "/chat/completions", CHAT)[0] for _ in range(3)] == [200, 200, 429]
    error = json.loads(call(sim, "POST", "/chat/completions", CHAT)[2])["error"]
    assert "requests per day (RPD): Limit 2" in error["message"]


def test_errors_in_official_shapes(start_sim: Any, error_shape: Any) -> None:
    sim = start_sim(latency_scale=0, api_key="sk-right")
    status, _, raw = call(sim, "POST", "/chat/completions", CHAT, key="sk-wrong-key-123")
    assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
    error_shape(json.loads(raw))
    assert b"sk-wrong-key-123" not in raw
    status, _, raw = call(sim, "POST", "/chat/completions", {**CHAT, "model": "gpt-9"}, key="sk-right")
    assert status == 404 and json.loads(raw)["error"]["code"] == "model_not_found"
    error_shape(json.loads(raw))
    long = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "word " * 130_000}]}
    status, _, raw = call(sim, "POST", "/chat/completions", long, key="sk-right")
    assert status == 400 and json.loads(raw)["error"]["code"] == "context_length_exceeded"
    error_shape(json.loads(raw))


def test_scripted_faults_and_quota(start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, quota_usd="0.0001")
    sim.call(lambda: sim.sim.script("500"))
    sim.call(lambda: sim.sim.script("503"))
    sim.call(lambda: sim.sim.script("slow_down"))
    assert call(sim, "POST", "/chat/completions", CHAT)[0] == 500
    status, _, raw = call(sim, "POST", "/chat/completions", CHAT)
    assert status == 503 and json.loads(raw)["error"]["code"] == "server_is_overloaded"
    assert json.loads(call(sim, "POST", "/chat/completions", CHAT)[2])["error"]["code"] == "slow_down"
    sim.call(lambda: sim.sim.script("reset"))
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        call(sim, "POST", "/chat/completions", CHAT)
    codes = [call(sim, "POST", "/chat/completions", {**CHAT, "max_tokens": 200})[0] for _ in range(40)]
    assert codes[0] == 200 and codes[-1] == 429  # quota of $0.0001 ran out
    last = call(sim, "POST", "/chat/completions", CHAT)[2]
    assert json.loads(last)["error"]["type"] == "insufficient_quota"


def test_prompt_caching_counts_a_repeated_long_prefix(start_sim: Any) -> None:
    sim = start_sim(latency_scale=0)
    prefix = "Background. " * 700  # ~1,400 tokens
    first = {**CHAT, "messages": [{"role": "system", "content": prefix}, {"role": "user", "content": "one"}]}
    second = {**CHAT, "messages": [{"role": "system", "content": prefix}, {"role": "user", "content": "two"}]}
    assert (
        json.loads(call(sim, "POST", "/chat/completions", first)[2])["usage"]["prompt_tokens_details"]["cached_tokens"]
        == 0
    )
    cached = json.loads(call(sim, "POST", "/chat/completions", second)[2])["usage"]["prompt_tokens_details"][
        "cached_tokens"
    ]
    assert cached >= 1024 and cached % 128 == 0


@pytest.mark.parametrize(
    ("counting", "expected"),
    [
        ("tiktoken", lambda prompt, chars, output, cap: prompt + output),
        ("chars", lambda prompt, chars, output, cap: -(-chars // 4) + output),
        ("chars-no-refund", lambda prompt, chars, output, cap: -(-chars // 4) + cap),
        ("chars-max", lambda prompt, chars, output, cap: max(-(-chars // 4), cap)),
        ("x1.5", lambda prompt, chars, output, cap: -(-3 * (prompt + output) // 2)),
    ],
)
def test_the_tokens_limit_counts_a_request_the_way_the_counting_mode_reads_the_rate_limit_guide(
    start_sim: Any, counting: str, expected: Any
) -> None:
    """What the TPM limit still holds against an answered request (its headers' ``limit - remaining``), worked out
    here from the answer's usage and the request's characters: the simulator's own count, not the client's."""
    sim = start_sim(rpm=1000, tpm=6000, counting=counting, latency_scale=0)
    status, headers, raw = call(sim, "POST", "/chat/completions", CHAT)
    assert status == 200
    usage = json.loads(raw)["usage"]
    held = int(headers["x-ratelimit-limit-tokens"]) - int(headers["x-ratelimit-remaining-tokens"])
    want = expected(usage["prompt_tokens"], len(json.dumps(CHAT)), usage["completion_tokens"], CHAT["max_tokens"])
    assert want - 2 <= held <= want  # the bucket refills 100 tokens a second meanwhile
    assert sim.sim.stats.counted_tokens == want


def test_an_unknown_counting_mode_is_refused_with_the_known_ones(start_sim: Any) -> None:
    from runner.errors import ConfigError

    with pytest.raises(ConfigError, match="chars-no-refund"):
        start_sim(counting="bytes")
