"""``runner extract -o``: an extraction's table as CSV (nested values as JSON text) or JSONL (nested values as
JSON, booleans as true / false), written privately (it holds what the documents said)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from runner.extract.schema import load_schema
from runner.store import Store
from runner.store.extractions import META_COLUMNS

__all__ = ["write_table"]


def write_table(store: Store, name: str, schema: str, many: bool, path: str) -> int:
    spec = load_schema(schema, many)
    columns = [META_COLUMNS[0], META_COLUMNS[1], *spec.fields, *META_COLUMNS[2:]]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    count = 0
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore") if Path(path).suffix.lower() == ".csv" else None
        if writer is not None:
            writer.writeheader()
        for row in store.extraction_rows(name):
            count += 1
            if writer is not None:
                writer.writerow(row)
            else:
                values = {c: _value(spec.kinds.get(c), row.get(c)) for c in columns}
                f.write(json.dumps(values, ensure_ascii=False) + "\n")
    return count


def _value(kind: str | None, value: Any) -> Any:
    """A stored value as JSON: nested values parsed back, booleans (stored as 0 / 1) as true / false."""
    if kind == "json" and isinstance(value, str):
        return json.loads(value)
    if kind == "boolean" and value is not None:
        return bool(value)
    return value
