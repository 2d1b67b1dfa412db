"""Who may do what, wired into the request path: authentication, authorization, admission.

The middleware lets the anonymous paths through, identifies everyone else (401 Status when no
credential holds), and asks :func:`k3py.cluster.server.auth.authorize` with the request's
attributes (403 Status when refused); a node's read of a Secret, ConfigMap, claim or
ServiceAccount is then checked against the pods bound to it. A list or watch with the field
selector ``metadata.name=<name>`` in a namespace is authorized as a request for that one object,
as kube-apiserver's request-info resolver does, so a node can follow what it may get. Handlers
that write ask :func:`admission` for a check that runs NodeRestriction on the object about to be
stored.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from k3py.cluster.api import status
from k3py.cluster.api.resources import by_kind
from k3py.cluster.server import componentstatus
from k3py.cluster.server.auth import (
    RequestAttributes,
    UserInfo,
    admit,
    authorize,
    check_references,
    is_anonymous_path,
    needs_reference_check,
)
from k3py.cluster.server.metrics import nodeproxy as metrics_paths
from k3py.cluster.server.rbac import GROUP as RBAC_GROUP
from k3py.cluster.server.rbac import escalation_refusal
from k3py.cluster.server.rest import impersonation
from k3py.cluster.server.rest.context import REST, USER_KEY, RestContext
from k3py.cluster.server.rest.http import RequestTarget, parse_target
from k3py.cluster.server.satoken import SA_TOKENS, looks_like_jwt

Object = dict[str, Any]


class RequestAuthenticator(Protocol):
    """Identifies a request's user (``auth.Authenticator``; tests may use a fake)."""

    def authenticate(self, request: web.Request) -> UserInfo | None: ...

    def authenticate_token(self, token: str) -> UserInfo | None:
        """The user of a bearer token the server itself knows (not ServiceAccount tokens)."""
        ...


AUTHENTICATOR = web.AppKey("k3py.authenticator", RequestAuthenticator)


def is_resource_path(path: str) -> bool:
    segments = path.strip("/").split("/")
    return (segments[0] == "api" and len(segments) >= 3) or (
        segments[0] == "apis" and len(segments) >= 4
    )


PODS = by_kind("v1", "Pod")
SERVICE_ACCOUNTS = by_kind("v1", "ServiceAccount")
NO_RBAC_MATCH = "no RBAC policy matched"


def single_object_name(field_selector: str) -> str:
    """The name a ``metadata.name=<name>`` field selector (and nothing else) asks for, or ""."""
    terms = [t for t in field_selector.split(",") if t.strip()]
    if len(terms) != 1:
        return ""
    key, op, value = terms[0].partition("==") if "==" in terms[0] else terms[0].partition("=")
    if not op or key.strip() != "metadata.name" or value.startswith("="):
        return ""
    return value.strip()


def attributes(target: RequestTarget, query: Mapping[str, str] | None = None) -> RequestAttributes:
    name = target.name or ""
    if not name and target.verb in ("list", "watch") and query is not None:
        name = single_object_name(query.get("fieldSelector", ""))
    return RequestAttributes(
        verb=target.verb,
        group=target.info.group,
        resource=target.info.plural,
        subresource=target.subresource,
        namespace=target.namespace or "",
        name=name,
    )


def user_of(request: web.Request) -> UserInfo | None:
    user = request.get(USER_KEY)
    return user if isinstance(user, UserInfo) else None


def _forbidden(user: UserInfo, attrs: RequestAttributes, reason: str) -> status.ApiError:
    why = "" if reason == NO_RBAC_MATCH else reason  # RBAC's "no opinion" says nothing more
    if not attrs.resource:
        message = f'forbidden: User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
        return status.ApiError(403, "Forbidden", message + (f": {why}" if why else ""))
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    return status.forbidden(
        user.name, attrs.verb, attrs.group, resource, attrs.name, why, attrs.namespace
    )


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_anonymous_path(request.path):
        return await handler(request)
    user = request.app[AUTHENTICATOR].authenticate(request)
    if user is None:
        user = await _service_account_user(request)
    if user is None:
        raise status.unauthorized()
    if "Impersonate-User" in request.headers or "Impersonate-Group" in request.headers:
        user = await impersonation.resolve(request, user, decide)
    request[USER_KEY] = user
    if is_resource_path(request.path):
        attrs = (
            metrics_paths.request_attributes(request.path, request.method)
            or componentstatus.request_attributes(request.path, request.method)
            or attributes(parse_target(request), request.query)
        )
    else:
        attrs = RequestAttributes(
            verb=request.method.lower(), group="", resource="", path=request.path
        )
    reason = await decide(request.app[REST], user, attrs)
    if reason is None and needs_reference_check(user, attrs):
        reason = await _check_references(request, user, attrs)
    if reason is not None:
        raise _forbidden(user, attrs, reason)
    response = await handler(request)
    if attrs.resource in ("pods", "serviceaccounts") and attrs.verb.startswith("delete"):
        tokens = request.app.get(SA_TOKENS)
        if tokens is not None:  # their tokens stop working now, not when the trust lapses
            tokens.forget(attrs.namespace)
    return response


async def decide(ctx: RestContext, user: UserInfo, attrs: RequestAttributes) -> str | None:
    """The authorizer chain: system:masters and the Node authorizer, then RBAC."""
    reason = authorize(user, attrs)
    if reason is None:
        return None
    if await ctx.rbac.ready(ctx) and ctx.rbac.allows(user, attrs):
        return None
    if user.node_name is not None:
        return reason
    return NO_RBAC_MATCH


async def _service_account_user(request: web.Request) -> UserInfo | None:
    """The ServiceAccount a bearer JWT names, while it and its pod still exist."""
    tokens = request.app.get(SA_TOKENS)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if tokens is None or scheme.lower() != "bearer" or not looks_like_jwt(token.strip()):
        return None
    return await tokens.authenticate(token.strip(), functools.partial(uid_of, request.app[REST]))


async def uid_of(ctx: RestContext, resource: str, namespace: str, name: str) -> str | None:
    """The uid of a ServiceAccount or pod a token names; None once it is gone or going."""
    info = SERVICE_ACCOUNTS if resource == "serviceaccounts" else PODS
    assert info is not None
    found = await ctx.objects.get_or_none(info, namespace, name)
    if found is None or found["metadata"].get("deletionTimestamp"):
        return None
    return str(found["metadata"].get("uid", ""))


async def _check_references(
    request: web.Request, user: UserInfo, attrs: RequestAttributes
) -> str | None:
    """The graph answers once it follows the pods (it sees a binding before the node can);
    until then, the namespace's pods are read."""
    ctx = request.app[REST]
    graph = ctx.node_graph
    graph.ensure_running(ctx)
    node = user.node_name or ""
    if graph.synced:
        if graph.refers(node, (attrs.resource, attrs.namespace, attrs.name)):
            return None
        return (
            f'no relationship found between node "{node}" and this object'
            f" ({attrs.resource} {attrs.namespace}/{attrs.name})"
        )

    async def pods_in(namespace: str) -> Iterable[Mapping[str, Any]]:
        assert PODS is not None
        return await ctx.objects.list_all(PODS, namespace)

    return await check_references(user, attrs, pods_in)


class Admission:
    """NodeRestriction and RBAC escalation prevention for one request's write."""

    def __init__(self, user: UserInfo, attrs: RequestAttributes, ctx: RestContext) -> None:
        self.user = user
        self.attrs = attrs
        self.ctx = ctx

    async def __call__(self, obj: Object | None, old: Object | None) -> None:
        reason = admit(self.user, self.attrs, obj, old)
        if reason is None and obj is not None and self.attrs.group == RBAC_GROUP:
            await self.ctx.rbac.ready(self.ctx)
            reason = escalation_refusal(self.ctx.rbac, self.user, obj, self.attrs.namespace)
            if reason is not None:
                name = str((obj.get("metadata") or {}).get("name", ""))
                raise _forbidden(self.user, replace(self.attrs, name=name), reason)
        if reason is not None:
            raise _forbidden(self.user, self.attrs, reason)


def admission(request: web.Request, target: RequestTarget) -> Admission | None:
    """The admission check for a write, or None when the user is not restricted."""
    user = user_of(request)
    if user is None or user.is_admin:
        return None
    if user.node_name is None and target.info.group != RBAC_GROUP:
        return None
    return Admission(user, attributes(target), request.app[REST])
