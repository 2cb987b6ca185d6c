"""What a simulator is told (``SimConfig``) and what it counts (``SimStats``)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runner.limits import Limits

__all__ = ["HEADER_TIMES", "SimConfig", "SimStats"]

HEADER_TIMES = ("answered", "sent")


@dataclass
class SimConfig:
    tier: str = "tier-1"
    limits: Limits | None = None
    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    window: float = 60.0  # seconds over which a minute's limit is enforced
    enforcement: str = "bucket"  # how: a token bucket, fixed clock windows or a sliding log (see buckets)
    headers: str = "minute"  # what x-ratelimit-* report: minute, bucket, window or none (see buckets)
    header_time: str = "answered"  # when the headers are read: at admission ("sent") or at the answer
    background: float = 0.0  # share of every limit another client of the organisation uses
    background_seconds: float | None = None  # it stops this long after the simulator starts (None: never)
    counting: str = "tiktoken"  # what the TPM limit counts of a request (runner.sim.counting: tiktoken, chars,
    # chars-no-refund, chars-max, xK)
    latency_scale: float = 1.0  # 0: answer at once
    first_token_seconds: float | None = None  # instead of the model's typical time to first token
    tokens_per_second: float | None = None  # instead of the model's typical output speed (0: instant)
    answer_words: tuple[int, int] = (20, 120)
    fault_rate: float = 0.0
    flawed_rate: float = 0.0  # share of structured-output answers that are not JSON, miss a field or are cut off
    seed: int = 0
    quota_usd: Decimal | None = None
    api_key: str | None = None  # when set, other keys get 401
    admin_key: str | None = None  # the admin API's key (default: any sk-admin-... key)
    project_id: str = "proj_sim"  # the one project the admin API knows
    hang_seconds: float = 30.0
    count_rejected: bool = True
    clock: Callable[[], float] = time.time
    batch_seconds: float = 2.0  # how long a batch takes on the simulator's fast clock
    batch_expire_seconds: float = 86_400.0  # the 24 h completion window, on the same clock
    batch_line_error_rate: float = 0.0  # share of batch lines answered with a 500 in the error file
    batch_queue_tokens: int | None = None  # instead of the tier's batch queue limit
    max_file_bytes: int = 200 * 1024 * 1024  # largest batch input file accepted at upload (OpenAI: 200 MB)


@dataclass
class SimStats:
    requests: int = 0
    answered: int = 0
    rate_limited: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter[str])
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    counted_tokens: int = 0  # what the TPM limit counted of the admitted requests, corrections included
    spend: int = 0  # picodollars
    in_flight: int = 0
    max_in_flight: int = 0
    first_request_at: float | None = None  # wall clock (time.time())
    last_reply_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": time.time(),
            "requests": self.requests,
            "answered": self.answered,
            "rate_limited": self.rate_limited,
            "errors": dict(self.errors),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "counted_tokens": self.counted_tokens,
            "spend_picodollars": self.spend,
            "max_in_flight": self.max_in_flight,
            "first_request_at": self.first_request_at,
            "last_reply_at": self.last_reply_at,
        }
