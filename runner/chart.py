"""``runner plan --chart``: the plan as a picture, for the person who decides on the tier.

Left: time to finish per tier, sync and batch side by side on a log axis (batch: the typical time where batches
were seen, up to the 24 h-per-wave promise), the deadline as a line. Right: the trade-off, cost against time for
every tier and mode; hollow where the tier's monthly usage limit is below the cost, a star on the cheapest plan
that meets the deadline. matplotlib is an optional extra (``pip install 'runner[chart]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.errors import ConfigError
from runner.money import usd
from runner.planner import Plan, duration

__all__ = ["check_chart_path", "draw"]

FORMATS = (".png", ".svg")
SYNC, BATCH = "#1f77b4", "#ff7f0e"
TICKS = [60, 600, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400, 365 * 86_400]


def check_chart_path(path: str) -> None:
    """Fail before any work if the chart cannot be drawn where asked."""
    if Path(path).suffix.lower() not in FORMATS:
        raise ConfigError(f"--chart {path}: give a .png or .svg file")
    if not Path(path).resolve().parent.is_dir():
        raise ConfigError(f"--chart {path}: the folder {Path(path).resolve().parent} does not exist")
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--chart needs matplotlib: pip install 'runner[chart]'") from exc
    return plt


def draw(plan: Plan, path: str) -> None:
    """Draw ``plan`` to ``path`` (.png or .svg)."""
    plt = _pyplot()
    tiers = [t for t in plan.rows if t.sync is not None or t.batch is not None]
    names = [t.tier + (" (you)" if t.tier == plan.current else "") for t in tiers]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.25, 1]})
    requests = f"{plan.workload.requests:,} requests"
    fig.suptitle(f"{requests}: time and cost at each tier", fontsize=13)

    x = range(len(tiers))
    sync = [t.sync.seconds if t.sync else float("nan") for t in tiers]
    bound = [t.batch.bound if t.batch else float("nan") for t in tiers]
    typical = [t.batch.typical if t.batch and t.batch.typical else None for t in tiers]
    left.bar([i - 0.2 for i in x], sync, width=0.4, color=SYNC, label="sync (rate limits)")
    left.bar([i + 0.2 for i in x], bound, width=0.4, color=BATCH, alpha=0.35, label="batch: up to 24 h a wave")
    if any(t is not None for t in typical):
        left.bar([i + 0.2 for i in x], [t or 0 for t in typical], width=0.4, color=BATCH, label="batch: typical here")
    for i, t in enumerate(tiers):
        if t.sync:
            left.annotate(t.sync.binding, (i - 0.2, sync[i]), ha="center", va="bottom", fontsize=8)
        if t.batch and t.batch.waves > 1:
            left.annotate(f"{t.batch.waves:,} waves", (i + 0.2, bound[i]), ha="center", va="bottom", fontsize=8)
    left.set_yscale("log")
    left.set_yticks(TICKS, [duration(s) for s in TICKS])
    left.set_xticks(list(x), names)
    left.set_ylabel("time to finish")
    deadline = plan.deadline
    if deadline:
        for axis in (left,):
            axis.axhline(deadline, color="crimson", linestyle="--", linewidth=1.2)
        left.annotate(f"deadline {duration(deadline)}", (len(tiers) - 0.5, deadline), color="crimson", ha="right",
                      va="bottom", fontsize=9)  # fmt: skip
    left.legend(fontsize=8, loc="upper right")
    left.grid(axis="y", alpha=0.3)

    top = 0.0
    for mode, color, below in (("sync", SYNC, False), ("batch", BATCH, True)):
        cost = plan.costs.sync if mode == "sync" else plan.costs.batch
        price = float(usd(cost))  # a point on the axis: the one place money becomes a float
        top = max(top, price)
        points: dict[float, list[str]] = {}  # tiers at the same time share one label
        for t in tiers:
            if mode == "sync" and t.sync is not None:
                seconds = t.sync.seconds
            elif mode == "batch" and t.batch is not None:
                seconds = t.batch.typical or t.batch.bound
            else:
                continue
            covered = cost <= t.monthly_limit
            chosen = plan.best == (t.tier, mode)
            right.scatter([seconds], [price], s=220 if chosen else 60, marker="*" if chosen else "o",
                          facecolors=color if covered else "none", edgecolors=color, zorder=3)  # fmt: skip
            points.setdefault(seconds, []).append(t.tier)
        last, lift = 0.0, 0
        for seconds in sorted(points):
            lift = lift + 1 if last and seconds / last < 2.5 else 0  # neighbours on the log axis: staggered
            last = seconds
            offset = -(12 + 9 * (lift % 3)) if below else 8 + 9 * (lift % 3)
            right.annotate(", ".join(points[seconds]), (seconds, price), textcoords="offset points",
                           xytext=(0, offset), ha="center", va="center", fontsize=7)  # fmt: skip
    if deadline:
        right.axvline(deadline, color="crimson", linestyle="--", linewidth=1.2)
    right.set_xscale("log")
    right.set_xticks(TICKS, [duration(s) for s in TICKS])
    right.set_xlabel("time to finish (batch: typical where seen, else the 24 h promise)")
    right.set_ylabel("cost (USD)")
    right.set_ylim(0, top * 1.25)
    right.scatter([], [], marker="o", facecolors="none", edgecolors="grey", label="above the tier's monthly limit")
    right.scatter([], [], marker="*", s=120, color="grey", label="cheapest that meets the deadline")
    right.scatter([], [], marker="o", color=SYNC, label="sync")
    right.scatter([], [], marker="o", color=BATCH, label="batch")
    right.legend(fontsize=8, loc="lower right")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
