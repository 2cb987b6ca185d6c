"""Text for people: the lines the CLI prints for a finished run, a status, a batch list, a spend report."""

from __future__ import annotations

from typing import Any

from runner.money import fmt_usd

__all__ = ["batches_lines", "run_summary", "spend_lines", "status_lines"]


def run_summary(name: str, counts: dict[str, int], spend: int, notices: list[str], stopped: str | None,
                failures: list[tuple[str, str]], db: str) -> list[str]:  # fmt: skip
    """The closing lines of ``runner run``: counts, spend, notices, why it stopped or what failed."""
    total = sum(counts.values())
    waiting = counts["pending"] + counts["in_flight"] + counts["batched"]
    cancelled = f", {counts['cancelled']:,} cancelled" if counts.get("cancelled") else ""
    lines = [
        f"run {name}: {counts['succeeded']:,} succeeded, {counts['failed']:,} failed{cancelled}, {waiting:,} pending "
        f"of {total:,}; spent {fmt_usd(spend)}"
    ]
    lines += [f"note: {notice}" for notice in dict.fromkeys(notices)]
    if stopped is not None:
        lines.append(f"stopped: {stopped}")
    elif counts["failed"]:
        lines += [f"  failed {custom_id}: {reason}" for custom_id, reason in failures]
        lines.append(f"see every failure: runner results --db {db} --name {name}")
    return lines


def status_lines(report: dict[str, Any]) -> list[str]:
    states = ", ".join(f"{k} {v:,}" for k, v in report["states"].items() if v)
    lines = [
        f"run {report['run']} ({report['input']}): {report['total']:,} requests: {states or 'none'}",
        f"spent ${report['spend_usd']}" + _owner(report.get("owner")),
    ]
    if report["batches"]:
        lines.append("batches: " + ", ".join(f"{n} {s}" for s, n in sorted(report["batches"].items())))
    for p in report["wave_plan"]:
        if p["waves"]:
            lines.append(
                f"wave plan {p['model']}: {p['pending_requests']:,} pending, ~{p['pending_tokens']:,} tokens = "
                f"{p['waves']} more wave(s) under the queue limit of {p['queue_limit']:,}"
            )
    lines += [f"  failed {f['custom_id']}: {f['reason']}" for f in report["first_failures"]]
    return lines


def batches_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for b in report["batches"]:
        counts = b["counts"] or {}
        lines.append(
            f"chunk {b['chunk']:>4} {b['model']:<14} {b['requests']:>7,} requests  {b['state']:<9} "
            f"{(b['status'] or '-'):<11} done {counts.get('completed', 0):,} failed {counts.get('failed', 0):,}"
            f"  age {b['age_seconds']:,}s  {b['batch_id'] or ''} {b['note'] or ''}".rstrip()
        )
    for p in report["plan"]:
        waves = f"{p['waves']} wave(s) under the queue limit of {p['queue_limit']:,}" if p["waves"] else "no limit"
        lines.append(
            f"pending {p['model']}: {p['pending_requests']:,} requests, ~{p['pending_tokens']:,} tokens: {waves}"
        )
    if not report["batches"] and not report["plan"]:
        lines.append("no batches and nothing pending")
    return lines


def spend_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['run']:<24} {r['model']:<16} {r['service_tier']:<9} {r['responses']:>9,} responses "
        f"{r['prompt_tokens']:>12,} in ({r['cached_tokens']:,} cached) {r['output_tokens']:>11,} out ${r['cost_usd']}"
        for r in report["rows"]
    ]
    lines.append(f"total ${report['total_usd']}")
    return lines


def _owner(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return ""
    if owner["state"] == "alive":
        return f"; a process is working on it ({owner['process']})"
    return f"; its last process ({owner['process']}) is {owner['state']}: the next run takes over"
