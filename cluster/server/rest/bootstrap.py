"""Objects every cluster has from its first start, created (or repaired) at each start.

The namespaces ``default``, ``kube-system``, ``kube-public`` and ``kube-node-lease``, a
``default`` ServiceAccount in every namespace, and the ``kubernetes`` Service in ``default``
with the first address of the service CIDR and Endpoints pointing at this server, and the
cluster DNS Service ``kube-system/kube-dns`` at the service CIDR's tenth address.
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
    await _ensure_cluster_dns(ctx)
    await _ensure_rbac(ctx)
    logger.debug("default objects in place")


async def _ensure_rbac(ctx: RestContext) -> None:
    """The default ClusterRoles and ClusterRoleBindings (:mod:`..rbacdefaults`)."""
    from k3py.cluster.server import rbacdefaults

    for role in rbacdefaults.cluster_roles():
        await _create_missing(ctx, _info(by_kind(rbacdefaults.API_VERSION, "ClusterRole")), role)
    for binding in rbacdefaults.cluster_role_bindings():
        info = _info(by_kind(rbacdefaults.API_VERSION, "ClusterRoleBinding"))
        await _create_missing(ctx, info, binding)


async def _ensure_cluster_dns(ctx: RestContext) -> None:
    """``kube-system/kube-dns`` at the cluster DNS address, as K3s's CoreDNS Service.

    No pods back it: each agent answers the address for its own pods (node-local DNS), so the
    Service has no selector and its Endpoints stay empty."""
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/cluster-service": "true",
                "kubernetes.io/name": "CoreDNS",
            },
            "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ctx.settings.cluster_dns_ip,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
            "sessionAffinity": "None",
        },
    }
    try:
        await _create_missing(ctx, _info(SERVICES), body)
    except status.ApiError as err:
        # Another Service holds the address (--cluster-dns changed): say so and serve anyway.
        logger.warning("kube-dns Service not created", extra={"fields": {"error": err.message}})
