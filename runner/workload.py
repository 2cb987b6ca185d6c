"""What a job asks of the API, summed the way the planner needs it.

A job is cut into pools: the requests of one model under one row of its limits (standard, or long context above
the model's line; OpenAI counts those against limits of their own). Per pool: requests, prompt tokens, the prompt
tokens a prompt cache would serve (``runner.caching``: shared prefixes of 1,024+ tokens, seen before), the output
allowance (max output x n: what admission and the batch queue count) and the output expected (the allowance,
unless answers already given say how much of it answers use).

Built from an input file (``from_file``), a stored run's pending requests (``from_store``) or plain numbers
(``synthetic``); ``calibrated`` applies what answered requests used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runner.caching import PromptCache, cacheable
from runner.endpoints import endpoint
from runner.errors import ConfigError
from runner.jobfile import read
from runner.limits import Limits
from runner.store import Calibration, Store

__all__ = ["Pool", "Workload", "from_file", "from_store", "pending", "synthetic"]


@dataclass(frozen=True)
class Pool:
    """Requests of one model under one row of its limits."""

    model: str
    long_context: bool = False
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, expected to be served from the prompt cache
    allowance: int = 0  # output tokens allowed (max output x n), summed
    output_tokens: int = 0  # output tokens expected, summed
    largest: int = 0  # the largest prompt + allowance of one request

    @property
    def admitted_tokens(self) -> int:
        """Tokens counted at admission (prompt + output allowance): what TPM and the batch queue see."""
        return self.prompt_tokens + self.allowance

    def add(self, prompt: int, cached: int, allowance: int) -> Pool:
        return replace(
            self,
            requests=self.requests + 1,
            prompt_tokens=self.prompt_tokens + prompt,
            cached_tokens=self.cached_tokens + cached,
            allowance=self.allowance + allowance,
            output_tokens=self.output_tokens + allowance,
            largest=max(self.largest, prompt + allowance),
        )


@dataclass(frozen=True)
class Workload:
    """The pools of a job, and what its expected output rests on (``basis``, said in every plan)."""

    pools: tuple[Pool, ...]
    basis: str = "output: the requests' max output tokens (no answers yet to measure it)"
    seconds: float | None = None  # measured mean round trip of an answer; None: the model's typical speed
    reused: int = 0  # requests left out: answered before in the database, reused at $0

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.pools)

    def calibrated(self, calibration: Calibration, what: str) -> Workload:
        """Expected output from ``calibration`` (answers of ``what``: a pilot, an earlier run of the job)."""
        if calibration.answers == 0 or calibration.allowance == 0:
            return self
        share = calibration.output_tokens / calibration.allowance
        pools = tuple(replace(p, output_tokens=round(p.allowance * share)) for p in self.pools)
        latency = "" if calibration.seconds is None else f", {calibration.seconds:.1f} s per answer"
        basis = (
            f"output: {share:.0%} of the max output tokens, as {calibration.answers:,} answers of {what} used{latency}"
        )
        return Workload(pools, basis, calibration.seconds, self.reused)


class _Builder:
    """Sums requests into pools, running their prompts through a prompt cache in job order."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.cache = PromptCache()
        self.pools: dict[tuple[str, bool], Pool] = {}

    def add(self, path: str, model_name: str, body: dict[str, Any], prompt: int, allowance: int) -> None:
        model = self.limits.model(model_name)
        generates = bool(endpoint(path).output_keys)
        cached = self.cache.cached(body, model.name, model.tokenizer, prompt) if generates else 0
        key = (model.name, model.is_long(prompt))
        self.pools[key] = self.pools.get(key, Pool(*key)).add(prompt, cached, allowance)

    def workload(self) -> Workload:
        return Workload(tuple(self.pools[k] for k in sorted(self.pools)))


def from_file(
    path: str | Path, limits: Limits, default_model: str | None = None, answered: Callable[[str], bool] | None = None
) -> Workload:
    """The requests of an input file that could be sent (those that never could are left out), less those
    ``answered`` before (by body hash: a run reuses their answers at $0)."""
    builder = _Builder(limits)
    reused = 0
    for row, refusal in read(path, limits, default_model):
        if refusal:
            continue
        if answered is not None and answered(row.body_hash):
            reused += 1
            continue
        builder.add(row.endpoint, row.model, json.loads(row.body), row.prompt_tokens, row.output_tokens * row.n)
    if reused and not builder.pools:
        raise ConfigError(f"{path}: all {reused:,} requests were answered before in this database: a run reuses "
                          "those answers at $0 (runner run --fresh sends them again)")  # fmt: skip
    return replace(_nonempty(builder.workload(), str(path)), reused=reused)


def from_store(store: Store, run: str, limits: Limits) -> Workload:
    """What run ``run`` still has pending."""
    builder = _Builder(limits)
    for path, model, body, prompt, output, n in store.requests.pending_requests(run):
        builder.add(path, model, json.loads(body), prompt, output * n)
    return _nonempty(builder.workload(), f"run {run!r}")


def pending(store: Store, run: str, limits: Limits) -> Workload:
    """What run ``run`` still has pending, from the stored token counts alone (fast; no prompt cache estimate):
    enough to choose a mode, not to price cached input."""
    pools = []
    for name in store.requests.pending_models(run):
        model = limits.model(name)
        for long, n, prompt, allowance, largest in store.requests.pending_totals(run, name, model.long_context_above):
            pools.append(Pool(name, long, n, prompt, 0, allowance, allowance, largest))
    return Workload(tuple(sorted(pools, key=lambda p: (p.model, p.long_context))))


def synthetic(
    limits: Limits, model_name: str, requests: int, input_tokens: int, output_tokens: int, shared_prefix: int = 0
) -> Workload:
    """``requests`` alike: ``input_tokens`` in, ``output_tokens`` out, the first ``shared_prefix`` tokens of every
    prompt the same (cached from the second request on, in OpenAI's steps)."""
    model = limits.model(model_name)
    cached = cacheable(min(shared_prefix, input_tokens))
    pool = Pool(
        model.name,
        model.is_long(input_tokens),
        requests,
        requests * input_tokens,
        max(requests - 1, 0) * cached,
        requests * output_tokens,
        requests * output_tokens,
        input_tokens + output_tokens,
    )
    return _nonempty(Workload((pool,), "output: as given"), "the figures given")


def _nonempty(workload: Workload, what: str) -> Workload:
    if workload.requests == 0:
        raise ConfigError(f"{what}: no requests to plan")
    return workload
