"""The store described for people, from the code itself: the request state machine and the tables' SQL. The
README's schema section is this text (``python -m runner.store.schema`` prints it; a test keeps them equal)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from runner.store.states import TRANSITIONS

__all__ = ["describe"]


def describe() -> str:
    """Markdown: one row per move of the transition table, then every table as created by the migrations."""
    from runner.store import Store

    lines = ["| move | from | to |", "|---|---|---|"]
    for move, transition in TRANSITIONS.items():
        sources = ", ".join(f"`{s.value}`" for s in sorted(transition.sources))
        lines.append(f"| {move.value} | {sources} | `{transition.target.value}` |")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "schema.db")
        tables = store.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT LIKE '\\_%' ESCAPE '\\'"
            " AND name NOT LIKE 'sqlite%' ORDER BY name"
        ).fetchall()
        store.close()
    lines += ["", "```sql"]
    lines += [_tidy(sql) + ";" for _, sql in tables]
    lines.append("```")
    return "\n".join(lines) + "\n"


def _tidy(sql: str) -> str:
    return "\n".join(line.rstrip() for line in sql.strip().splitlines() if line.strip())


if __name__ == "__main__":
    print(describe(), end="")
