"""The write verbs over HTTP: create (POST), update (PUT) and patch (PATCH).

Each handler reads the body under the size cap, decodes it, checks that the kind and name match
the URL, applies ``fieldValidation`` (unknown and duplicate fields: refused with Strict, a
``Warning`` header with Warn, dropped silently with Ignore), honours ``dryRun=All`` and hands
the object to :mod:`~k3py.cluster.server.rest.engine`. Patches are applied to the stored object
with the engine for their content type, in a worker thread under a size and time budget; a
patch or update without a resourceVersion retries internally until the request's deadline when
a concurrent writer wins, one with a resourceVersion gets 409.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.bounded import WorkBudget
from k3py.cluster.api.customresources import CustomResourceInfo
from k3py.cluster.api.patch import apply_json_patch, apply_merge_patch, apply_strategic_merge_patch
from k3py.cluster.api.resources import ResourceInfo, by_kind
from k3py.cluster.server.openapi import unknown_fields
from k3py.cluster.server.rest import customobjects, engine, managedfields, typecheck
from k3py.cluster.server.rest.access import admission
from k3py.cluster.server.rest.context import REST, RestContext
from k3py.cluster.server.rest.http import (
    RequestTarget,
    decode_body,
    decode_object,
    find_duplicate_fields,
    json_response,
    media_type,
    read_body,
)
from k3py.cluster.server.rest.objects import CONFLICT_MESSAGE, Object

NAMESPACES = by_kind("v1", "Namespace")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as apiserver's generateName (no vowels)
_STRATEGIC = "application/strategic-merge-patch+json"
_MERGE = "application/merge-patch+json"
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", _STRATEGIC)
# Server-side apply: the configuration creates the object or is merged into it as a strategic
# merge patch, after :mod:`.managedfields` checked it against the other managers' fields.
APPLY = "application/apply-patch+yaml"
# unknown_fields paths: ``.spec.template`` keys, ``[0]`` list indexes, ``[name]`` map keys.
_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[([^\]]*)\]")
_RETRIES = 8
# Bodies larger than this are decoded in a worker thread (a 3 MiB body takes ~100 ms).
THREAD_DECODE_BYTES = 64 * 1024


@dataclass(frozen=True)
class WriteOptions:
    dry_run: bool
    field_validation: str  # Strict | Warn | Ignore


def _manager(request: web.Request, operation: str) -> managedfields.Manager:
    force = request.query.get("force", "").lower() == "true"
    user_agent = request.headers.get("User-Agent", "")
    return managedfields.manager_of(request.query, user_agent, operation, force)


def write_options(request: web.Request) -> WriteOptions:
    dry_run = request.query.getall("dryRun", [])
    for value in dry_run:
        if value != "All":
            raise status.bad_request(
                f'Invalid dryRun value "{value}": supported values are "All" or empty'
            )
    validation = request.query.get("fieldValidation", "Warn") or "Warn"
    canonical = {"strict": "Strict", "warn": "Warn", "ignore": "Ignore"}.get(validation.lower())
    if canonical is None:
        raise status.bad_request(
            f"fieldValidation must be one of Ignore, Warn or Strict, got {validation!r}"
        )
    return WriteOptions(dry_run=bool(dry_run), field_validation=canonical)


def check_kind(info: ResourceInfo, obj: Object) -> None:
    """Fill in apiVersion and kind from the URL when missing; 400 when they disagree with it."""
    api_version = obj.setdefault("apiVersion", info.api_version)
    kind = obj.setdefault("kind", info.kind)
    if api_version != info.api_version or kind != info.kind:
        raise status.bad_request(
            f"the object provided is a {kind} in {api_version}, but this endpoint serves"
            f" {info.kind} in {info.api_version}"
        )
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise status.bad_request("metadata must be an object")


def _drop(obj: Any, path: str) -> None:
    """Remove the field at an ``unknown_fields`` path (the server drops what it does not know)."""
    tokens = [
        m.group(1) if m.group(1) is not None else m.group(2) for m in _PATH_TOKEN.finditer(path)
    ]
    if path.endswith("."):
        tokens.append("")  # an empty key: ".metadata." names the key "" inside metadata
    current = obj
    for token in tokens[:-1]:
        if isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        elif isinstance(current, dict) and token in current:
            current = current[token]
        else:
            return
    if tokens and isinstance(current, dict):
        current.pop(tokens[-1], None)


def check_fields(
    info: ResourceInfo, obj: Object, raw: bytes | None, opts: WriteOptions
) -> list[str]:
    """Unknown and duplicate fields per ``fieldValidation``; returns the warnings to send."""
    if customobjects.is_custom(info):  # pruned against the CRD's schema, as reported
        unknown = customobjects.prune(info, obj)
    else:
        unknown = unknown_fields(info.api_version, info.kind, obj)
    duplicates = (
        find_duplicate_fields(raw) if raw is not None and opts.field_validation != "Ignore" else []
    )
    for path in unknown:
        _drop(obj, path)
    problems = [f'unknown field "{p.lstrip(".")}"' for p in unknown]
    problems += [f'duplicate field "{d}"' for d in duplicates]
    if not problems or opts.field_validation == "Ignore":
        return []
    if opts.field_validation == "Strict":
        raise status.bad_request("strict decoding error: " + ", ".join(problems))
    return problems


# kube-apiserver bounds Warning headers (4 KiB in all, long texts cut); clients such as
# Python's http.client refuse very long header lines.
MAX_WARNINGS = 10
MAX_WARNING_CHARS = 256
MAX_WARNING_HEADER_BYTES = 4096


def warning_header(warnings: list[str]) -> str:
    """The first few warnings, each cut to a readable length, and how many were left out."""
    shown: list[str] = []
    size = 0
    for warning in warnings[:MAX_WARNINGS]:
        text = warning if len(warning) <= MAX_WARNING_CHARS else warning[:253] + "..."
        item = "299 - " + json.dumps(text, ensure_ascii=True)
        if size + len(item) > MAX_WARNING_HEADER_BYTES - 100:
            break
        shown.append(item)
        size += len(item) + 2
    left = len(warnings) - len(shown)
    if left:
        shown.append("299 - " + json.dumps(f"and {left} more warnings"))
    return ", ".join(shown)


def respond(obj: Object, code: int, warnings: list[str]) -> web.Response:
    headers = {}
    if warnings:
        headers["Warning"] = warning_header(warnings)
    return json_response(obj, code=code, headers=headers)


async def namespace_accepts(ctx: RestContext, namespace: str) -> None:
    """New objects go only into namespaces that exist and are not being deleted."""
    if ctx.namespaces.active(ctx, namespace):
        return
    assert NAMESPACES is not None
    ns = await ctx.objects.get_or_none(NAMESPACES, None, namespace)
    if ns is None:
        raise status.not_found("", "namespaces", namespace)
    if ns["metadata"].get("deletionTimestamp"):
        error = status.ApiError(
            403,
            "Forbidden",
            f"unable to create new content in namespace {namespace} because it is being terminated",
            name=namespace,
            kind="namespaces",
        )
        error.causes.append(
            status.Cause(
                "NamespaceTerminating",
                f"namespace {namespace} is being terminated",
                "metadata.namespace",
            )
        )
        raise error


def place(target: RequestTarget, obj: Object) -> None:
    """The object's namespace and name agree with the URL (filled in where missing)."""
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise status.bad_request("metadata must be an object")
    if target.info.namespaced:
        given = meta.get("namespace")
        if given and given != target.namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the namespace sent on"
                " the request"
            )
        meta["namespace"] = target.namespace
    else:
        meta.pop("namespace", None)
    if target.name is not None and meta.get("name") != target.name:
        if not meta.get("name"):
            meta["name"] = target.name
        else:
            raise status.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the"
                f" URL ({target.name})"
            )


async def _read_object(
    request: web.Request, target: RequestTarget, opts: WriteOptions
) -> tuple[Object, list[str]]:
    """The body of a create or replace, checked alike for both and placed at the URL's name."""
    raw = await read_body(request, request.app[REST].settings.max_request_body_bytes)
    if len(raw) > THREAD_DECODE_BYTES:
        obj = await asyncio.to_thread(decode_object, raw, media_type(request))
    else:
        obj = decode_object(raw, media_type(request))
    check_kind(target.info, obj)
    typecheck.check(target.info, obj)
    warnings = check_fields(target.info, obj, raw, opts)
    place(target, obj)
    return obj, warnings


async def create(request: web.Request, target: RequestTarget) -> web.Response:
    ctx = request.app[REST]
    info = target.info
    opts = write_options(request)
    obj, warnings = await _read_object(request, target, opts)
    meta = obj["metadata"]
    if info.namespaced:
        await namespace_accepts(ctx, meta["namespace"])
    generate = meta.get("generateName") if not meta.get("name") else None
    if not meta.get("name") and not generate:
        raise status.invalid(
            info.group,
            info.kind,
            "",
            [
                status.Cause(
                    "FieldValueRequired", "name or generateName is required", "metadata.name"
                )
            ],
        )
    for attempt in range(_RETRIES if generate else 1):
        candidate = copy.deepcopy(obj) if generate else obj
        if generate:
            suffix = "".join(random.choices(_NAME_ALPHABET, k=5))  # noqa: S311 - not secret
            candidate["metadata"]["name"] = generate[:58] + suffix
        try:
            stored = await engine.create_object(
                ctx,
                info,
                candidate,
                dry_run=opts.dry_run,
                check=admission(request, target),
                manager=_manager(request, "Update"),
            )
        except status.ApiError as err:
            if err.reason == "AlreadyExists" and generate and attempt < _RETRIES - 1:
                continue
            raise
        return respond(stored, 201, warnings)
    raise AssertionError("unreachable")


def _precondition(obj: Object) -> int:
    value = obj.get("metadata", {}).get("resourceVersion") or ""
    if not value:
        return 0
    try:
        revision = int(value)
    except (TypeError, ValueError):
        raise status.bad_request(f"invalid resourceVersion {value!r}") from None
    if revision <= 0:
        raise status.bad_request(f"invalid resourceVersion {value!r}")
    return revision


def _stale(info: ResourceInfo, name: str) -> status.ApiError:
    return status.conflict(info.group, info.plural, name, CONFLICT_MESSAGE)


async def update(request: web.Request, target: RequestTarget) -> web.Response:
    ctx = request.app[REST]
    info = target.info
    assert target.name is not None
    opts = write_options(request)
    obj, warnings = await _read_object(request, target, opts)
    wanted = _precondition(obj)
    deadline = WorkBudget(0, ctx.settings.request_timeout_seconds)
    while True:
        deadline.check_time()
        old = await ctx.objects.get(info, target.namespace, target.name)
        if wanted and wanted != int(old["metadata"]["resourceVersion"]):
            raise _stale(info, target.name)
        try:
            stored = await engine.update_object(
                ctx,
                info,
                copy.deepcopy(obj),
                old,
                subresource=target.subresource,
                dry_run=opts.dry_run,
                check=admission(request, target),
                manager=_manager(request, "Update"),
            )
        except status.ApiError as err:
            if err.reason == "Conflict" and not wanted:
                continue  # an unconditional update: read again and retry
            raise
        return respond(stored, 200, warnings)


def apply_patch(
    info: ResourceInfo,
    old: Object,
    patch_type: str,
    patch: Any,
    budget: WorkBudget | None = None,
) -> Object:
    """``old`` with ``patch`` applied per its content type (a new object)."""
    base = copy.deepcopy(old)
    if patch_type == "application/json-patch+json":
        if not isinstance(patch, list):
            raise status.bad_request("a JSON patch must be a list of operations")
        result = apply_json_patch(base, patch, budget)
    elif patch_type == "application/merge-patch+json":
        if not isinstance(patch, dict):
            raise status.bad_request("a merge patch must be a JSON object")
        result = apply_merge_patch(base, patch, budget)
    else:
        if not isinstance(patch, dict):
            raise status.bad_request("a strategic merge patch must be a JSON object")
        result = apply_strategic_merge_patch(base, patch, info, budget)
    if not isinstance(result, dict):
        raise status.bad_request("the patched object is not a JSON object")
    return result


def _patched(
    info: ResourceInfo,
    old: Object,
    patch_type: str,
    body: Any,
    opts: WriteOptions,
    budget: WorkBudget,
) -> tuple[Object, list[str]]:
    """The patched object and its field warnings (CPU-bound: runs in a worker thread)."""
    patched = apply_patch(info, old, patch_type, body, budget)
    check_kind(info, patched)
    typecheck.check(info, patched)
    return patched, check_fields(info, patched, None, opts)


def _apply_configuration(target: RequestTarget, raw: bytes) -> Object:
    # JSON is YAML, and kubectl sends JSON; only YAML bodies pay for the YAML parser.
    config = decode_object(
        raw, "application/json" if raw.lstrip()[:1] == b"{" else "application/yaml"
    )
    check_kind(target.info, config)
    typecheck.check(target.info, config)
    place(target, config)
    config.pop("status", None)
    config["metadata"].pop("resourceVersion", None)
    return config


async def _create_applied(
    request: web.Request, target: RequestTarget, config: Object, opts: WriteOptions
) -> web.Response | None:
    """Create the object an apply names; None when it appeared meanwhile."""
    ctx = request.app[REST]
    obj = copy.deepcopy(config)
    warnings = check_fields(target.info, obj, None, opts)
    if target.info.namespaced:
        await namespace_accepts(ctx, obj["metadata"]["namespace"])
    try:
        stored = await engine.create_object(
            ctx,
            target.info,
            obj,
            dry_run=opts.dry_run,
            check=admission(request, target),
            manager=_manager(request, "Apply"),
        )
    except status.ApiError as err:
        if err.reason == "AlreadyExists":
            return None
        raise
    return respond(stored, 201, warnings)


async def patch(request: web.Request, target: RequestTarget) -> web.Response:
    ctx = request.app[REST]
    info = target.info
    assert target.name is not None
    opts = write_options(request)
    patch_type = media_type(request)
    if patch_type not in (*_PATCH_TYPES, APPLY) or (
        patch_type == _STRATEGIC and isinstance(info, CustomResourceInfo)
    ):  # custom kinds have no patch strategies: kube-apiserver refuses strategic patches too
        raise status.unsupported_media_type(patch_type)
    if patch_type == APPLY and not request.query.get("fieldManager"):
        raise status.bad_request("PATCH, fieldManager: Required value: is required for apply patch")
    raw = await read_body(request, ctx.settings.max_request_body_bytes)
    budget = WorkBudget(ctx.settings.max_request_body_bytes, ctx.settings.request_timeout_seconds)
    # Decoding and patching are CPU-bound and a small body can ask for much work: they run in
    # a worker thread under the budget, so the event loop keeps serving everyone else.
    if patch_type == APPLY:
        body: Any = await asyncio.to_thread(_apply_configuration, target, raw)
    else:
        body = await asyncio.to_thread(decode_body, raw, "application/json")
    while True:
        # Without a resourceVersion precondition a conflict only means that someone else
        # wrote first: patch their version, until the request's deadline (as kube-apiserver).
        budget.check_time()
        old = await ctx.objects.get_or_none(info, target.namespace, target.name)
        if old is None:
            if patch_type != APPLY or target.subresource:
                raise status.not_found(info.group, info.plural, target.name)
            created = await _create_applied(request, target, body, opts)
            if created is not None:
                return created
            continue  # created by someone else meanwhile: apply to theirs
        merge_type = patch_type
        if patch_type == APPLY:  # custom kinds have no patch strategies: a JSON merge
            merge_type = _MERGE if customobjects.is_custom(info) else _STRATEGIC
        patched, warnings = await asyncio.to_thread(
            _patched, info, old, merge_type, body, opts, budget
        )
        if patch_type == APPLY:
            applier = _manager(request, "Apply")
            for path in managedfields.released(old, body, applier, info.kind):
                managedfields.remove(patched, path)
        if patched["metadata"].get("name") != target.name:
            raise status.bad_request("the name of an object cannot be changed by a patch")
        if info.namespaced:
            patched["metadata"]["namespace"] = target.namespace
        # A resourceVersion in the patch is a precondition; without one, a concurrent write
        # just means patching the newer object.
        wanted = _precondition(patched)
        if wanted and wanted != int(old["metadata"]["resourceVersion"]):
            raise _stale(info, target.name)
        manager = _manager(request, "Apply" if patch_type == APPLY else "Update")
        if patch_type == APPLY:
            entries = managedfields.record_apply(info, old, body, manager, ctx.now())
            manager = replace(manager, entries=entries)
        try:
            stored = await engine.update_object(
                ctx,
                info,
                patched,
                old,
                subresource=target.subresource,
                dry_run=opts.dry_run,
                check=admission(request, target),
                manager=manager,
            )
        except status.ApiError as err:
            if err.reason == "Conflict":
                continue
            raise
        return respond(stored, 200, warnings)
