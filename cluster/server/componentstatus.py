"""``kubectl get componentstatuses`` (``cs``): the control plane's health as K3s reports it.

``/api/v1/componentstatuses`` lists ``scheduler``, ``controller-manager`` and ``etcd-0`` (the
datastore, as K3s names it whatever backs it), read-only and computed on each request, as
kube-apiserver serves them. The controllers and the scheduler run in the server holding the
Lease ``kube-system/k3py-control-plane`` (see :mod:`k3py.cluster.server.controllers.leader`), so
their health is that Lease's: Healthy while it has a holder that renewed it within its
``leaseDurationSeconds`` (with a second's slack), otherwise Unhealthy with the reason. The
scheduler is also Unhealthy when the server answering was started with
``--disable-scheduler`` (the servers of one cluster are started alike). ``etcd-0`` is Healthy
when the datastore answered the Lease read.
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.printing import Column
from k3py.cluster.api.resources import by_kind
from k3py.cluster.server.auth import RequestAttributes
from k3py.cluster.server.controllers.base import ControlPlaneSettings
from k3py.cluster.server.rest.context import REST
from k3py.cluster.server.rest.http import json_response, response_form

Object = dict[str, Any]
PATH = "/api/v1/componentstatuses"
LEASES = by_kind("coordination.k8s.io/v1", "Lease")
_LEASE = ControlPlaneSettings()
COLUMNS = (
    Column("Name", format="name", description="Name of the component"),
    Column("Status", description="Healthy or Unhealthy"),
    Column("Message", description="What the component reported"),
    Column("Error", description="Why the component is unhealthy"),
)


def discovery_entry() -> Object:
    """The resource's line in ``/api/v1`` (what makes ``kubectl get cs`` resolve)."""
    return {
        "name": "componentstatuses",
        "singularName": "componentstatus",
        "namespaced": False,
        "kind": "ComponentStatus",
        "verbs": ["get", "list"],
        "shortNames": ["cs"],
    }


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def lease_problem(lease: Object | None, now: datetime.datetime) -> str | None:
    """Why no server leads the control plane now, or None when one does."""
    if lease is None:
        return "no server has taken the control plane's lease yet"
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder:
        return "no server holds the control plane's lease"
    renewed = _parse_time(str(spec.get("renewTime") or spec.get("acquireTime") or ""))
    duration = float(spec.get("leaseDurationSeconds") or _LEASE.lease_duration)
    if renewed is None:
        return f"the control plane's lease (held by {holder}) has no renew time"
    age = (now - renewed).total_seconds()
    if age > duration + 1.0:
        return f"the leader {holder} last renewed its lease {age:.0f} s ago"
    return None


def _component(name: str, problem: str | None, message: str = "ok") -> Object:
    healthy = problem is None
    condition: Object = {"type": "Healthy", "status": "True" if healthy else "False"}
    if healthy:
        condition["message"] = message
    else:
        condition["error"] = problem
    return {
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name},
        "conditions": [condition],
    }


async def components(request: web.Request, now: datetime.datetime | None = None) -> list[Object]:
    from k3py.cluster.server.app import SETTINGS

    assert LEASES is not None
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        lease = await request.app[REST].objects.get_or_none(
            LEASES, _LEASE.lease_namespace, _LEASE.lease_name
        )
    except Exception as err:  # the datastore did not answer
        problem = f"the datastore did not answer: {err}"
        return [_component(n, problem) for n in ("scheduler", "controller-manager", "etcd-0")]
    leader = lease_problem(lease, now)
    scheduler = leader
    if scheduler is None and request.app[SETTINGS].disable_scheduler:
        scheduler = "the scheduler is disabled (--disable-scheduler)"
    return [
        _component("scheduler", scheduler),
        _component("controller-manager", leader),
        _component("etcd-0", None, '{"health":"true"}'),
    ]


def _row(obj: Object) -> Object:
    condition = obj["conditions"][0]
    healthy = condition["status"] == "True"
    cells = [
        obj["metadata"]["name"],
        "Healthy" if healthy else "Unhealthy",
        condition.get("message", ""),
        condition.get("error", ""),
    ]
    return {
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        },
    }


def _answer(request: web.Request, items: list[Object]) -> web.Response:
    form = response_form(request)
    if form == "table":
        return json_response(
            {
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {},
                "columnDefinitions": [c.to_dict() for c in COLUMNS],
                "rows": [_row(i) for i in items],
            }
        )
    return json_response(
        {"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items}
    )


async def list_components(request: web.Request) -> web.Response:
    return _answer(request, await components(request))


async def get_component(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    for item in await components(request):
        if item["metadata"]["name"] == name:
            if response_form(request) == "table":
                return _answer(request, [item])
            return json_response(item)
    raise status.not_found("", "componentstatuses", name)


def request_attributes(path: str, method: str) -> RequestAttributes | None:
    """What a componentstatuses request asks the authorizer (None: another path)."""
    if path != PATH and not path.startswith(PATH + "/"):
        return None
    name = path[len(PATH) + 1 :]
    verb = ("get" if name else "list") if method in ("GET", "HEAD") else method.lower()
    return RequestAttributes(verb=verb, group="", resource="componentstatuses", name=name)


def add_routes(app: web.Application) -> None:
    """Mount before the REST layer's generic ``/api/v1/{resource}`` routes."""
    app.router.add_get(PATH, list_components)
    app.router.add_get(PATH + "/{name}", get_component)
