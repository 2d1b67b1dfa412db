"""The HTTP edge of the REST layer: which resource a URL names, and how bodies come and go.

:func:`parse_target` turns ``/api/v1/namespaces/ns/pods/name/status`` (or an ``/apis/...``
path) into a :class:`RequestTarget` with the verb Kubernetes' authorizer speaks; the same target
serves authentication, authorization and the handlers. The rest reads request bodies under the
size cap, decodes them by content type, negotiates the response form (plain JSON, a
``meta.k8s.io`` Table, or partial object metadata) and writes ``Status`` errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from k3py.cluster.api import status, wire
from k3py.cluster.api.bounded import decode_json, decode_yaml
from k3py.cluster.api.customresources import CustomResourceRegistry
from k3py.cluster.api.resources import ResourceInfo, by_plural
from k3py.cluster.server.rest.context import REST

JSON = "application/json"
TARGET_KEY = "k3py.target"  # per-request cache of the parsed target

_MUTATING = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True)
class RequestTarget:
    info: ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str
    verb: str  # get list watch create update patch delete deletecollection

    @property
    def is_long_running(self) -> bool:
        return self.verb == "watch"


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in {"1", "true", "yes"}


def parse_target(request: web.Request) -> RequestTarget:
    """The resource a request addresses; raises 404/405 for paths no resource serves."""
    cached = request.get(TARGET_KEY)
    if isinstance(cached, RequestTarget):
        return cached
    ctx = request.app.get(REST)
    custom = ctx.custom if ctx is not None else None
    target = _parse(request.method, request.path, request.query.get("watch"), custom)
    request[TARGET_KEY] = target
    return target


def _parse(
    method: str, path: str, watch_param: str | None, custom: CustomResourceRegistry | None = None
) -> RequestTarget:
    segments = [unquote(s) for s in path.strip("/").split("/")]
    if segments[0] == "api" and len(segments) >= 3:
        group, version, rest = "", segments[1], segments[2:]
    elif segments[0] == "apis" and len(segments) >= 4:
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        raise status.path_not_found(path)
    watch = _truthy(watch_param)
    if rest[0] == "watch":  # the deprecated /watch/ paths
        watch, rest = True, rest[1:]
    namespace: str | None = None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest or not rest[0]:
        raise status.path_not_found(path)
    info = by_plural(group, version, rest[0])
    if info is None and custom is not None:  # built-in kinds first, at their usual cost
        info = custom.by_plural(group, version, rest[0])
    # Only a proxy subresource has more path after it (pods/web:80/proxy/index.html).
    if info is None or (len(rest) > 3 and rest[2] != "proxy"):
        raise status.path_not_found(path)
    name = rest[1] if len(rest) >= 2 else None
    subresource = rest[2] if len(rest) >= 3 else ""
    if namespace is not None and not info.namespaced:
        raise status.path_not_found(path)
    if info.namespaced and namespace is None and (name is not None or method != "GET"):
        raise status.path_not_found(path)
    if subresource and subresource not in info.subresources:
        raise status.path_not_found(path)
    if name == "":
        raise status.path_not_found(path)
    verb = _verb(method, name is not None, watch, path)
    if method == "POST" and name is not None and not subresource:
        raise status.method_not_allowed(method, path)
    if verb not in info.verbs and not subresource:
        raise status.method_not_allowed(method, path)
    return RequestTarget(info, namespace, name, subresource, verb)


def _verb(method: str, named: bool, watch: bool, path: str) -> str:
    if method in ("GET", "HEAD"):
        if watch:
            return "watch"
        return "get" if named else "list"
    if method in _MUTATING and named:
        return _MUTATING[method]
    if method == "POST":  # named: pods/binding, pods/eviction
        return "create"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    raise status.method_not_allowed(method, path)


# Response forms ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaRange:
    type: str
    params: dict[str, str]


def parse_accept(header: str) -> list[MediaRange]:
    ranges = []
    for item in header.split(","):
        parts = [p.strip() for p in item.split(";")]
        if not parts[0]:
            continue
        params: dict[str, str] = {}
        for part in parts[1:]:
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        ranges.append(MediaRange(parts[0].lower(), params))
    return ranges


def response_form(request: web.Request) -> str:
    """``json``, ``table`` or ``partial``: the first form in Accept that the server serves.

    Protobuf and YAML are skipped (the server speaks JSON); if nothing acceptable is left,
    the client gets 406.
    """
    header = request.headers.get("Accept", "")
    if not header:
        return "json"
    for media in parse_accept(header):
        if media.type not in (JSON, "*/*", "application/*"):
            continue
        wanted = media.params.get("as")
        if wanted is None:
            return "json"
        if media.params.get("g") != "meta.k8s.io" or media.params.get("v") not in (
            "v1",
            "v1beta1",
        ):
            continue
        if wanted == "Table":
            return "table"
        if wanted in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            return "partial"
    raise status.not_acceptable(
        "only the following media types are accepted: application/json, "
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    )


def json_response(
    body: Any, *, code: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=code,
        body=wire.encode(body),
        content_type=JSON,
        charset=None,
        headers=headers or None,
    )


def status_response(error: status.ApiError) -> web.Response:
    headers: dict[str, str] = {}
    if error.retry_after_seconds:
        headers["Retry-After"] = str(error.retry_after_seconds)
    return json_response(error.to_status(), code=error.code, headers=headers)


# Request bodies -------------------------------------------------------------------------


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 once it would exceed ``limit`` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise status.request_entity_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise status.request_entity_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", JSON).split(";", 1)[0].strip().lower() or JSON


def decode_body(data: bytes, content_type: str) -> Any:
    """A JSON (or YAML) request body as Python data; 400 when it does not parse."""
    if content_type in (JSON, "*/*"):
        return decode_json(data)
    if content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
        return decode_yaml(data)
    if content_type == "application/vnd.kubernetes.protobuf":
        # Only kubectl's typed commands send it; the decoder and its schema load on first use.
        from k3py.cluster.server.rest import protobuf

        return protobuf.decode_object(data)
    raise status.unsupported_media_type(content_type)


def decode_object(data: bytes, content_type: str) -> dict[str, Any]:
    value = decode_body(data, content_type)
    if not isinstance(value, dict):
        raise status.bad_request("the request body must be a JSON object")
    return value


def find_duplicate_fields(data: bytes) -> list[str]:
    """Keys that appear twice in one JSON object (``fieldValidation=Strict`` refuses them)."""
    duplicates: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                duplicates.append(key)
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(data, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return []
    return duplicates
