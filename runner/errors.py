"""The one exception tree of runner.

Every error a user can cause or must act on is a ``RunnerError``; its ``exit_code`` is what the CLI exits with
(see design.md). Anything that is not a ``RunnerError`` is a bug and shows a traceback.

    RunnerError                      base; never raised itself
    ├── ConfigError          (2)     tier_limits.json, tier, model, flags or environment are wrong
    │   └── AuthError        (2)     the API refused the key (401); the run's state is kept
    ├── InputError           (2)     a line of the input JSONL is wrong; carries path and line number
    ├── RunLocked            (2)     another live process is working on this run
    ├── StoppedEarly         (3)     the run stopped before finishing and can be resumed
    │   ├── QuotaExhausted   (3)     insufficient_quota: out of credit or over a spend limit
    │   ├── BudgetReached    (3)     --max-spend reached
    │   ├── DeadlineReached  (3)     --deadline passed
    │   ├── Interrupted      (3)     SIGINT or SIGTERM: what was in flight finished (or was handed back)
    │   ├── Unreachable      (3)     the API could not be reached at all for a while
    │   ├── TakenOver        (3)     another process took the run over; this one sent nothing more
    │   └── DiskFull         (3)     the database could not be written; nothing was recorded half-way
    ├── BatchAPIError        (2)     the Batch API refused a call for good (runner.batch.api)
    └── StateConflict        (70)    a store transition matched no row: a bug or a race, never ignored
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BatchAPIError",
    "BudgetReached",
    "ConfigError",
    "DeadlineReached",
    "DiskFull",
    "InputError",
    "Interrupted",
    "QuotaExhausted",
    "RunLocked",
    "RunnerError",
    "StateConflict",
    "StoppedEarly",
    "TakenOver",
    "Unreachable",
]


class RunnerError(Exception):
    """Base of every error runner raises on purpose."""

    exit_code = 2


class ConfigError(RunnerError):
    """Raised when configuration (tier_limits.json, --tier, --model, flags) cannot be used as given."""


class AuthError(ConfigError):
    """Raised when the API answers 401: the key is missing or wrong. Nothing is lost; fix the key and re-run."""


class InputError(RunnerError):
    """Raised when a line of the input file is unusable. ``line`` is 1-based; nothing of the file is stored."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        self.path, self.line, self.problem = path, line, problem
        super().__init__(f"{path}:{line}: {problem}")


class RunLocked(RunnerError):
    """Raised when another live process holds the run."""


class StoppedEarly(RunnerError):
    """Raised when a run stops before every request is final; running the same command again resumes it."""

    exit_code = 3


class QuotaExhausted(StoppedEarly):
    """Raised on insufficient_quota (credit or spend limit). Retrying never helps; add credit, then resume."""


class BudgetReached(StoppedEarly):
    """Raised when the run's recorded spend reaches --max-spend."""


class DeadlineReached(StoppedEarly):
    """Raised when --deadline passes with requests still pending."""


class Interrupted(StoppedEarly):
    """Raised when SIGINT or SIGTERM stops a run: nothing more was sent; what was in flight was recorded or handed
    back."""


class Unreachable(StoppedEarly):
    """Raised when the API could not be reached at all (connections refused or timing out, no answer) for a while:
    the requests are kept as they were, to send when it is back."""


class TakenOver(StoppedEarly):
    """Raised in a process whose run another process took over (it found this one gone or silent)."""


class DiskFull(StoppedEarly):
    """Raised when the database cannot be written (disk full, I/O error): nothing was recorded half-way."""


class BatchAPIError(RunnerError):
    """Raised when a Batch API control-plane call fails for good (a 4xx other than rate limits, or retries
    exhausted); ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, problem: str, status: int) -> None:
        self.status = status
        super().__init__(problem)


class StateConflict(RunnerError):
    """Raised when a compare-and-set transition of the store changes no row. Always a bug or a race."""

    exit_code = 70
