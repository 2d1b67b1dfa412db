"""User impersonation: ``Impersonate-User`` and ``Impersonate-Group`` headers (``kubectl --as``).

As kube-apiserver: the authenticated user must be allowed to ``impersonate`` the user (resource
``users``, or ``serviceaccounts`` in the account's namespace for
``system:serviceaccount:<ns>:<name>``) and every group (``groups``); the request then runs as
the impersonated user, with ``system:authenticated`` and, for an account, its ServiceAccount
groups. ``Impersonate-Uid`` and ``Impersonate-Extra-*`` are not supported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.server.auth import AUTHENTICATED_GROUP, RequestAttributes, UserInfo
from k3py.cluster.server.rest.context import REST, RestContext
from k3py.cluster.server.satoken import SA_GROUP, SA_PREFIX

Decide = Callable[[RestContext, UserInfo, RequestAttributes], Awaitable[str | None]]


async def resolve(request: web.Request, user: UserInfo, decide: Decide) -> UserInfo:
    """The user the request acts as: ``user`` itself, or whom it may impersonate."""
    name = request.headers.get("Impersonate-User", "")
    groups = tuple(request.headers.getall("Impersonate-Group", []))
    if not name:
        if groups:
            raise status.bad_request("requested groups without impersonating a user")
        return user
    implied: tuple[str, ...] = ()
    if name.startswith(SA_PREFIX):
        namespace, _, account = name[len(SA_PREFIX) :].partition(":")
        wanted = [RequestAttributes("impersonate", "", "serviceaccounts", "", namespace, account)]
        implied = (SA_GROUP, f"{SA_GROUP}:{namespace}")
    else:
        wanted = [RequestAttributes("impersonate", "", "users", name=name)]
    wanted += [RequestAttributes("impersonate", "", "groups", name=group) for group in groups]
    ctx = request.app[REST]
    for attrs in wanted:
        reason = await decide(ctx, user, attrs)
        if reason is not None:
            raise status.forbidden(
                user.name, "impersonate", "", attrs.resource, attrs.name, reason, attrs.namespace
            )
    return UserInfo(name, (*implied, *groups, AUTHENTICATED_GROUP))
