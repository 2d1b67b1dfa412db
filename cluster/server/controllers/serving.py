"""The control plane inside ``k3py server``: settings from the server's, an in-process client.

K3s runs its scheduler and controller manager in the server process and so does k3py: once the
API server listens, :func:`run_in_server` runs :func:`run_control_plane` until the server stops,
over :class:`~k3py.cluster.server.rest.inprocess.InProcessApi` (the REST engine's own functions
as the admin, no TLS, HTTP or JSON). Without the server's context (tests, tools), or with
``K3PY_CONTROL_PLANE_OVER_HTTP=1`` in the environment (the benchmark's comparison of the two), it
connects over loopback with the admin client certificate instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from k3py.cluster.client import KubeApi, KubeClient
from k3py.cluster.server.controllers.base import ControlPlaneSettings
from k3py.cluster.server.controllers.manager import run_control_plane

if TYPE_CHECKING:
    from k3py.cluster.server.metrics.observer import ControlPlaneObserver
    from k3py.cluster.server.pki import ClusterPKI
    from k3py.cluster.server.rest.context import RestContext
    from k3py.cluster.server.settings import ServerSettings

logger = logging.getLogger("k3py.controllers")
OVER_HTTP = "K3PY_CONTROL_PLANE_OVER_HTTP"


def control_plane_settings(settings: ServerSettings) -> ControlPlaneSettings:
    disabled = set(settings.disable_controllers)
    if settings.disable_scheduler:
        disabled.add("scheduler")
    if "servicelb" in settings.disable_components:
        disabled.add("servicelb")
    return ControlPlaneSettings(
        cluster_cidr=settings.cluster_cidr,
        service_cidr=settings.service_cidr,
        node_monitor_period=settings.node_monitor_period,
        node_monitor_grace_period=settings.node_monitor_grace_period,
        disabled=frozenset(disabled),
    )


def loopback_url(bind_address: str, port: int) -> str:
    """Where this process reaches its own API: loopback, unless bound to one other address."""
    host = bind_address if bind_address not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


async def run_in_server(
    settings: ServerSettings,
    pki: ClusterPKI,
    port: int,
    stop: asyncio.Event,
    *,
    observer: ControlPlaneObserver | None = None,
    rest: RestContext | None = None,
) -> None:
    """Run the scheduler and controllers against this server until ``stop`` is set."""
    client: KubeApi
    if rest is not None and os.environ.get(OVER_HTTP) != "1":
        from k3py.cluster.server.rest.inprocess import InProcessApi

        client = InProcessApi(rest)
    else:
        client = KubeClient(
            loopback_url(settings.bind_address, port),
            ssl_context=pki.client_ssl_context(),
            user_agent="k3py-controller-manager",
        )
    labels = None
    if not settings.disable_agent:
        from k3py.cluster.server.embedded_agent import label_own_node

        labels = asyncio.create_task(label_own_node(settings, client, stop), name="k3py-own-node")
    try:
        await run_control_plane(client, control_plane_settings(settings), stop, observer=observer)
    finally:
        if labels is not None:
            labels.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await labels
        close = getattr(client, "close", None)
        if close is not None:
            await close()
