"""Objects every cluster has from its first start, created (or repaired) at each start.

The namespaces ``default``, ``kube-system``, ``kube-public`` and ``kube-node-lease``, a
``default`` ServiceAccount in every namespace, and the ``kubernetes`` Service in ``default``
with the first address of the service CIDR and Endpoints pointing at this server.
"""

from __future__ import annotations

import logging
from typing import Any

from k3py.cluster.api import status
from k3py.cluster.api.resources import ResourceInfo, by_kind
from k3py.cluster.server.rest import engine
from k3py.cluster.server.rest.context import RestContext

logger = logging.getLogger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NAMESPACES = by_kind("v1", "Namespace")
SERVICES = by_kind("v1", "Service")
ENDPOINTS = by_kind("v1", "Endpoints")


def _info(info: ResourceInfo | None) -> ResourceInfo:
    assert info is not None
    return info


async def _create_missing(ctx: RestContext, info: ResourceInfo, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    if await ctx.objects.get_or_none(info, meta.get("namespace"), meta["name"]) is not None:
        return
    try:
        await engine.create_object(ctx, info, obj)
    except status.ApiError as err:
        if err.reason != "AlreadyExists":
            raise


async def ensure_defaults(ctx: RestContext, advertise_address: str, port: int) -> None:
    for name in SYSTEM_NAMESPACES:
        await _create_missing(
            ctx,
            _info(NAMESPACES),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
    for ns in await ctx.objects.list_all(_info(NAMESPACES), None):
        if not ns["metadata"].get("deletionTimestamp"):
            await engine.ensure_service_account(ctx, ns["metadata"]["name"])
    labels = {"component": "apiserver", "provider": "kubernetes"}
    await _create_missing(
        ctx,
        _info(SERVICES),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": ctx.settings.kubernetes_service_ip,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
                "sessionAffinity": "None",
            },
        },
    )
    subsets = [
        {
            "addresses": [{"ip": advertise_address}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
    ]

    def point_here(endpoints: dict[str, Any]) -> dict[str, Any] | None:
        if endpoints.get("subsets") == subsets:
            return None
        endpoints["subsets"] = subsets
        return endpoints

    existing = await engine.mutate(ctx, _info(ENDPOINTS), "default", "kubernetes", point_here)
    if existing is None:
        await _create_missing(
            ctx,
            _info(ENDPOINTS),
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
                "subsets": subsets,
            },
        )
    logger.debug("default objects in place")
