"""Hollow nodes: many fake nodes served from one process through the real API, like kubemark.

:class:`HollowNodes` registers Node objects (Ready, with allocatable resources), renews their
Leases in ``kube-node-lease``, and plays their kubelets: a pod bound to one of them becomes
Running and Ready with an IP from the node's pod CIDR; a pod with the annotation
``hollow.k3py.io/exit-code`` then finishes (``Succeeded`` for 0, ``Failed`` otherwise) after
``hollow.k3py.io/run-seconds``; a pod being deleted is removed. A node can be made *silent*
(no renewals, no kubelet) and brought back, which posts Ready again as a returning kubelet does.
Every write goes through the API server the test started, with the admin credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import itertools
import logging
from collections.abc import Iterable
from typing import Any

from k3py.cluster.api.status import ApiError
from k3py.cluster.client import ClientError, Informer, KubeClient, WorkQueue
from k3py.cluster.server.controllers.base import LEASES, NODES, PODS
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("tests.hollow")

Object = dict[str, Any]
EXIT_CODE = "hollow.k3py.io/exit-code"
RUN_SECONDS = "hollow.k3py.io/run-seconds"


def now_text(micro: bool = False) -> str:
    stamp = datetime.datetime.now(datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def node_object(name: str, cpu: str, memory: str, pods: str, labels: dict[str, str]) -> Object:
    stamp = now_text()
    conditions = [
        {"type": kind, "status": "False", "reason": f"KubeletHasSufficient{kind[:-8]}",
         "message": "ok", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
    ]  # fmt: skip
    conditions.append(ready_condition(stamp))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "arm64",
                "type": "hollow",
                **labels,
            },
        },
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": pods},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
            "conditions": conditions,
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0-k3py1",
                "containerRuntimeVersion": "hollow://1",
                "osImage": "hollow",
                "kernelVersion": "0",
                "operatingSystem": "linux",
                "architecture": "arm64",
            },
        },
    }


def ready_condition(stamp: str) -> Object:
    return {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": stamp,
    }


class HollowNodes:
    def __init__(
        self,
        client: KubeClient,
        *,
        renew_interval: float = 1.0,
        start_delay: float = 0.0,
        concurrency: int = 32,
    ) -> None:
        self.client = client
        self.renew_interval = renew_interval
        self.start_delay = start_delay
        self.nodes: dict[str, itertools.count[int]] = {}
        self.silent: set[str] = set()
        self.pods = Informer(client, PODS)
        self.queue: WorkQueue[str] = WorkQueue()
        self._writes = asyncio.Semaphore(concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._finishing: set[str] = set()
        self.cidrs: dict[str, str] = {}
        self.pods.add_handler(self._pod_event, lambda _o, n: self._pod_event(n))
        self._node_informer = Informer(client, NODES)
        self._node_informer.add_handler(self._note_cidr, lambda _o, n: self._note_cidr(n))

    # -- nodes -----------------------------------------------------------------------------------

    async def add(
        self,
        names: Iterable[str],
        *,
        cpu: str = "4",
        memory: str = "8Gi",
        pods: str = "110",
        labels: dict[str, str] | None = None,
    ) -> None:
        """Register nodes (and their Leases) and start serving them."""

        async def register(name: str) -> None:
            async with self._writes:
                try:
                    await self.client.create(
                        NODES, node_object(name, cpu, memory, pods, labels or {})
                    )
                except ApiError as err:
                    if err.code != 409:
                        raise
                await self._renew(name)
            self.nodes[name] = itertools.count(2)

        await asyncio.gather(*(register(n) for n in names))
        for pod in self.pods.list():
            self._pod_event(pod)

    def silence(self, name: str) -> None:
        """The node stops renewing its Lease and its kubelet stops acting."""
        self.silent.add(name)

    async def revive(self, name: str) -> None:
        """The node is back: it renews and posts Ready, as a kubelet does after an outage."""
        self.silent.discard(name)
        await self._renew(name)
        stamp = now_text()
        await self.client.patch(
            NODES,
            name,
            {"status": {"conditions": [ready_condition(stamp)]}},
            patch_type="strategic",
            subresource="status",
        )
        for pod in self.pods.list():
            self._pod_event(pod)

    async def _renew(self, name: str) -> None:
        renewed = now_text(micro=True)
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renewed},
        }
        try:
            await self.client.patch(
                LEASES, name, {"spec": {"renewTime": renewed}}, "kube-node-lease"
            )
        except ApiError as err:
            if err.code != 404:
                raise
            await self.client.create(LEASES, lease, "kube-node-lease")

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.renew_interval)
            names = [n for n in self.nodes if n not in self.silent]

            async def renew(name: str) -> None:
                async with self._writes:
                    with contextlib.suppress(ApiError, ClientError):
                        await self._renew(name)

            await asyncio.gather(*(renew(n) for n in names))

    # -- kubelets --------------------------------------------------------------------------------

    def _pod_event(self, pod: Object) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node in self.nodes and node not in self.silent:
            meta = pod["metadata"]
            self.queue.add(f"{meta['namespace']}/{meta['name']}")

    async def _kubelet(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                async with self._writes:
                    await self._act(key)
            except (ApiError, ClientError) as err:
                if not (isinstance(err, ApiError) and err.code in (404, 409)):
                    logger.warning("hollow kubelet failed", extra={"fields": {"error": str(err)}})
                    self.queue.add_after(key, 0.5)
            finally:
                self.queue.done(key)

    async def _act(self, key: str) -> None:
        pod = self.pods.get_by_key(key)
        if pod is None:
            return
        meta, spec = pod["metadata"], pod.get("spec") or {}
        node = spec.get("nodeName")
        if node not in self.nodes or node in self.silent:
            return
        if meta.get("deletionTimestamp"):
            await self.client.delete(
                PODS, meta["name"], meta["namespace"], grace_period_seconds=0,
                preconditions={"uid": meta["uid"]},
            )  # fmt: skip
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        annotations = meta.get("annotations") or {}
        if phase != "Running":
            if self.start_delay:
                await asyncio.sleep(self.start_delay)
            await self._set_status(pod, "Running", self._ip(node))
            if EXIT_CODE in annotations and key not in self._finishing:
                self._finishing.add(key)
                delay = float(annotations.get(RUN_SECONDS, "0.2"))
                asyncio.get_running_loop().call_later(delay, self.queue.add, key)
            return
        if EXIT_CODE in annotations and key in self._finishing:
            self._finishing.discard(key)
            code = int(annotations[EXIT_CODE])
            await self._set_status(
                pod, "Succeeded" if code == 0 else "Failed", pod["status"].get("podIP"), code
            )

    def _ip(self, node: str) -> str:
        cidr = None
        live = self._node_cidr(node)
        if live:
            cidr = ipaddress.ip_network(live, strict=False)
        host = next(self.nodes[node])
        if cidr is None:
            index = list(self.nodes).index(node)
            return f"10.244.{index % 250}.{host % 250 + 2}"
        return str(cidr.network_address + (host % (cidr.num_addresses - 2)) + 1)

    def _node_cidr(self, node: str) -> str | None:
        return self.cidrs.get(node)

    async def _set_status(
        self, pod: Object, phase: str, ip: str | None, exit_code: int | None = None
    ) -> None:
        stamp = now_text()
        ready = "True" if phase == "Running" else "False"
        container = (pod["spec"].get("containers") or [{"name": "c", "image": "x"}])[0]
        if phase == "Running":
            state: Object = {"running": {"startedAt": stamp}}
        else:
            reason = "Completed" if exit_code == 0 else "Error"
            state = {
                "terminated": {"exitCode": exit_code or 0, "reason": reason, "finishedAt": stamp}
            }
        status = {
            "phase": phase,
            "podIP": ip,
            "podIPs": [{"ip": ip}] if ip else None,
            "hostIP": "127.0.0.1",
            "startTime": (pod.get("status") or {}).get("startTime") or stamp,
            "conditions": [
                {
                    "type": kind,
                    "status": ready if kind in ("Ready", "ContainersReady") else "True",
                    "lastTransitionTime": stamp,
                    "lastProbeTime": None,
                }
                for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],  # fmt: skip
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": phase == "Running",
                    "restartCount": 0,
                    "started": phase == "Running",
                    "state": state,
                }
            ],
        }
        meta = pod["metadata"]
        await self.client.patch(
            PODS,
            meta["name"],
            {"status": status},
            meta["namespace"],
            patch_type="strategic",
            subresource="status",
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def _note_cidr(self, node: Object) -> None:
        cidr = (node.get("spec") or {}).get("podCIDR")
        if cidr:
            self.cidrs[node["metadata"]["name"]] = cidr

    async def start(self, kubelets: int = 8) -> None:
        self._node_informer.start()
        self.pods.start()
        await self.pods.synced.wait()
        self._tasks = [asyncio.create_task(self._renew_loop())]
        self._tasks += [asyncio.create_task(self._kubelet()) for _ in range(kubelets)]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.queue.shut_down()
        await self.pods.stop()
        await self._node_informer.stop()
