"""Who may do what, wired into the request path: authentication, authorization, admission.

The middleware lets the anonymous paths through, identifies everyone else (401 Status when no
credential holds), and asks :func:`k3py.cluster.server.auth.authorize` with the request's
attributes (403 Status when refused). Handlers that write ask :func:`admission` for a check that
runs NodeRestriction on the object about to be stored.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from k3py.cluster.api import status
from k3py.cluster.server.auth import (
    RequestAttributes,
    UserInfo,
    admit,
    authorize,
    is_anonymous_path,
)
from k3py.cluster.server.rest.context import USER_KEY
from k3py.cluster.server.rest.http import RequestTarget, parse_target

Object = dict[str, Any]


class RequestAuthenticator(Protocol):
    """Identifies a request's user (``auth.Authenticator``; tests may use a fake)."""

    def authenticate(self, request: web.Request) -> UserInfo | None: ...


AUTHENTICATOR = web.AppKey("k3py.authenticator", RequestAuthenticator)


def is_resource_path(path: str) -> bool:
    segments = path.strip("/").split("/")
    return (segments[0] == "api" and len(segments) >= 3) or (
        segments[0] == "apis" and len(segments) >= 4
    )


def attributes(target: RequestTarget) -> RequestAttributes:
    return RequestAttributes(
        verb=target.verb,
        group=target.info.group,
        resource=target.info.plural,
        subresource=target.subresource,
        namespace=target.namespace or "",
        name=target.name or "",
    )


def user_of(request: web.Request) -> UserInfo | None:
    user = request.get(USER_KEY)
    return user if isinstance(user, UserInfo) else None


def _forbidden(user: UserInfo, attrs: RequestAttributes, reason: str) -> status.ApiError:
    if not attrs.resource:
        return status.ApiError(
            403,
            "Forbidden",
            f'forbidden: User "{user.name}" cannot {attrs.verb} path "{attrs.path}": {reason}',
        )
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    return status.forbidden(user.name, attrs.verb, attrs.group, resource, attrs.name, reason)


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_anonymous_path(request.path):
        return await handler(request)
    user = request.app[AUTHENTICATOR].authenticate(request)
    if user is None:
        raise status.unauthorized()
    request[USER_KEY] = user
    if is_resource_path(request.path):
        attrs = attributes(parse_target(request))
    else:
        attrs = RequestAttributes(
            verb=request.method.lower(), group="", resource="", path=request.path
        )
    reason = authorize(user, attrs)
    if reason is not None:
        raise _forbidden(user, attrs, reason)
    return await handler(request)


class Admission:
    """NodeRestriction for one request: refuses a node's write to what is not its own."""

    def __init__(self, user: UserInfo, attrs: RequestAttributes) -> None:
        self.user = user
        self.attrs = attrs

    async def __call__(self, obj: Object | None, old: Object | None) -> None:
        reason = admit(self.user, self.attrs, obj, old)
        if reason is not None:
            raise _forbidden(self.user, self.attrs, reason)


def admission(request: web.Request, target: RequestTarget) -> Admission | None:
    """The admission check for a write, or None when the user is not restricted."""
    user = user_of(request)
    if user is None or user.node_name is None or user.is_admin:
        return None
    return Admission(user, attributes(target))
