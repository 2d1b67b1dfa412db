"""One pod's worker: converges the runtime to the pod's spec, then reports the pod's status.

Each pass (:meth:`PodWorker.sync`) reads the pod's containers from the runtime by label and
takes the next steps in the kubelet's order: volumes, the sandbox (re-created, with everything
in it, when it died), init containers one at a time, then the app containers; each exited
container is restarted or not by ``restartPolicy``, after the back-off; a running one whose
spec changed or whose liveness or startup probe failed is stopped and replaced. Containers
that exist and match the spec are adopted as they are, which is how an agent restarted (or
reconnected) leaves healthy containers alone. A pass returns how soon it wants the next one
(a back-off ending); container events, probe changes and spec updates wake it sooner. A pod
being deleted has its containers stopped with the grace period (SIGTERM, then SIGKILL),
removed with its volumes, and the deletion finished on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from k3py.cluster.agent.errors import ImageError, RuntimeUnavailable
from k3py.cluster.agent.podsync.backoff import Backoff
from k3py.cluster.agent.podsync.dnsconfig import (
    DnsSettings,
    ServiceList,
    service_env,
    write_resolv_conf,
)
from k3py.cluster.agent.podsync.network import PodNetwork
from k3py.cluster.agent.podsync.probes import PodProbes, Prober, ProbeWorker
from k3py.cluster.agent.podsync.spec import (
    ContainerConfigError,
    ObjectSource,
    Pod,
    PodContext,
    container_config,
    container_hash,
    meta,
    pod_key,
    sandbox_config,
    spec,
)
from k3py.cluster.agent.podsync.status import ContainerView, PodView, pod_status
from k3py.cluster.agent.podsync.volumes import PodVolumes, VolumeError
from k3py.cluster.agent.runtime import (
    LABEL_NODE,
    LABEL_POD_UID,
    SANDBOX_NAME,
    ContainerInfo,
    ContainerKind,
    ContainerRuntime,
    Mount,
)
from k3py.cluster.client.clock import Clock, wait_event

logger = logging.getLogger("k3py.agent.podsync")

RESYNC_SECONDS = 60.0
RETRY_SECONDS = 5.0
DEFAULT_GRACE = 30


class PodHost(Protocol):
    """What a pod worker needs from the agent around it."""

    @property
    def objects(self) -> ObjectSource: ...

    def event(self, pod: Pod, kind: str, reason: str, message: str) -> None:
        """Record an Event about the pod (``kind``: Normal or Warning)."""
        ...

    async def report_status(self, pod: Pod, status: dict[str, Any]) -> None: ...

    async def finish_deletion(self, pod: Pod) -> None:
        """The pod's containers are gone: let the server remove the object."""
        ...


@dataclass(frozen=True)
class NodeConfig:
    """The node-level settings every pod worker uses."""

    node_name: str
    host_ip: str
    sandbox_image: str
    runtime_scheme: str = "docker"


@dataclass(frozen=True)
class WorkerDeps:
    runtime: ContainerRuntime
    host: PodHost
    volumes: PodVolumes
    clock: Clock
    node: NodeConfig
    backoff: Backoff
    prober: Prober
    network: PodNetwork
    # Services for the pods' environment, and their resolv.conf (None: the runtime's own).
    services: ServiceList | None = None
    dns: DnsSettings | None = None


def _pull_policy(container: Mapping[str, Any]) -> str:
    policy = container.get("imagePullPolicy")
    if policy:
        return str(policy)
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _grace(pod: Pod) -> int:
    value = meta(pod).get("deletionGracePeriodSeconds")
    if value is None:
        value = spec(pod).get("terminationGracePeriodSeconds", DEFAULT_GRACE)
    return max(0, int(value))


def _latest(by_name: Mapping[str, list[ContainerInfo]], name: str) -> ContainerInfo | None:
    instances = by_name.get(name)
    return instances[-1] if instances else None


def _terminal(pod: Pod) -> bool:
    return (pod.get("status") or {}).get("phase") in {"Succeeded", "Failed"}


class PodWorker:
    def __init__(self, pod: Pod, deps: WorkerDeps) -> None:
        self.pod = pod
        self.uid = str(meta(pod).get("uid", ""))
        self._deps = deps
        self._wake = asyncio.Event()
        self._terminating = False
        self._removed = False
        self._probes = PodProbes(deps.prober, deps.clock, self._probe_changed)
        self._waiting: dict[str, tuple[str, str]] = {}
        self._pull_failed_at: dict[str, float] = {}
        self._next: float | None = None
        self._reported: dict[str, Any] | None = None
        self._pod_ip: tuple[str, str] = ("", "")  # (sandbox id, pod IP)
        self.finished = asyncio.Event()
        self.syncs = 0

    # -- control from the pod sync loop ----------------------------------------------------

    def update(self, pod: Pod) -> None:
        self.pod = pod
        if meta(pod).get("deletionTimestamp"):
            self._terminating = True
        self.wake()

    def remove(self) -> None:
        """The pod is gone from the server (or the node): kill it without a final write."""
        self._terminating = True
        self._removed = True
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        if meta(self.pod).get("deletionTimestamp"):
            self._terminating = True
        clock = self._deps.clock
        try:
            while not self.finished.is_set():
                self._wake.clear()
                try:
                    delay = await self.sync()
                except RuntimeUnavailable as err:
                    logger.warning(
                        "pod sync failed",
                        extra={"fields": {"pod": pod_key(self.pod), "error": str(err)}},
                    )
                    delay = RETRY_SECONDS
                except Exception:
                    logger.exception(
                        "pod sync failed", extra={"fields": {"pod": pod_key(self.pod)}}
                    )
                    delay = RETRY_SECONDS
                if self.finished.is_set():
                    break
                await wait_event(clock, self._wake, delay if delay is not None else RESYNC_SECONDS)
        finally:
            await self._probes.stop()

    # -- one pass ---------------------------------------------------------------------------

    async def _list(self) -> dict[str, list[ContainerInfo]]:
        labels = {LABEL_NODE: self._deps.node.node_name, LABEL_POD_UID: self.uid}
        containers = await self._deps.runtime.list_containers(labels)
        by_name: dict[str, list[ContainerInfo]] = {}
        for info in sorted(containers, key=lambda c: (c.attempt, c.created_at or 0)):
            by_name.setdefault(info.container_name, []).append(info)
        return by_name

    def _later(self, seconds: float) -> None:
        if self._next is None or seconds < self._next:
            self._next = max(seconds, 0.01)

    async def sync(self) -> float | None:
        self.syncs += 1
        self._next = None
        by_name = await self._list()
        if self._terminating:
            await self._kill_pod(by_name)
            return None
        self._waiting = {}
        failed: tuple[str, str] | None = None
        acted = False
        sandbox = _latest(by_name, SANDBOX_NAME)
        terminal = _terminal(self._current())
        if terminal:
            if sandbox is not None and sandbox.status == "running":
                await self._deps.network.detach(self.pod, sandbox)
                await self._deps.runtime.remove_container(sandbox.id)
                acted = True
        else:
            try:
                paths = self._deps.volumes.setup(self.pod, self._deps.host.objects)
            except VolumeError as err:
                self._event("Warning", "FailedMount", f"MountVolume.SetUp failed: {err}")
                for container in self._all_containers():
                    self._waiting[container["name"]] = ("ContainerCreating", "")
                await self._report(by_name, None)
                return RETRY_SECONDS * 2
            if sandbox is None or sandbox.status != "running":
                sandbox = await self._new_sandbox(by_name, sandbox)
                acted = True
                by_name = await self._list()
            pod_ip = await self._attach(sandbox)
            ctx = PodContext(
                node_name=self._deps.node.node_name,
                pod_ip=pod_ip,
                host_ip=self._deps.node.host_ip,
                sandbox_id=sandbox.id,
                host_network=bool(spec(self.pod).get("hostNetwork")),
                service_env=(
                    service_env(self.pod, self._deps.services) if self._deps.services else {}
                ),
            )
            init_done, init_acted, failed = await self._sync_init(by_name, ctx, paths)
            acted |= init_acted
            if init_done and failed is None:
                acted |= await self._sync_app(by_name, ctx, paths)
            if acted:
                by_name = await self._list()
            await self._collect_garbage(by_name)
        await self._sync_probes(by_name)
        await self._report(by_name, failed)
        return self._next

    # -- sandbox ----------------------------------------------------------------------------

    async def _attach(self, sandbox: ContainerInfo) -> str:
        """The pod IP, from the pod network (asked once per sandbox)."""
        if self._pod_ip[0] != sandbox.id:
            self._pod_ip = (sandbox.id, await self._deps.network.attach(self.pod, sandbox))
        return self._pod_ip[1]

    def _known_ip(self, sandbox: ContainerInfo | None) -> str:
        if sandbox is None or self._pod_ip[0] != sandbox.id:
            return ""
        return self._pod_ip[1]

    async def _new_sandbox(
        self, by_name: dict[str, list[ContainerInfo]], dead: ContainerInfo | None
    ) -> ContainerInfo:
        runtime = self._deps.runtime
        if dead is not None:
            self._event(
                "Normal", "SandboxChanged", "Pod sandbox changed, it will be killed and re-created."
            )
            for name, instances in by_name.items():
                for info in instances:
                    if name != SANDBOX_NAME and info.status == "running":
                        await runtime.stop_container(info.id, _grace(self.pod))
            for info in by_name.get(SANDBOX_NAME, []):
                await self._deps.network.detach(self.pod, info)
                await runtime.remove_container(info.id)
        attempt = dead.attempt + 1 if dead is not None else 0
        config = sandbox_config(
            self.pod,
            self._deps.node.node_name,
            attempt,
            self._deps.node.sandbox_image,
            hostname=str(meta(self.pod).get("name", "")),
            network=self._deps.network.sandbox_network(self.pod),
        )
        sandbox_id = await runtime.create_container(config)
        await runtime.start_container(sandbox_id)
        sandbox = await runtime.inspect_container(sandbox_id)
        if sandbox is None or sandbox.status != "running":
            raise RuntimeUnavailable(f"the sandbox of pod {pod_key(self.pod)} did not start")
        return sandbox

    # -- containers -------------------------------------------------------------------------

    def _all_containers(self) -> list[dict[str, Any]]:
        pod_spec = spec(self.pod)
        return [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]

    def _backoff_key(self, name: str) -> str:
        return f"{self.uid}/{name}"

    def _monotonic_of(self, info: ContainerInfo) -> float:
        """The clock's monotonic time at which ``info`` finished."""
        clock = self._deps.clock
        if info.finished_at is None:
            return clock.monotonic()
        return clock.monotonic() - (clock.now() - info.finished_at).total_seconds()

    def _in_backoff(self, container: Mapping[str, Any], latest: ContainerInfo) -> bool:
        """Kubernetes' CrashLoopBackOff check; False means restart now (and count it)."""
        name = str(container["name"])
        key = self._backoff_key(name)
        finished = self._monotonic_of(latest)
        now = self._deps.clock.monotonic()
        remaining = self._deps.backoff.remaining(key, finished, now)
        if remaining > 0:
            delay = self._deps.backoff.delay(key)
            message = (
                f"back-off {delay:g}s restarting failed container={name} "
                f"pod={meta(self.pod).get('name')}_{meta(self.pod).get('namespace')}"
                f"({self.uid})"
            )
            self._waiting[name] = ("CrashLoopBackOff", message)
            self._later(remaining)
            self._event("Warning", "BackOff", "Back-off restarting failed container")
            return True
        self._deps.backoff.next(key, finished)
        return False

    async def _ensure_image(self, container: Mapping[str, Any]) -> bool:
        runtime, clock = self._deps.runtime, self._deps.clock
        name, image = str(container["name"]), str(container.get("image", ""))
        policy = _pull_policy(container)
        present = await runtime.image_id(image)
        if policy == "Never":
            if present is None:
                message = f'Container image "{image}" is not present with pull policy of Never'
                self._waiting[name] = ("ErrImageNeverPull", message)
                self._event("Warning", "ErrImageNeverPull", message)
                return False
            return True
        if policy == "IfNotPresent" and present is not None:
            self._event("Normal", "Pulled", f'Container image "{image}" already present on machine')
            return True
        key = f"pull:{image}"
        failed_at = self._pull_failed_at.get(key)
        if failed_at is not None:
            remaining = self._deps.backoff.remaining(key, failed_at, clock.monotonic())
            if remaining > 0:
                self._waiting[name] = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
                self._event("Normal", "BackOff", f'Back-off pulling image "{image}"')
                self._later(remaining)
                return False
        self._event("Normal", "Pulling", f'Pulling image "{image}"')
        started = clock.monotonic()
        try:
            await runtime.pull_image(image)
        except ImageError as err:
            now = clock.monotonic()
            self._pull_failed_at[key] = now
            self._deps.backoff.next(key, now)
            self._waiting[name] = ("ErrImagePull", str(err))
            self._event("Warning", "Failed", f'Failed to pull image "{image}": {err}')
            self._later(self._deps.backoff.delay(key))
            return False
        self._pull_failed_at.pop(key, None)
        took = clock.monotonic() - started
        self._event("Normal", "Pulled", f'Successfully pulled image "{image}" in {took:.3f}s')
        return True

    async def _start(
        self,
        container: Mapping[str, Any],
        kind: ContainerKind,
        attempt: int,
        ctx: PodContext,
        paths: Mapping[str, Any],
    ) -> bool:
        runtime = self._deps.runtime
        name = str(container["name"])
        if not await self._ensure_image(container):
            return False
        try:
            mounts = self._deps.volumes.mounts(container, paths)
            if self._deps.dns is not None and not any(
                m.target == "/etc/resolv.conf" for m in mounts
            ):
                pod_dir = self._deps.volumes.pod_dir(self.uid)
                resolv = write_resolv_conf(pod_dir, self.pod, self._deps.dns)
                mounts = (*mounts, Mount(str(resolv), "/etc/resolv.conf", read_only=True))
            config = container_config(
                self.pod,
                container,
                kind,
                attempt,
                objects=self._deps.host.objects,
                ctx=ctx,
                mounts=mounts,
            )
        except (ContainerConfigError, VolumeError) as err:
            self._waiting[name] = ("CreateContainerConfigError", str(err))
            self._event("Warning", "Failed", f"Error: {err}")
            self._later(RETRY_SECONDS * 2)
            return False
        try:
            container_id = await runtime.create_container(config)
        except (ImageError, RuntimeUnavailable) as err:
            self._waiting[name] = ("CreateContainerError", str(err))
            self._event("Warning", "Failed", f"Error: {err}")
            self._later(RETRY_SECONDS * 2)
            return False
        self._event("Normal", "Created", f"Created container {name}")
        try:
            await runtime.start_container(container_id)
        except RuntimeUnavailable as err:
            self._waiting[name] = ("RunContainerError", str(err))
            self._event("Warning", "Failed", f"Error: {err}")
            self._later(RETRY_SECONDS * 2)
            return True
        self._event("Normal", "Started", f"Started container {name}")
        return True

    async def _sync_init(
        self, by_name: dict[str, list[ContainerInfo]], ctx: PodContext, paths: Mapping[str, Any]
    ) -> tuple[bool, bool, tuple[str, str] | None]:
        """Run init containers in order; (all succeeded, acted, failure reason)."""
        policy = spec(self.pod).get("restartPolicy", "Always")
        for container in spec(self.pod).get("initContainers") or []:
            name = str(container["name"])
            latest = _latest(by_name, name)
            if latest is not None and latest.status == "exited" and latest.exit_code == 0:
                continue
            if latest is not None and latest.status == "running":
                return False, False, None
            if latest is not None and latest.status == "exited":
                if policy == "Never":
                    return False, False, ("Init:Error", f"init container {name} failed")
                if self._in_backoff(container, latest):
                    return False, False, None
            attempt = latest.attempt + 1 if latest is not None else 0
            if latest is not None and latest.status == "created":
                await self._deps.runtime.remove_container(latest.id)
            acted = await self._start(container, "init", attempt, ctx, paths)
            return False, acted, None
        return True, False, None

    async def _sync_app(
        self, by_name: dict[str, list[ContainerInfo]], ctx: PodContext, paths: Mapping[str, Any]
    ) -> bool:
        runtime = self._deps.runtime
        policy = spec(self.pod).get("restartPolicy", "Always")
        acted = False
        for container in spec(self.pod).get("containers") or []:
            name = str(container["name"])
            latest = _latest(by_name, name)
            if latest is not None and latest.status == "running":
                reason = None
                failed_probe = self._probes.failed(name, latest.id)
                if latest.spec_hash and latest.spec_hash != container_hash(container):
                    reason = f"Container {name} definition changed, will be restarted"
                elif failed_probe is not None:
                    kind, message = failed_probe
                    self._event(
                        "Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {message}"
                    )
                    reason = f"Container {name} failed {kind} probe, will be restarted"
                if reason is None:
                    continue
                self._event("Normal", "Killing", reason)
                await runtime.stop_container(latest.id, _grace(self.pod))
                latest = await runtime.inspect_container(latest.id)
                acted = True
                if latest is None:
                    continue
            if latest is not None and latest.status == "exited":
                if policy == "Never" or (policy == "OnFailure" and latest.exit_code == 0):
                    continue
                if self._in_backoff(container, latest):
                    continue
            attempt = latest.attempt + 1 if latest is not None else 0
            if latest is not None and latest.status == "created":
                await runtime.remove_container(latest.id)
            acted |= await self._start(container, "app", attempt, ctx, paths)
        return acted

    async def _collect_garbage(self, by_name: dict[str, list[ContainerInfo]]) -> None:
        """Keep each container's latest two instances (the previous one serves --previous)."""
        for name, instances in by_name.items():
            keep = 1 if name == SANDBOX_NAME else 2
            for info in instances[:-keep]:
                if info.status != "running":
                    await self._deps.runtime.remove_container(info.id)

    # -- probes -----------------------------------------------------------------------------

    def _probe_changed(self, worker: ProbeWorker) -> None:
        if worker.result is False and worker.kind == "readiness":
            self._event("Warning", "Unhealthy", f"Readiness probe failed: {worker.message}")
        self.wake()

    async def _sync_probes(self, by_name: dict[str, list[ContainerInfo]]) -> None:
        running: list[tuple[Mapping[str, Any], str]] = []
        if not self._terminating:
            for container in spec(self.pod).get("containers") or []:
                latest = _latest(by_name, str(container["name"]))
                if latest is not None and latest.status == "running":
                    running.append((container, latest.id))
        await self._probes.sync(running, self._known_ip(_latest(by_name, SANDBOX_NAME)))

    # -- status -----------------------------------------------------------------------------

    def _view(self, container: Mapping[str, Any], instances: list[ContainerInfo]) -> ContainerView:
        name = str(container["name"])
        view = ContainerView(
            name=name,
            image=str(container.get("image", "")),
            instances=instances,
            waiting=self._waiting.get(name),
        )
        latest = view.latest
        if latest is not None and latest.status == "running":
            has_startup = bool(container.get("startupProbe"))
            has_readiness = bool(container.get("readinessProbe"))
            view.started = (
                not has_startup or self._probes.result(name, "startup", latest.id) is True
            )
            readiness = self._probes.result(name, "readiness", latest.id)
            view.ready = view.started and (not has_readiness or readiness is True)
        return view

    async def _report(
        self, by_name: dict[str, list[ContainerInfo]], failed: tuple[str, str] | None
    ) -> None:
        pod_spec = spec(self.pod)
        sandbox = _latest(by_name, SANDBOX_NAME)
        view = PodView(
            init=[
                self._view(c, by_name.get(c["name"], []))
                for c in pod_spec.get("initContainers") or []
            ],
            app=[
                self._view(c, by_name.get(c["name"], [])) for c in pod_spec.get("containers") or []
            ],
            pod_ip=self._known_ip(sandbox),
            host_ip=self._deps.node.host_ip,
            sandbox_ready=sandbox is not None and sandbox.status == "running",
        )
        current = self._current()
        old = current.get("status") or {}
        if _terminal(current):
            view.failed_reason = str(old.get("reason") or "")
            view.failed_message = str(old.get("message") or "")
            if not view.pod_ip and old.get("podIP"):
                view.pod_ip = str(old["podIP"])
        if failed is not None:
            view.failed_reason, view.failed_message = failed
        status = pod_status(
            current, view, scheme=self._deps.node.runtime_scheme, now=self._deps.clock.now()
        )
        if _terminal(current):
            status["phase"] = old["phase"]
        # Compare with what this worker last wrote, not with the server's copy: a server that
        # normalises a field must not make the agent write the same status forever.
        if status != (self._reported if self._reported is not None else old):
            await self._deps.host.report_status(self.pod, status)
            self._reported = status

    # -- termination ------------------------------------------------------------------------

    async def _kill_pod(self, by_name: dict[str, list[ContainerInfo]]) -> None:
        runtime = self._deps.runtime
        grace = _grace(self.pod)
        await self._probes.stop()
        running = [
            info
            for name, instances in by_name.items()
            if name != SANDBOX_NAME
            for info in instances
            if info.status == "running"
        ]
        for info in running:
            self._event("Normal", "Killing", f"Stopping container {info.container_name}")
        await asyncio.gather(*(runtime.stop_container(i.id, grace) for i in running))
        for info in by_name.get(SANDBOX_NAME, []):
            if info.status == "running":
                await self._deps.network.detach(self.pod, info)
        self._deps.volumes.remove(self.uid)
        self._deps.backoff.forget(f"{self.uid}/")
        # Stopped, off the network, volumes gone: the object may go. The dead containers are
        # removed after, as the kubelet leaves them to its garbage collection: under a burst of
        # deletions the engine works through every removal after every stop, and a pod need
        # not wait for the others' stops before it is gone from the API.
        if not self._removed:
            with contextlib.suppress(Exception):
                await self._deps.host.finish_deletion(self.pod)
        for instances in by_name.values():
            for info in instances:
                await runtime.remove_container(info.id)
        self.finished.set()

    def _current(self) -> Pod:
        """The pod with the newest status: the one written last, or the server's."""
        if self._reported is None:
            return self.pod
        return {**self.pod, "status": self._reported}

    def _event(self, kind: str, reason: str, message: str) -> None:
        self._deps.host.event(self.pod, kind, reason, message)
