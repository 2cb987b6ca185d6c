"""--max-spend as a hard cap (runner.budget): worst cases reserved before sending, released at the real cost."""

from __future__ import annotations

from runner.budget import Budget, worst_case
from runner.limits import Limits


def test_a_request_s_worst_case_is_its_prompt_and_every_output_token_at_its_mode_s_prices(limits: Limits) -> None:
    mini = limits.model("gpt-4.1-mini")
    standard, batch = mini.prices["standard"], mini.prices["batch"]
    assert worst_case(mini, 1_000, 300, 2) == 1_000 * standard.input + 600 * standard.output  # n answers
    assert worst_case(mini, 1_000, 300, 1, "batch") == 1_000 * batch.input + 300 * batch.output
    assert worst_case(mini, 1_000, 300, 1, "no-such-tier") == worst_case(mini, 1_000, 300, 1)  # standard


def test_reserved_and_spent_never_pass_the_cap_and_a_settled_request_frees_its_reservation() -> None:
    budget = Budget(cap=100)
    assert budget.reserve(60) and budget.left == 40
    assert not budget.reserve(41) and budget.reserved == 60  # nothing held for what does not fit
    budget.settle(60, 25)  # it cost less than its worst case
    assert (budget.spent, budget.reserved, budget.left) == (25, 0, 75)
    assert budget.reserve(75) and not budget.reserve(1)
    unlimited = Budget(cap=None)
    assert unlimited.reserve(10**18) and unlimited.left is None
