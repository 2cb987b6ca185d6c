"""The documents an extraction reads: a folder of text files, or a CSV / JSONL file with a text column.

Every document has an id (the file's path under the folder without its suffix; the id column; else the row
number) that names its rows in the output table and its requests in the store. Problems name the file and line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ConfigError

__all__ = ["TEXT_SUFFIXES", "Document", "read_documents"]

TEXT_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    where: str  # file (and line) it came from, for messages


def read_documents(source: str | Path, text_column: str = "text", id_column: str | None = None) -> list[Document]:
    """All documents of ``source``, in a stable order; ids must be unique."""
    path = Path(source)
    if path.is_dir():
        docs = list(_folder(path))
    elif path.suffix.lower() == ".csv":
        docs = list(_csv(path, text_column, id_column))
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        docs = list(_jsonl(path, text_column, id_column))
    elif not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    else:
        raise ConfigError(f"{path}: give a folder of {'/'.join(TEXT_SUFFIXES)} files, a .csv or a .jsonl file")
    seen: dict[str, str] = {}
    for doc in docs:
        if doc.id in seen:
            raise ConfigError(f"{doc.where}: duplicate document id {doc.id!r} (also {seen[doc.id]})")
        seen[doc.id] = doc.where
    if not docs:
        raise ConfigError(f"{path}: no documents found")
    return docs


def _folder(folder: Path) -> Iterator[Document]:
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES):
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        yield Document(file.relative_to(folder).with_suffix("").as_posix(), text, str(file))


def _csv(path: Path, text_column: str, id_column: str | None) -> Iterator[Document]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for column in (text_column, id_column):
            if column is not None and column not in columns:
                raise ConfigError(f"{path}:1: no column {column!r} (columns: {', '.join(columns) or 'none'})")
        for number, row in enumerate(reader, 2):
            yield _document(path, number, row.get(text_column), row.get(id_column) if id_column else None)


def _jsonl(path: Path, text_column: str, id_column: str | None) -> Iterator[Document]:
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{number}: expected a JSON object")
            if text_column not in row:
                raise ConfigError(f"{path}:{number}: no {text_column!r} key")
            ident = row.get(id_column) if id_column else None
            if id_column and ident is None:
                raise ConfigError(f"{path}:{number}: no {id_column!r} key")
            yield _document(path, number, row[text_column], None if ident is None else str(ident))


def _document(path: Path, number: int, text: object, ident: str | None) -> Document:
    where = f"{path}:{number}"
    if not isinstance(text, str):
        raise ConfigError(f"{where}: the text must be a string")
    if ident is not None and not ident.strip():
        raise ConfigError(f"{where}: empty document id")
    return Document(ident if ident is not None else str(number), text, where)
