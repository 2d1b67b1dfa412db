"""The live API servers in ``default/kubernetes`` Endpoints, each server keeping its own Lease.

Several servers that share one datastore each hold a Lease ``kube-system/apiserver-<id>``
(label ``k3py.io/apiserver``, ``holderIdentity`` = its ``address:port``) and renew it every
period, as kube-apiserver's lease endpoint reconciler does. After each renewal a server rewrites
the ``kubernetes`` Endpoints to list every server whose Lease was renewed within its duration,
so a server that dies drops out within about one lease duration and agents (which learn the
servers from these Endpoints) stop trying it; a Lease left unrenewed for an hour is deleted. A
server that stops cleanly removes its Lease and its entry at once. Servers on one address with
different ports get one subset per port.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from k3py.cluster.api import status
from k3py.cluster.api.resources import ResourceInfo, by_kind
from k3py.cluster.server.rest import engine
from k3py.cluster.server.rest.context import RestContext
from k3py.cluster.server.rest.delete import DeleteOptions, delete_with_retries
from k3py.cluster.server.store import StoreError
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger(__name__)

LABEL = "k3py.io/apiserver"
NAMESPACE = "kube-system"
PERIOD = 5.0
LEASE_SECONDS = 15
STALE_AFTER = datetime.timedelta(hours=1)

Object = dict[str, Any]
WallClock = Callable[[], datetime.datetime]


def _info(kind: str, api_version: str) -> ResourceInfo:
    info = by_kind(api_version, kind)
    assert info is not None
    return info


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(stamp: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def lease_name(endpoint: str) -> str:
    return "apiserver-" + hashlib.sha256(endpoint.encode()).hexdigest()[:16]


def subsets(endpoints: list[str]) -> list[Object]:
    """Endpoints subsets for ``address:port`` strings: one subset per port, addresses sorted."""
    by_port: dict[int, set[str]] = {}
    for endpoint in endpoints:
        address, _, port = endpoint.rpartition(":")
        if address and port.isdigit():
            by_port.setdefault(int(port), set()).add(address.strip("[]"))
    return [
        {
            "addresses": [{"ip": ip} for ip in sorted(by_port[port])],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
        for port in sorted(by_port)
    ]


def live_endpoints(leases: list[Object], now: datetime.datetime) -> list[str]:
    """The holders of the Leases renewed within their duration."""
    live = []
    for lease in leases:
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(str(spec.get("renewTime", "")))
        duration = spec.get("leaseDurationSeconds") or LEASE_SECONDS
        if not holder or renewed is None:
            continue
        if now - renewed <= datetime.timedelta(seconds=duration):
            live.append(str(holder))
    return sorted(live)


def stale_leases(leases: list[Object], now: datetime.datetime) -> list[Object]:
    """Leases not renewed for :data:`STALE_AFTER`: their servers are gone for good."""
    stale = []
    for lease in leases:
        renewed = _parse(str((lease.get("spec") or {}).get("renewTime", "")))
        if renewed is not None and now - renewed > STALE_AFTER:
            stale.append(lease)
    return stale


class ApiServerLease:
    """This server's Lease and its share of the ``kubernetes`` Endpoints."""

    def __init__(
        self,
        ctx: RestContext,
        address: str,
        port: int,
        *,
        lease_seconds: int = LEASE_SECONDS,
        clock: WallClock = _utcnow,
    ) -> None:
        self.ctx = ctx
        host = f"[{address}]" if ":" in address else address
        self.endpoint = f"{host}:{port}"
        self.name = lease_name(self.endpoint)
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.leases = _info("Lease", "coordination.k8s.io/v1")
        self.endpoints = _info("Endpoints", "v1")

    async def renew(self) -> list[str]:
        """Renew this server's Lease and rewrite the Endpoints; returns the live servers."""
        now = self.clock()
        stamp = _micro(now)

        def renewed(lease: Object) -> Object:
            spec = lease.setdefault("spec", {})
            spec.update(
                holderIdentity=self.endpoint,
                leaseDurationSeconds=self.lease_seconds,
                renewTime=stamp,
            )
            return lease

        stored = await engine.mutate(self.ctx, self.leases, NAMESPACE, self.name, renewed)
        if stored is None:
            body = renewed(
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "namespace": NAMESPACE,
                        "labels": {LABEL: "true"},
                    },
                    "spec": {"acquireTime": stamp},
                }
            )
            with contextlib.suppress(status.ApiError):  # created meanwhile: renewed next time
                await engine.create_object(self.ctx, self.leases, body)
        leases = await self._server_leases()
        live = sorted(set(live_endpoints(leases, now)) | {self.endpoint})
        await self._write_endpoints(live)
        for lease in stale_leases(leases, now):
            # A server gone for good (moved address, removed): nobody else removes its Lease.
            with contextlib.suppress(status.ApiError):
                await delete_with_retries(
                    self.ctx, self.leases, NAMESPACE, lease["metadata"]["name"], DeleteOptions()
                )
        return live

    async def _server_leases(self) -> list[Object]:
        """The API servers' Leases (kube-system holds others, the control plane's among them)."""
        return [
            lease
            for lease in await self.ctx.objects.list_all(self.leases, NAMESPACE)
            if (lease["metadata"].get("labels") or {}).get(LABEL) == "true"
        ]

    async def _write_endpoints(self, live: list[str]) -> None:
        wanted = subsets(live)

        def point(endpoints: Object) -> Object | None:
            if endpoints.get("subsets") == wanted:
                return None
            endpoints["subsets"] = wanted
            return endpoints

        await engine.mutate(self.ctx, self.endpoints, "default", "kubernetes", point)

    async def withdraw(self) -> None:
        """A clean stop: remove this server's Lease and its entry from the Endpoints."""
        with contextlib.suppress(status.ApiError):
            await engine.mutate(self.ctx, self.leases, NAMESPACE, self.name, _expired)
        leases = await self._server_leases()
        live = [e for e in live_endpoints(leases, self.clock()) if e != self.endpoint]
        if live:
            await self._write_endpoints(live)


def _expired(lease: Object) -> Object:
    lease.setdefault("spec", {})["renewTime"] = "1970-01-01T00:00:00.000000Z"
    return lease


async def renew_quietly(lease: ApiServerLease) -> None:
    try:
        await lease.renew()
    except (StoreError, status.ApiError, ValueError) as error:
        logger.warning(
            "cannot renew the API server lease; retrying", extra={"fields": {"error": str(error)}}
        )


async def run_apiserver_lease(lease: ApiServerLease, stopping: asyncio.Event) -> None:
    """Renew every period until the server stops, then withdraw; failures are retried."""
    while not stopping.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), PERIOD)
        if not stopping.is_set():
            await renew_quietly(lease)
    try:
        await lease.withdraw()
    except Exception as error:  # stopping anyway: the Lease then expires by itself
        logger.warning(
            "cannot withdraw the API server lease", extra={"fields": {"error": str(error)}}
        )


async def stop(task: asyncio.Task[None] | None) -> None:
    """Give the lease task a moment to withdraw (``stopping`` is set), then cancel it."""
    if task is None:
        return
    with contextlib.suppress(asyncio.TimeoutError, Exception):
        await asyncio.wait_for(asyncio.shield(task), 2.0)
    await cancel_and_wait(task, log=logger)
