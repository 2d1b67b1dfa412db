"""The Node object and its Lease: registration, heartbeats, conditions.

:class:`NodeReporter` registers the Node (labels for arch and OS, ``--node-label``,
``--node-taint`` at creation only, as NodeRestriction forbids a node to change its own taints),
then renews the node's Lease in ``kube-node-lease`` every 10 s (the heartbeat the node
lifecycle controller watches) and writes the Node's status when a condition changes or once a
minute: capacity, allocatable, addresses, nodeInfo and the conditions Ready, MemoryPressure,
DiskPressure and PIDPressure. A server that does not answer is retried on the next tick; the
node keeps running its pods meanwhile.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

from k3py.cluster.agent.node.machine import BOARD_LABEL, Machine, pressure
from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import ClientError, Clock, KubeApi
from k3py.cluster.client.events import EventRecorder, micro_timestamp, timestamp

logger = logging.getLogger("k3py.agent.node")

NODES = by_kind("v1", "Node")
LEASES = by_kind("coordination.k8s.io/v1", "Lease")
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
STATUS_REPORT_SECONDS = 60.0

_CONDITIONS = {
    # condition → (reason if fine, message if fine, reason if not, message if not)
    "MemoryPressure": (
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
        "KubeletHasInsufficientMemory",
        "kubelet has insufficient memory available",
    ),
    "DiskPressure": (
        "KubeletHasNoDiskPressure",
        "kubelet has no disk pressure",
        "KubeletHasDiskPressure",
        "kubelet has disk pressure",
    ),
    "PIDPressure": (
        "KubeletHasSufficientPID",
        "kubelet has sufficient PID available",
        "KubeletHasInsufficientPID",
        "kubelet has insufficient PID available",
    ),
}


class NodeSpec(NamedTuple):
    """What this agent registers: the node's name, addresses, labels and taints."""

    name: str
    addresses: tuple[str, ...]
    hostname: str
    labels: tuple[tuple[str, str], ...]
    taints: tuple[dict[str, str], ...]
    data_dir: Path


class NodeReporter:
    def __init__(
        self,
        api: KubeApi,
        clock: Clock,
        node: NodeSpec,
        machine: Machine,
        runtime_version: Callable[[], Awaitable[str]],
        lease_seconds: float = 10.0,
        recorder: EventRecorder | None = None,
    ) -> None:
        self._api = api
        self._recorder = recorder
        self._clock = clock
        self._node = node
        self._machine = machine
        self._runtime_version = runtime_version
        self._lease_seconds = lease_seconds
        self._uid = ""
        self._lease: dict[str, Any] | None = None
        self._reported: dict[str, str] = {}
        self._last_report = -1e9
        self._transitions: dict[str, str] = {}
        self.registered = asyncio.Event()
        # Set once the first registration has been tried, whatever came of it.
        self.attempted = asyncio.Event()

    # -- objects ----------------------------------------------------------------------------

    def _labels(self) -> dict[str, str]:
        arch = self._machine.arch
        labels = {
            "kubernetes.io/arch": arch,
            "kubernetes.io/os": "linux",
            "kubernetes.io/hostname": self._node.name,
            "beta.kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": "k3py",
        }
        if self._machine.board:  # UpdatePlans select by it; bundles are checked against it
            labels[BOARD_LABEL] = self._machine.board
        labels.update(dict(self._node.labels))
        return labels

    async def _conditions(self, runtime_error: str | None) -> list[dict[str, Any]]:
        now = timestamp(self._clock)
        state = pressure(self._node.data_dir)
        flags = {
            "MemoryPressure": state.memory,
            "DiskPressure": state.disk,
            "PIDPressure": state.pids,
        }
        conditions = []
        for kind, (ok_reason, ok_message, bad_reason, bad_message) in _CONDITIONS.items():
            bad = flags[kind]
            conditions.append(
                self._condition(
                    kind,
                    bad,
                    bad_reason if bad else ok_reason,
                    bad_message if bad else ok_message,
                    now,
                )
            )
        if runtime_error is None:
            ready, reason, message = True, "KubeletReady", "kubelet is posting ready status"
        else:
            message = f"container runtime is down: {runtime_error}"
            ready, reason = False, "KubeletNotReady"
        conditions.append(self._condition("Ready", ready, reason, message, now))
        return conditions

    def _condition(
        self, kind: str, value: bool, reason: str, message: str, now: str
    ) -> dict[str, Any]:
        status = "True" if value else "False"
        key = f"{kind}={status}"
        if self._transitions.get(kind, "").split("@")[0] != key:
            self._transitions[kind] = f"{key}@{now}"
        return {
            "type": kind,
            "status": status,
            "lastHeartbeatTime": now,
            "lastTransitionTime": self._transitions[kind].split("@", 1)[1],
            "reason": reason,
            "message": message,
        }

    async def _status(self) -> dict[str, Any]:
        addresses = [{"type": "InternalIP", "address": a} for a in self._node.addresses]
        addresses.append({"type": "Hostname", "address": self._node.hostname})
        runtime_error: str | None = None
        try:
            runtime_version = await self._runtime_version()
        except Exception as err:
            runtime_version, runtime_error = "docker://unknown", str(err)
        return {
            "capacity": self._machine.capacity(),
            "allocatable": self._machine.allocatable(),
            "conditions": await self._conditions(runtime_error),
            "addresses": addresses,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": self._machine.node_info(runtime_version),
        }

    # -- API calls --------------------------------------------------------------------------

    async def register(self) -> None:
        assert NODES is not None
        status = await self._status()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self._node.name, "labels": self._labels()},
            "spec": {"taints": list(self._node.taints)} if self._node.taints else {},
            "status": status,
        }
        self._event("Normal", "Starting", "Starting kubelet.")
        try:
            created = await self._api.create(NODES, node)
        except ApiError as err:
            if err.code != 409:
                raise
            patch = {"metadata": {"labels": self._labels()}}
            created = await self._api.patch(NODES, self._node.name, patch)
        self._uid = str((created.get("metadata") or {}).get("uid", ""))
        known_boot = ((created.get("status") or {}).get("nodeInfo") or {}).get("bootID")
        await self._api.patch(NODES, self._node.name, {"status": status}, subresource="status")
        if known_boot and known_boot != self._machine.boot_id:
            self._event(
                "Warning",
                "Rebooted",
                f"Node {self._node.name} has been rebooted, boot id: {self._machine.boot_id}",
            )
        for kind, (ok_reason, _, bad_reason, _) in _CONDITIONS.items():
            reason = bad_reason if self._condition_status(status, kind) == "True" else ok_reason
            reason = reason.replace("Kubelet", "Node", 1)  # NodeHasSufficientMemory, …
            self._event("Normal", reason, f"Node {self._node.name} status is now: {reason}")
        self._remember(status)
        self.registered.set()
        logger.info("node registered", extra={"fields": {"node": self._node.name}})

    def _event(self, event_type: str, reason: str, message: str) -> None:
        """An Event about this Node, worded as the kubelet words it."""
        if self._recorder is None:
            return
        # The kubelet's node reference carries the node's name as its uid.
        name = self._node.name
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": name}}
        self._recorder.event(node, event_type, reason, message)

    @staticmethod
    def _condition_status(status: dict[str, Any], kind: str) -> str:
        return next((c["status"] for c in status["conditions"] if c["type"] == kind), "Unknown")

    def _remember(self, status: dict[str, Any]) -> None:
        ready = self._condition_status(status, "Ready")
        if self._reported.get("Ready") != ready:  # first report, or a transition
            reason = "NodeReady" if ready == "True" else "NodeNotReady"
            self._event("Normal", reason, f"Node {self._node.name} status is now: {reason}")
        self._reported = {c["type"]: c["status"] for c in status["conditions"]}
        self._last_report = self._clock.monotonic()

    async def report_status(self, *, force: bool = False) -> bool:
        """Write the Node's status if a condition changed or the report is due."""
        assert NODES is not None
        status = await self._status()
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        due = self._clock.monotonic() - self._last_report >= STATUS_REPORT_SECONDS
        if not force and not due and conditions == self._reported:
            return False
        await self._api.patch(NODES, self._node.name, {"status": status}, subresource="status")
        self._remember(status)
        return True

    async def renew_lease(self) -> None:
        assert LEASES is not None
        now = micro_timestamp(self._clock)
        if self._lease is None:
            try:
                self._lease = await self._api.get(LEASES, self._node.name, LEASE_NAMESPACE)
            except ApiError as err:
                if err.code != 404:
                    raise
                self._lease = await self._api.create(LEASES, self._new_lease(now), LEASE_NAMESPACE)
                return
        lease = copy.deepcopy(self._lease)
        spec = lease.setdefault("spec", {})
        spec.update(
            holderIdentity=self._node.name, leaseDurationSeconds=LEASE_DURATION, renewTime=now
        )
        try:
            self._lease = await self._api.update(LEASES, lease)
        except ApiError as err:
            self._lease = None  # conflict or gone: read it again next time
            if err.code not in (404, 409):
                raise

    def _new_lease(self, now: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self._node.name, "namespace": LEASE_NAMESPACE}
        if self._uid:
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": self._node.name, "uid": self._uid}
            ]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self._node.name,
                "leaseDurationSeconds": LEASE_DURATION,
                "renewTime": now,
            },
        }

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Register (until it works), then heartbeat forever."""
        while not self.registered.is_set():
            try:
                await self.register()
            except (ApiError, ClientError) as err:
                logger.warning("node registration failed", extra={"fields": {"error": str(err)}})
                self.attempted.set()
                await self._clock.sleep(self._lease_seconds)
            self.attempted.set()
        failed = False
        while True:
            try:
                await self.renew_lease()
                # Back after an outage: the server may have marked the node unknown meanwhile.
                await self.report_status(force=failed)
                failed = False
            except (ApiError, ClientError) as err:
                if not failed:
                    logger.warning("node heartbeat failed", extra={"fields": {"error": str(err)}})
                failed = True
            await self._clock.sleep(self._lease_seconds)
