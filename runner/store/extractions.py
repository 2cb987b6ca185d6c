"""Extraction tables: one per extraction (``extract_<name>``), rebuilt from the stored answers in one transaction,
so a re-run never duplicates a row. Written through sqlite-utils: nested values are stored as JSON text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from runner.store.base import Part

__all__ = ["META_COLUMNS", "Extractions", "table_name"]

COLUMN_TYPES: dict[str, type] = {"text": str, "integer": int, "number": float, "boolean": int, "json": str}
META_COLUMNS = ("_source_id", "_row", "_status", "_reason")  # underscored: a schema field may be called "status"


def table_name(extraction: str) -> str:
    return "extract_" + re.sub(r"\W", "_", extraction)


class Extractions(Part):
    def save_extraction(self, extraction: str, fields: dict[str, str], rows: list[dict[str, Any]]) -> str:
        """Replace the table of ``extraction`` with ``rows`` (meta columns + one column per field, typed by
        ``fields``: text, integer, number, boolean or json); its name."""
        name = table_name(extraction)
        with self.transaction():
            table = self.db.table(name)
            if table.exists():
                table.drop()
            columns: dict[str, Any] = {"_source_id": str, "_row": int}
            columns.update({f: COLUMN_TYPES[kind] for f, kind in fields.items() if f not in columns})
            columns.update({"_status": str, "_reason": str})
            table.create(columns, pk=("_source_id", "_row"))
            table.insert_all(rows, alter=True)
        return name

    def extraction_rows(self, extraction: str) -> Iterator[dict[str, Any]]:
        table = self.db.table(table_name(extraction))
        if not table.exists():
            return iter(())
        return table.rows_where(order_by="_source_id, _row")
