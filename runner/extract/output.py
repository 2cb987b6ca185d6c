"""``runner extract -o``: an extraction's table as CSV (nested values as JSON text) or JSONL (nested values as
JSON, booleans as true / false), written privately (it holds what the documents said)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from runner.commands import private_file
from runner.store import Store
from runner.store.extractions import META_COLUMNS

__all__ = ["write_table"]


def write_table(store: Store, name: str, kinds: dict[str, str], path: str) -> int:
    """The table of extraction ``name``, whose fields are ``kinds`` (name -> text, integer, number, boolean, json),
    to ``path`` (.csv, else JSONL); returns the rows written."""
    columns = [META_COLUMNS[0], META_COLUMNS[1], *kinds, *META_COLUMNS[2:]]
    count = 0
    with private_file(path) as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore") if Path(path).suffix.lower() == ".csv" else None
        if writer is not None:
            writer.writeheader()
        for row in store.extractions.extraction_rows(name):
            count += 1
            if writer is not None:
                writer.writerow(row)
            else:
                values = {c: _value(kinds.get(c), row.get(c)) for c in columns}
                f.write(json.dumps(values, ensure_ascii=False) + "\n")
    return count


def _value(kind: str | None, value: Any) -> Any:
    """A stored value as JSON: nested values parsed back, booleans (stored as 0 / 1) as true / false."""
    if kind == "json" and isinstance(value, str):
        return json.loads(value)
    if kind == "boolean" and value is not None:
        return bool(value)
    return value
