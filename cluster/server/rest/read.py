"""The read verbs: get and list, with selectors, pagination and resourceVersion semantics.

A list is served at one datastore revision: the latest (``resourceVersion`` unset, ``0`` or
``NotOlderThan``) or an exact one (``resourceVersionMatch=Exact``, or a ``limit`` with a
``resourceVersion``). ``limit`` pages are joined by a ``continue`` token carrying that revision
and the last key; a token whose revision was compacted gets 410 Expired, as from
kube-apiserver. Responses come as plain JSON, as a ``meta.k8s.io/v1`` Table (what ``kubectl
get`` asks for) or as partial object metadata.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.customresources import convert
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.selectors import FieldSelector, LabelSelector
from k3py.cluster.api.tables import to_table
from k3py.cluster.server.rest.context import REST, RestContext
from k3py.cluster.server.rest.http import RequestTarget, json_response, response_form
from k3py.cluster.server.rest.objects import Object, decode, too_large

_PAGE = 500


@dataclass(frozen=True)
class ListOptions:
    label_selector: LabelSelector | None
    field_selector: FieldSelector | None
    limit: int
    continue_token: str
    resource_version: str
    resource_version_match: str
    allow_bookmarks: bool
    timeout_seconds: float | None
    send_initial_events: bool | None

    def matches(self, obj: Object) -> bool:
        if self.label_selector is not None and not self.label_selector.matches(
            obj.get("metadata", {}).get("labels") or {}
        ):
            return False
        return self.field_selector is None or self.field_selector.matches(obj)

    @property
    def filtered(self) -> bool:
        return self.label_selector is not None or self.field_selector is not None


INT64_MAX = (1 << 63) - 1


def _int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise status.bad_request(f"{name}: invalid value {value!r}: must be an integer") from None
    if number < 0:
        raise status.bad_request(f"{name}: invalid value {value!r}: must not be negative")
    if number > INT64_MAX:
        raise status.bad_request(f"{name}: invalid value {value!r}: out of range for int64")
    return number


def _bool(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "t"):
        return True
    if lowered in ("", "0", "false", "no", "f"):
        return False
    raise status.bad_request(f"{name}: invalid value {value!r}: must be true or false")


def list_options(request: web.Request, info: ResourceInfo) -> ListOptions:
    query = request.query
    labels = query.get("labelSelector", "")
    fields = query.get("fieldSelector", "")
    match = query.get("resourceVersionMatch", "")
    version = query.get("resourceVersion", "")
    if match and match not in ("Exact", "NotOlderThan"):
        raise status.bad_request(
            f'resourceVersionMatch: Unsupported value: "{match}": supported values:'
            ' "Exact", "NotOlderThan"'
        )
    send_initial = _bool(request, "sendInitialEvents")
    if match and not version and not send_initial:
        raise status.bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless"
            " resourceVersion is provided"
        )
    if match == "Exact" and version == "0":
        raise status.bad_request(
            'resourceVersionMatch "Exact" is forbidden for resourceVersion "0"'
        )
    timeout = _int(request, "timeoutSeconds")
    return ListOptions(
        label_selector=LabelSelector.parse(labels) if labels else None,
        field_selector=FieldSelector.parse(fields, info) if fields else None,
        limit=_int(request, "limit") or 0,
        continue_token=query.get("continue", ""),
        resource_version=version,
        resource_version_match=match,
        allow_bookmarks=bool(_bool(request, "allowWatchBookmarks")),
        timeout_seconds=float(timeout) if timeout else None,
        send_initial_events=send_initial,
    )


def parse_revision(value: str) -> int:
    try:
        revision = int(value)
    except ValueError:
        raise status.bad_request(f'resourceVersion: Invalid value: "{value}"') from None
    if revision < 0 or revision > INT64_MAX:
        raise status.bad_request(f'resourceVersion: Invalid value: "{value}"')
    return revision


def encode_continue(revision: int, prefix: str, last_key: str) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": revision, "start": last_key[len(prefix) :]}
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def decode_continue(token: str, prefix: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        revision, start = int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise status.bad_request("continue key is not valid") from None
    if revision <= 0 or ".." in start or start.startswith("/"):
        raise status.bad_request("continue key is not valid")
    return revision, prefix + start


@dataclass(frozen=True)
class Page:
    items: list[Object]
    revision: int
    continue_token: str


async def list_objects(
    ctx: RestContext, info: ResourceInfo, namespace: str | None, opts: ListOptions
) -> Page:
    prefix = info.storage_prefix(namespace)
    start = ""
    revision = 0
    if opts.continue_token:
        if opts.resource_version and opts.resource_version != "0":
            raise status.bad_request(
                "specifying resource version is not allowed when using continue"
            )
        try:
            revision, start = decode_continue(opts.continue_token, prefix)
        except status.ApiError:
            raise
        if revision < ctx.objects.compact_revision:
            raise status.gone(
                "The provided continue parameter is too old to display a consistent list"
                " result. You can start a new list without the continue parameter."
            )
    elif opts.resource_version not in ("", "0"):
        wanted = parse_revision(opts.resource_version)
        exact = opts.resource_version_match == "Exact" or (
            not opts.resource_version_match and opts.limit > 0
        )
        if wanted > ctx.objects.revision:
            raise too_large(wanted, ctx.objects.revision)
        if exact:
            revision = wanted
    items: list[Object] = []
    last_key = ""
    while True:
        page_limit = _PAGE if (opts.limit or opts.filtered) else 0
        if opts.limit and not opts.filtered:
            page_limit = opts.limit - len(items)
        kvs, revision, more = await ctx.objects.list_page(
            prefix, revision=revision, start_after=start, limit=page_limit
        )
        for index, kv in enumerate(kvs):
            obj = convert(info, decode(kv))
            if opts.filtered and not opts.matches(obj):
                continue
            items.append(obj)
            if opts.limit and len(items) >= opts.limit:
                if index < len(kvs) - 1 or more:
                    last_key = kv.key
                break
        if last_key or not more or not kvs or (opts.limit and len(items) >= opts.limit):
            break
        start = kvs[-1].key
    token = encode_continue(revision, prefix, last_key) if last_key else ""
    return Page(items, revision, token)


def partial_metadata(obj: Object) -> Object:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def include_object(request: web.Request) -> str:
    value = request.query.get("includeObject", "Metadata") or "Metadata"
    if value not in ("None", "Metadata", "Object"):
        raise status.bad_request(
            f'includeObject: Unsupported value: "{value}": supported values: "Metadata",'
            ' "None", "Object"'
        )
    return value


def as_table(
    ctx: RestContext, request: web.Request, info: ResourceInfo, items: list[Object]
) -> dict[str, Any]:
    return to_table(info, items, now=ctx.clock(), include_object=include_object(request))


async def get(request: web.Request, target: RequestTarget) -> web.Response:
    ctx = request.app[REST]
    assert target.name is not None
    form = response_form(request)
    version = request.query.get("resourceVersion", "")
    if version not in ("", "0") and parse_revision(version) > ctx.objects.revision:
        raise too_large(parse_revision(version), ctx.objects.revision)
    obj = await ctx.objects.get(target.info, target.namespace, target.name)
    if form == "table":
        table = as_table(ctx, request, target.info, [obj])
        table["metadata"] = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
        return json_response(table)
    if form == "partial":
        return json_response(partial_metadata(obj))
    return json_response(obj)


async def list_(request: web.Request, target: RequestTarget) -> web.Response:
    ctx = request.app[REST]
    info = target.info
    form = response_form(request)
    opts = list_options(request, info)
    page = await list_objects(ctx, info, target.namespace, opts)
    meta: dict[str, Any] = {"resourceVersion": str(page.revision)}
    if page.continue_token:
        meta["continue"] = page.continue_token
    if form == "table":
        table = as_table(ctx, request, info, page.items)
        table["metadata"] = meta
        return json_response(table)
    if form == "partial":
        return json_response(
            {
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": [partial_metadata(o) for o in page.items],
            }
        )
    return json_response(
        {
            "kind": info.list_kind,
            "apiVersion": info.api_version,
            "metadata": meta,
            "items": page.items,
        }
    )
