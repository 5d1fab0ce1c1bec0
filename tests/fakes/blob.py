"""Fake Vercel Blob API (the wire the official SDKs use, API version 12).

``PUT /?pathname=<path>`` with ``authorization: Bearer vercel_blob_rw_<store>_<secret>``,
``x-api-version: 12``, ``x-vercel-blob-access: public`` and the raw bytes as the body answers
``{url, downloadUrl, pathname, contentType, contentDisposition, etag}``; the blob is then served
at its URL. ``POST /delete`` with ``{"urls": [...]}`` deletes them (unknown URLs are ignored, as
by the real service). ``GET /?prefix=&limit=&cursor=`` lists the blobs whose pathname starts with
the prefix: ``{blobs: [{url, downloadUrl, pathname, size, uploadedAt}], cursor, hasMore}``.
``stored`` holds the live blobs, ``deleted`` every URL deleted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from .base import FakeServer, Problems, Recorded, Reply, Route

__all__ = ["BlobFake"]

TOKEN_RE = re.compile(r"^vercel_blob_rw_([A-Za-z0-9]+)_([A-Za-z0-9]+)$")
PATHNAME_RE = re.compile(r"^[A-Za-z0-9._/-]{1,950}$")


class BlobFake(FakeServer):
    def __init__(self, token: str = "vercel_blob_rw_store123_secretABC") -> None:
        super().__init__()
        if not TOKEN_RE.match(token):
            raise ValueError("a read-write token looks like vercel_blob_rw_<store>_<secret>")
        self.token = token
        #: url -> (pathname, bytes, content type)
        self.stored: dict[str, tuple[str, bytes, str]] = {}
        self.deleted: list[str] = []

    def route(self, req: Recorded) -> Route | None:
        if req.method == "PUT" and req.path in ("", "/"):
            return Route("put", self._put, self._check_put)
        if req.method == "POST" and req.path == "/delete":
            return Route("delete", self._delete, self._check_delete)
        if req.method == "GET" and req.path in ("", "/"):
            return Route("list", self._list, self._check_list)
        return None

    def unknown_route(self, req: Recorded) -> Reply:
        return Reply.of_json(404, {"error": {"code": "not_found", "message": f"{req.method} {req.path}"}})

    def _auth(self, req: Recorded, p: Problems) -> Reply | None:
        h = req.header("authorization") or ""
        if not h.startswith("Bearer ") or not TOKEN_RE.match(h[7:]):
            p.add(f"authorization must be 'Bearer vercel_blob_rw_...', got {h[:20]!r}")
            return self.reject(p, Reply.of_json(403, {"error": {"code": "forbidden", "message": "Access denied"}}))
        if not hmac.compare_digest(h[7:].encode(), self.token.encode()):
            self.auth_failure("unknown blob token")
            return Reply.of_json(403, {"error": {"code": "forbidden", "message": "Access denied"}})
        if req.header("x-api-version") != "12":
            p.add(f"x-api-version must be '12', got {req.header('x-api-version')!r}")
        return None

    def _check_put(self, req: Recorded) -> Reply | None:
        p = Problems("blob put")
        denied = self._auth(req, p)
        if denied is not None:
            return denied
        pathname = req.query.get("pathname", "")
        if not PATHNAME_RE.match(pathname) or ".." in pathname or pathname.startswith("/"):
            p.add(f"query 'pathname' must be a relative path, got {pathname!r}")
        if req.header("x-vercel-blob-access") != "public":
            p.add(f"x-vercel-blob-access must be 'public', got {req.header('x-vercel-blob-access')!r}")
        if not req.header("x-content-type"):
            p.add("x-content-type is required (the content type the blob is served with)")
        if not req.body:
            p.add("the body (the file's bytes) is empty")
        if p:
            return self.reject(p, Reply.of_json(400, {"error": {"code": "bad_request", "message": p.first}}))
        return None

    def _put(self, req: Recorded) -> Reply:
        pathname = req.query["pathname"]
        ctype = str(req.header("x-content-type"))
        name = "blob/" + pathname
        with self._lock:
            url = self.url("/files/" + name)
            if url in self.stored and req.header("x-allow-overwrite") != "1":
                return Reply.of_json(400, {"error": {"code": "bad_request", "message": "This blob already exists"}})
            self.stored[url] = (pathname, req.body, ctype)
        self._put_file(name, req.body, ctype)
        return Reply.of_json(200, {
            "url": url,
            "downloadUrl": url + "?download=1",
            "pathname": pathname,
            "contentType": ctype,
            "contentDisposition": f'inline; filename="{pathname.rsplit("/", 1)[-1]}"',
            "etag": '"' + hashlib.md5(req.body).hexdigest() + '"',
        })  # fmt: skip

    def _check_list(self, req: Recorded) -> Reply | None:
        p = Problems("blob list")
        denied = self._auth(req, p)
        if denied is not None:
            return denied
        extra = set(req.query) - {"prefix", "limit", "cursor", "mode"}
        if extra:
            p.add(f"unknown query parameter(s) {sorted(extra)}")
        limit = req.query.get("limit", "1000")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            p.add(f"query 'limit' must be 1..1000, got {limit!r}")
        cursor = req.query.get("cursor", "0")
        if not cursor.isdigit():
            p.add(f"query 'cursor' must be one this API returned, got {cursor!r}")
        if p:
            return self.reject(p, Reply.of_json(400, {"error": {"code": "bad_request", "message": p.first}}))
        return None

    def _list(self, req: Recorded) -> Reply:
        prefix = req.query.get("prefix", "")
        limit = int(req.query.get("limit", "1000"))
        start = int(req.query.get("cursor", "0"))
        with self._lock:
            found = sorted((path, url, len(data)) for url, (path, data, _) in self.stored.items() if path.startswith(prefix))
        page = found[start : start + limit]
        more = start + limit < len(found)
        blobs = [{"url": url, "downloadUrl": url + "?download=1", "pathname": path, "size": size,
                  "uploadedAt": "2026-01-01T00:00:00.000Z"} for path, url, size in page]  # fmt: skip
        return Reply.of_json(200, {"blobs": blobs, "cursor": str(start + limit) if more else None, "hasMore": more})

    def _check_delete(self, req: Recorded) -> Reply | None:
        p = Problems("blob delete")
        denied = self._auth(req, p)
        if denied is not None:
            return denied
        body: Any = req.json
        urls = body.get("urls") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) != {"urls"}:
            p.add(f"body must be exactly {{'urls': [...]}}, got {body!r}"[:200])
        elif not isinstance(urls, list) or not 1 <= len(urls) <= 1000 or not all(isinstance(u, str) for u in urls):
            p.add("urls must be 1-1000 strings")
        if p:
            return self.reject(p, Reply.of_json(400, {"error": {"code": "bad_request", "message": p.first}}))
        return None

    def _delete(self, req: Recorded) -> Reply:
        with self._lock:
            for url in req.obj["urls"]:
                self.deleted.append(url)
                item = self.stored.pop(url, None)
                if item is not None:
                    self._files.pop("blob/" + item[0], None)
        return Reply(200, b"", {})

    def clear(self) -> None:
        super().clear()
        with self._lock:
            self.deleted.clear()
