"""What every REST handler works with, kept on the aiohttp application under typed keys.

:class:`RestContext` bundles the settings, the object store, the clock and the queue of work for
the in-server garbage collector (namespace finalization and ownerReference propagation). The
application factory builds one per application and stores it under :data:`REST`; handlers
reach it through ``request.app[REST]``. Nothing here is module-level state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from k3py.cluster.api.customresources import CustomResourceRegistry
from k3py.cluster.server.rbac import RBACAuthorizer
from k3py.cluster.server.rest.namespaces import NamespaceFollower
from k3py.cluster.server.rest.nodegraph import NodeGraph
from k3py.cluster.server.rest.objects import ObjectStore
from k3py.cluster.server.rest.strategy import UidSource
from k3py.cluster.server.settings import ServerSettings

USER_KEY = "k3py.user"  # per-request: the authenticated user (an auth.UserInfo)


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """RFC 3339 with seconds, as Kubernetes' ``metav1.Time`` marshals."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class CollectorWork:
    """One job for the garbage collector: what to finalize, and how."""

    kind: str  # "namespace" | "dependents"
    uid: str = ""
    namespace: str | None = None
    name: str = ""
    policy: str = "Background"  # for "dependents": Background or Foreground
    owner: tuple[str, str, str] = ("", "", "")  # api_version, plural, name of the owner


@dataclass
class RestContext:
    settings: ServerSettings
    objects: ObjectStore
    clock: Callable[[], datetime] = utc_now
    collector_queue: asyncio.Queue[CollectorWork] = field(default_factory=asyncio.Queue)
    # Serialises Service clusterIP and nodePort allocation (one server process owns them).
    allocation_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set when the server shuts down: open watches end so that shutdown does not wait on them.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # The Node authorizer's view of which objects each node's pods use.
    node_graph: NodeGraph = field(default_factory=NodeGraph)
    # Roles and bindings, followed from the datastore (the RBAC authorizer).
    rbac: RBACAuthorizer = field(default_factory=RBACAuthorizer)
    # The CRD kind and the custom resources of the established CRDs (followed from the store).
    custom: CustomResourceRegistry = field(default_factory=CustomResourceRegistry)
    # The active namespaces' names (followed from the store): creates skip reading theirs.
    namespaces: NamespaceFollower = field(default_factory=NamespaceFollower)
    # New objects' uids, drawn from the OS's random source in blocks.
    uids: UidSource = field(default_factory=UidSource)

    def now(self) -> str:
        return timestamp(self.clock())


REST = web.AppKey("k3py.rest", RestContext)
