"""The controllers that make the API server a cluster, and :func:`run_control_plane`.

Deployment, ReplicaSet, DaemonSet, Job, Endpoints, node lifecycle and orphan garbage
collection, each a watch-driven reconcile loop over shared informer caches, plus the
scheduler, all behind one leader-elected Lease.
"""

from k3py.cluster.server.controllers.base import ALL_CONTROLLERS, ControlPlaneSettings
from k3py.cluster.server.controllers.manager import run_control_plane

__all__ = ["ALL_CONTROLLERS", "ControlPlaneSettings", "run_control_plane"]
