"""Test doubles around the pod sync loop: a pod host that records, and pod builders."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

from k3py.cluster.agent.podsync.backoff import Backoff
from k3py.cluster.agent.podsync.loop import PodSync
from k3py.cluster.agent.podsync.network import RuntimeBridge
from k3py.cluster.agent.podsync.probes import Prober
from k3py.cluster.agent.podsync.spec import Pod
from k3py.cluster.agent.podsync.volumes import PodVolumes
from k3py.cluster.agent.podsync.worker import NodeConfig, WorkerDeps
from k3py.cluster.agent.runtime.fake import FakeRuntime
from k3py.cluster.client.clock import FakeClock

IMAGE = "example/app:1"
PAUSE = "k3py/pause:1"
NODE = "node-a"


class Objects:
    def __init__(self) -> None:
        self.config_maps: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.config_maps.get((namespace, name))

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get((namespace, name))


class RecordingHost:
    """A pod host that keeps every status, event and finished deletion."""

    def __init__(self) -> None:
        self._objects = Objects()
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.finished: list[str] = []

    @property
    def objects(self) -> Objects:
        return self._objects

    def event(self, pod: Pod, kind: str, reason: str, message: str) -> None:
        self.events.append((pod["metadata"]["name"], kind, reason, message))

    async def report_status(self, pod: Pod, status: dict[str, Any]) -> None:
        self.statuses.append((pod["metadata"]["name"], copy.deepcopy(status)))

    async def finish_deletion(self, pod: Pod) -> None:
        self.finished.append(pod["metadata"]["name"])

    def last_status(self, name: str) -> dict[str, Any]:
        for pod_name, status in reversed(self.statuses):
            if pod_name == name:
                return status
        raise AssertionError(f"no status reported for {name}")

    def reasons(self, name: str) -> list[str]:
        return [reason for pod, _, reason, _ in self.events if pod == name]


def make_pod(
    name: str = "web",
    containers: list[dict[str, Any]] | None = None,
    *,
    init: list[dict[str, Any]] | None = None,
    restart_policy: str = "Always",
    volumes: list[dict[str, Any]] | None = None,
    grace: int = 30,
) -> Pod:
    spec: dict[str, Any] = {
        "nodeName": NODE,
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": grace,
        "containers": containers or [{"name": "app", "image": IMAGE}],
    }
    if init:
        spec["initContainers"] = init
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": spec,
        "status": {"phase": "Pending"},
    }


class Harness:
    """A pod sync loop on a fake runtime and a virtual clock."""

    def __init__(self, tmp_path: Path, runtime: FakeRuntime | None = None) -> None:
        self.clock = FakeClock()
        self.runtime = runtime or FakeRuntime(
            self.clock, images={IMAGE: "sha256:" + "a" * 64, PAUSE: "sha256:" + "b" * 64}
        )
        self.host = RecordingHost()
        self.volumes = PodVolumes(tmp_path)
        self.deps = WorkerDeps(
            runtime=self.runtime,
            host=self.host,
            volumes=self.volumes,
            clock=self.clock,
            node=NodeConfig(node_name=NODE, host_ip="192.0.2.10", sandbox_image=PAUSE),
            backoff=Backoff(),
            prober=Prober(self.runtime),
            network=RuntimeBridge("192.0.2.10"),
        )
        self.sync = PodSync(self.deps)

    async def settle(self, seconds: float = 0.0) -> None:
        await self.clock.advance(seconds)

    def running(self, pod: Pod, container: str) -> list[Any]:
        uid = pod["metadata"]["uid"]
        return [
            c for c in self.runtime.running() if c.pod_uid == uid and c.container_name == container
        ]

    def instances(self, pod: Pod, container: str) -> list[Any]:
        return sorted(
            (
                c.info
                for c in self.runtime.containers.values()
                if c.info.pod_uid == pod["metadata"]["uid"] and c.info.container_name == container
            ),
            key=lambda info: info.attempt,
        )
