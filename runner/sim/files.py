"""Files endpoints of the simulator: ``POST /v1/files`` (multipart), ``GET /v1/files`` (``purpose``, ``after``,
``limit``, ``order``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``.
A file over the batch input limit (200 MB unless configured), or a batch input not named ``.jsonl``, is
refused at upload as OpenAI does."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from runner.sim.http import Http

__all__ = ["FileService", "SimFile", "page"]


@dataclass
class SimFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


class FileService:
    def __init__(self, http: Http, now: Callable[[], float], max_bytes: int) -> None:
        self.http = http
        self.now = now
        self.max_bytes = max_bytes
        self.files: dict[str, SimFile] = {}

    def install(self, app: web.Application) -> None:
        guard = self.http.guard
        app.router.add_post("/v1/files", guard(self.upload))
        app.router.add_get("/v1/files", guard(self.list_files))
        app.router.add_get("/v1/files/{id}", guard(self.get_file))
        app.router.add_get("/v1/files/{id}/content", guard(self.file_content))
        app.router.add_delete("/v1/files/{id}", guard(self.delete_file))

    def bad(self, message: str, param: str | None = None, status: int = 400) -> web.Response:
        return self.http.bad(message, param, status)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            return self.bad("Expected a multipart/form-data upload.")
        purpose, filename, content, size = None, "upload.jsonl", b"", 0
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.read()).decode()
            elif part.name == "file":
                filename = part.filename or filename
                content, size = await self.read_capped(part)
        if purpose is None:
            return self.bad("Missing required parameter: 'purpose'.", "purpose")
        if size > self.max_bytes:
            return self.bad(
                f"File is too large: {size} bytes; batch input files may be at most {self.max_bytes / 2**20:g} MB.",
                "file",
            )
        if purpose == "batch" and not filename.endswith(".jsonl"):
            return self.bad("Invalid file format for Batch API. Must be .jsonl", "file")
        file = self.add_file(filename, purpose, content)
        return web.json_response(file.as_dict())

    async def read_capped(self, part: BodyPartReader) -> tuple[bytes, int]:
        """The part's bytes and its size, reading in chunks and keeping nothing past the limit (a file over it is
        refused whole, so the server never holds more than the limit)."""
        kept, size = bytearray(), 0
        while chunk := await part.read_chunk(1 << 20):
            size += len(chunk)
            if size <= self.max_bytes:
                kept += chunk
        return bytes(kept), size

    def add_file(self, filename: str, purpose: str, content: bytes) -> SimFile:
        file = SimFile(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, content, int(self.now()))
        self.files[file.id] = file
        return file

    async def list_files(self, request: web.Request) -> web.StreamResponse:
        purpose = request.query.get("purpose")
        items = sorted(
            (f for f in self.files.values() if purpose in (None, f.purpose)),
            key=lambda f: (f.created_at, f.id),
            reverse=request.query.get("order", "desc") == "desc",
        )
        return web.json_response(page([f.as_dict() for f in items], request))

    def _file(self, request: web.Request) -> SimFile | web.Response:
        file = self.files.get(request.match_info["id"])
        if file is None:
            return self.bad(f"No such File object: {request.match_info['id']}", "id", 404)
        return file

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        file = self._file(request)
        return file if isinstance(file, web.Response) else web.json_response(file.as_dict())

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        file = self._file(request)
        if isinstance(file, web.Response):
            return file
        return web.Response(body=file.content, content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.StreamResponse:
        file = self._file(request)
        if isinstance(file, web.Response):
            return file
        del self.files[file.id]
        return web.json_response({"id": file.id, "object": "file", "deleted": True})


def page(items: list[dict[str, Any]], request: web.Request) -> dict[str, Any]:
    """OpenAI-style cursor pagination: ``after`` an id, ``limit`` items (default 20, at most 100)."""
    after = request.query.get("after")
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    try:
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
    except ValueError:
        limit = 20
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
