"""Request lines for an extraction: the instructions, the document and the strict schema, one line per document,
or per chunk of a long document; and the compact repair request for an answer that failed.

A document longer than ``max_input_tokens`` (the model's context less the output allowance, or the user's
``--max-input-tokens``) is split into chunks of that many tokens that overlap by ``overlap`` tokens when the
extraction gives many rows per document (``--many``: the rows of all chunks are merged); a single-object
extraction refuses it with the reason, since half a document cannot give the whole object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runner.encodings import encoding
from runner.extract.schema import Schema
from runner.extract.sources import Document
from runner.limits import ModelInfo

__all__ = ["Piece", "Refused", "pieces", "repair_line", "request_line"]

PROMPT_MARGIN = 200  # tokens for the instructions, the message framing and the schema's own cost, roughly
CHUNK = "#"  # custom_id of a chunk: ``{document id}#{k}/{n}``
REPAIR = "~repair"


@dataclass(frozen=True)
class Piece:
    """What one request extracts from: a document, or one chunk of it."""

    custom_id: str
    document: str
    text: str
    tokens: int


@dataclass(frozen=True)
class Refused:
    document: str
    reason: str


def pieces(
    docs: list[Document], model: ModelInfo, schema: Schema, max_input_tokens: int | None, overlap: int
) -> tuple[list[Piece], list[Refused]]:
    enc = encoding(model.tokenizer)
    room = model.context_window - PROMPT_MARGIN - len(enc.encode_ordinary(json.dumps(schema.sent)))
    limit = min(room, max_input_tokens) if max_input_tokens else room
    out: list[Piece] = []
    refused: list[Refused] = []
    for doc in docs:
        ids = enc.encode_ordinary(doc.text)
        if len(ids) <= limit:
            out.append(Piece(doc.id, doc.id, doc.text, len(ids)))
            continue
        if not schema.many:
            refused.append(Refused(doc.id, f"{doc.where}: {len(ids):,} tokens, over the limit of {limit:,}; a "
                                           "single-object extraction is not split (use --many, or raise "
                                           "--max-input-tokens)"))  # fmt: skip
            continue
        step = max(limit - overlap, 1)
        starts = list(range(0, max(len(ids) - overlap, 1), step))
        for k, start in enumerate(starts, 1):
            chunk = ids[start : start + limit]
            out.append(Piece(f"{doc.id}{CHUNK}{k}/{len(starts)}", doc.id, enc.decode(chunk), len(chunk)))
    return out, refused


def request_line(piece: Piece, model: str, instructions: str, schema: Schema, max_output: int) -> dict[str, Any]:
    return {
        "custom_id": piece.custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "system", "content": instructions}, {"role": "user", "content": piece.text}],
            "response_format": schema.response_format(),
            "max_tokens": max_output,
        },
    }


def repair_line(original: dict[str, Any], answer: str, reason: str, cut_off: bool, model_max: int) -> dict[str, Any]:
    """The original request with the failed answer and what was wrong with it; twice the output allowance after
    a cut-off (up to the model's maximum)."""
    body = dict(original["body"])
    body["messages"] = [
        *body["messages"],
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"That answer is not valid: {reason}. Reply with the corrected JSON only."},
    ]
    if cut_off:
        body["max_tokens"] = min(2 * int(body["max_tokens"]), model_max)
    return {**original, "custom_id": original["custom_id"] + REPAIR, "body": body}
