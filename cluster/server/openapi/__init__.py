"""OpenAPI v2 and v3 documents for the served kinds, and unknown-field detection.

The documents describe every kind in :data:`k3py.cluster.api.resources.RESOURCES` with
Kubernetes' definition names and extensions, well enough that ``kubectl apply`` leaves field
validation to the server, ``kubectl explain`` prints fields with types and descriptions, and
``kubectl apply`` computes strategic merge patches from the merge keys. The documents are
rendered on the build host (``python -m tools.openapi.generate``) into the
committed ``generated/`` files; the server reads them on first use, never at import time, and
serves them as stored. Importing this package imports aiohttp (for :func:`add_routes`).
"""

from __future__ import annotations

from typing import Any

from k3py.cluster.server.openapi.data import OpenAPIError
from k3py.cluster.server.openapi.documents import served_documents
from k3py.cluster.server.openapi.fields import unknown_fields
from k3py.cluster.server.openapi.routes import add_routes, index

__all__ = [
    "OpenAPIError",
    "add_routes",
    "unknown_fields",
    "v2_document",
    "v3_document",
    "v3_index",
]


def v2_document() -> bytes:
    """The OpenAPI v2 (swagger 2.0) document of every served kind, as JSON."""
    return served_documents().v2.json()


def v3_index() -> dict[str, Any]:
    """``{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"}, …}}``."""
    return index(served_documents())


def v3_document(group_version: str) -> bytes | None:
    """The OpenAPI v3 document of one group/version ("api/v1", "apis/apps/v1"), as JSON; None
    for a group/version this server does not serve."""
    document = served_documents().v3.get(group_version.strip("/"))
    return document.json() if document is not None else None
