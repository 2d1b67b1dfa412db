"""The async Kubernetes client shared by the server's controllers and the agent.

``KubeClient`` talks to an API server; ``Informer`` keeps a list+watch cache; ``WorkQueue``
feeds reconcile loops; ``Clock`` (real or fake) is the time they all wait on. This package
imports only :mod:`k3py.cluster.api`, the package root's small helpers (:mod:`k3py.shutdown`) and
aiohttp, so both the server and the agent may use it.
"""

from k3py.cluster.client.client import (
    ClientError,
    KubeClient,
    Unreachable,
    error_from_status,
    resource_path,
)
from k3py.cluster.client.clock import Clock, FakeClock, RealClock, wait_event
from k3py.cluster.client.events import EventRecorder
from k3py.cluster.client.informer import Informer, object_key, split_key
from k3py.cluster.client.protocol import KubeApi
from k3py.cluster.client.workqueue import ShutDown, WorkQueue

__all__ = [
    "ClientError",
    "Clock",
    "EventRecorder",
    "FakeClock",
    "Informer",
    "KubeApi",
    "KubeClient",
    "RealClock",
    "ShutDown",
    "Unreachable",
    "WorkQueue",
    "error_from_status",
    "object_key",
    "resource_path",
    "split_key",
    "wait_event",
]
