"""Hostile input lines: whatever the fuzzer makes, ingest either stores requests that OpenAI could take (strict JSON,
valid UTF-8, whole numbers SQLite can hold) or refuses the file naming the line, before anything is sent."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import InputError
from runner.jobfile import ingest
from runner.limits import Limits, load_limits
from runner.store import Store

from .conftest import ROOT

LIMITS: Limits = load_limits(ROOT / "tier_limits.json")

texts = st.text(alphabet=st.characters(codec=None), max_size=30)  # lone surrogates included
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)
printable = st.text(alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=20)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "x"]), "content": values}), max_size=3
)
outputs = st.one_of(st.integers(1, 200), st.integers(1, 200), st.integers(-(2**70), 2**70), values)
bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.just("gpt-4.1-mini"), st.just("gpt-4.1-mini"), st.sampled_from(["gpt-4o-mini", "nope", 7])),
     "messages": messages},
    optional={
        "max_tokens": outputs,
        "n": st.one_of(st.integers(1, 3), st.integers(-5, 2**66), values),
        "stream": st.just(False),
        "seed": st.integers(-(2**70), 2**70),
        "temperature": st.floats(allow_nan=True, allow_infinity=True),
        "extra": values,
    },
)  # fmt: skip
hostile = st.one_of(texts, values)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` seven times in eight."""
    return st.integers(0, 7).flatmap(lambda i: bad if i == 0 else good)


lines = st.fixed_dictionaries(
    {"custom_id": mostly(printable, hostile), "body": mostly(bodies, values)},
    optional={"url": st.sampled_from(["/v1/chat/completions", "/v1/chat/completions", "/v1/responses", "/v2/x", 5])},
)


def _encode(item: Any, how: int) -> bytes:
    text = json.dumps(item, allow_nan=True, ensure_ascii=how % 2 == 0)
    if how == 12:
        text = "[" * 5000 + "]" * 5000  # nesting far beyond reason
    return text.encode("utf-8", errors="surrogatepass")


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.tuples(lines, st.integers(0, 12)), min_size=1, max_size=3))
def test_every_line_is_stored_sendable_or_refused_with_its_number(tmp_path: Path, items: list[Any]) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(_encode(item, how) for item, how in items) + b"\n")
    with tempfile.TemporaryDirectory(dir=tmp_path) as each:
        store = Store(Path(each) / "fuzz.db")
        store.runs.acquire("fuzz", str(path))
        try:
            ingest(store, "fuzz", path, LIMITS)
        except InputError as exc:
            assert str(exc).startswith(f"{path}:") and 1 <= exc.line <= len(items)
            assert store.requests.counts("fuzz")["pending"] == 0, "nothing of a refused file is stored"
            return
        finally:
            store.close()
        store = Store(Path(each) / "fuzz.db")
        for (body,) in store.conn.execute("SELECT body FROM requests"):
            parsed = json.loads(body, parse_constant=lambda name: math.nan)
            assert json.dumps(parsed, allow_nan=False).encode("utf-8")  # strict JSON, valid UTF-8
            assert isinstance(parsed.get("model"), str)
        store.close()
