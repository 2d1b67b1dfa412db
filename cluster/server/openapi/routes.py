"""HTTP endpoints for the OpenAPI documents: ``/openapi/v2``, ``/openapi/v3`` and its documents.

As the Kubernetes API server does: every document carries an ``ETag`` (its hash, quoted) and
answers ``If-None-Match`` with 304; a v3 document fetched through its ``?hash=`` URL is
``Cache-Control: public, immutable`` with an ``Expires`` a year ahead, and a stale hash is
redirected to the current one; everything else is ``no-cache, private``. Documents are served
only as JSON — a request that accepts only protobuf (kubectl's first choice for v2) gets a 406
Status, which kubectl accepts once the v3 documents answer. Bodies go out gzip-compressed when
the client accepts it, straight from the compressed form the documents are kept in. The first
request reads the generated files (about 270 kB) in the event loop: cheaper than a thread.
"""

from __future__ import annotations

import email.utils
import json
import time

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.server.openapi import custom
from k3py.cluster.server.openapi.documents import Document, Documents
from k3py.cluster.server.rest.context import REST

JSON = "application/json"
_ACCEPTS_JSON = frozenset({JSON, "application/*", "*/*"})
# Asked for with "@v1.0" (kubectl); kube-openapi answers with the spelling Go's mime parser
# accepts ("." instead of "@") and takes both in Accept.
V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_V2_PROTOBUF = frozenset(
    {V2_PROTOBUF, "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"}
)
_YEAR = 365 * 24 * 3600


def add_routes(app: web.Application) -> None:
    """Serve ``GET /openapi/v2``, ``GET /openapi/v3`` and ``GET /openapi/v3/{group-version}``."""
    app.router.add_get("/openapi/v2", _v2)
    app.router.add_get("/openapi/v3", _v3_index)
    app.router.add_get("/openapi/v3/{path:.*}", _v3_document)


def _documents(request: web.Request) -> Documents:
    # The generated documents, plus those of the CRD kind and this server's custom resources.
    ctx = request.app.get(REST)
    return custom.documents(ctx.custom if ctx is not None else None)


def _error(error: status.ApiError) -> web.Response:
    return web.Response(status=error.code, body=error.to_json(), content_type=JSON)


def accepts_json(accept: str) -> bool:
    """Whether an ``Accept`` header admits JSON (no header admits anything)."""
    if not accept.strip():
        return True
    media = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(media & _ACCEPTS_JSON)


def _not_acceptable(request: web.Request) -> web.Response:
    accept = request.headers.get("Accept", "")
    return _error(
        status.not_acceptable(
            f"only application/json is supported for {request.path}, not {accept!r}"
        )
    )


def _serve(
    request: web.Request, document: Document, cache_control: str, content_type: str = JSON
) -> web.Response:
    etag = f'"{document.hash}"'
    headers = {"ETag": etag, "Cache-Control": cache_control, "Vary": "Accept, Accept-Encoding"}
    if cache_control.startswith("public"):
        headers["Expires"] = email.utils.formatdate(time.time() + _YEAR, usegmt=True)
    if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", "").lower():
        headers["Content-Encoding"] = "gzip"
        body = document.gzipped
    else:
        body = document.json()
    return web.Response(body=body, headers=headers, content_type=content_type)


def accepts_v2_protobuf(accept: str) -> bool:
    """Whether an ``Accept`` header asks for the v2 document as protobuf (kubectl does)."""
    media = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(media & _V2_PROTOBUF)


async def _v2(request: web.Request) -> web.Response:
    docs = _documents(request)
    accept = request.headers.get("Accept", "")
    if docs.v2_protobuf is not None and accepts_v2_protobuf(accept):
        return _serve(request, docs.v2_protobuf, "no-cache, private", V2_PROTOBUF)
    if not accepts_json(accept):
        return _not_acceptable(request)
    return _serve(request, docs.v2, "no-cache, private")


def index(docs: Documents) -> dict[str, dict[str, dict[str, str]]]:
    return {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={document.hash}"}
            for path, document in docs.v3.items()
        }
    }


async def _v3_index(request: web.Request) -> web.Response:
    if not accepts_json(request.headers.get("Accept", "")):
        return _not_acceptable(request)
    docs = _documents(request)
    headers = {"Cache-Control": "no-cache, private", "Vary": "Accept"}
    return web.Response(body=json.dumps(index(docs)).encode(), headers=headers, content_type=JSON)


async def _v3_document(request: web.Request) -> web.Response:
    path = request.match_info["path"].strip("/")
    docs = _documents(request)
    document = docs.v3.get(path)
    if document is None:
        return _error(status.path_not_found(request.path))
    if not accepts_json(request.headers.get("Accept", "")):
        return _not_acceptable(request)
    wanted = request.query.get("hash")
    if wanted is None:
        return _serve(request, document, "no-cache, private")
    if wanted != document.hash:
        # An old hash (the server was upgraded): send the client to the current document.
        location = f"/openapi/v3/{path}?hash={document.hash}"
        headers = {"Location": location, "Cache-Control": "no-cache, private"}
        return web.Response(status=301, headers=headers)
    return _serve(request, document, "public, immutable")
