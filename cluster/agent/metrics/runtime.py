"""A container runtime that times and counts every call of the one it wraps.

Gives the kubelet's runtime metrics (``kubelet_runtime_operations_total``,
``kubelet_runtime_operations_errors_total``, ``kubelet_runtime_operations_duration_seconds``,
all by ``operation_type``) and, from what passes through, container starts, restarts (a new
instance of an app container whose attempt is above 0) and image loads. Streams (logs, events)
and exec sessions pass through untimed: they last as long as their reader wants.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from k3py.cluster.agent.runtime import (
    LABEL_ATTEMPT,
    LABEL_KIND,
    ContainerConfig,
    ContainerEvent,
    ContainerInfo,
    ContainerRuntime,
    ContainerStats,
    ExecResult,
    ExecSession,
    LogOptions,
)

if TYPE_CHECKING:
    from k3py.cluster.agent.metrics.registry import AgentMetrics

T = TypeVar("T")


class TimedRuntime:
    def __init__(self, inner: ContainerRuntime, metrics: AgentMetrics) -> None:
        self.inner = inner
        self._metrics = metrics
        self._kinds: dict[str, str] = {}  # container id → kind, between create and start

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        except Exception:  # a cancelled call is not the runtime's error
            self._metrics.runtime_errors.inc((operation,))
            raise
        finally:
            self._metrics.runtime_operations.inc((operation,))
            self._metrics.runtime_durations.observe((operation,), time.perf_counter() - started)

    async def version(self) -> str:
        return await self._timed("version", self.inner.version())

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return await self._timed("list_containers", self.inner.list_containers(labels))

    async def inspect_container(self, container_id: str) -> ContainerInfo | None:
        return await self._timed("container_status", self.inner.inspect_container(container_id))

    async def create_container(self, config: ContainerConfig) -> str:
        container_id = await self._timed("create_container", self.inner.create_container(config))
        kind = config.labels.get(LABEL_KIND, "app")
        self._kinds[container_id] = kind
        if kind == "app" and config.labels.get(LABEL_ATTEMPT, "0") not in ("", "0"):
            self._metrics.restarts.inc()
        return container_id

    async def start_container(self, container_id: str) -> None:
        kind = self._kinds.pop(container_id, "app")
        container_type = "podsandbox" if kind == "sandbox" else "container"
        try:
            await self._timed("start_container", self.inner.start_container(container_id))
        except Exception:
            self._metrics.start_errors.inc((container_type,))
            raise
        self._metrics.starts.inc((container_type,))

    async def stop_container(self, container_id: str, grace_seconds: float) -> None:
        await self._timed("stop_container", self.inner.stop_container(container_id, grace_seconds))

    async def remove_container(self, container_id: str) -> None:
        self._kinds.pop(container_id, None)
        await self._timed("remove_container", self.inner.remove_container(container_id))

    async def image_id(self, reference: str) -> str | None:
        return await self._timed("image_status", self.inner.image_id(reference))

    async def pull_image(self, reference: str) -> str:
        return await self._timed("pull_image", self.inner.pull_image(reference))

    async def load_images(self, archive: Path) -> list[str]:
        loaded = await self._timed("load_images", self.inner.load_images(archive))
        self._metrics.images_loaded.inc((), len(loaded))
        return loaded

    async def import_rootfs(self, rootfs_tar: bytes, reference: str, cmd: list[str]) -> str:
        return await self._timed(
            "import_image", self.inner.import_rootfs(rootfs_tar, reference, cmd)
        )

    async def exec_sync(
        self, container_id: str, command: list[str], time_limit: float
    ) -> ExecResult:
        return await self._timed(
            "exec_sync", self.inner.exec_sync(container_id, command, time_limit)
        )

    async def exec_session(
        self, container_id: str, command: list[str], *, tty: bool, stdin: bool
    ) -> ExecSession:
        return await self._timed(
            "exec", self.inner.exec_session(container_id, command, tty=tty, stdin=stdin)
        )

    async def attach_session(self, container_id: str, *, stdin: bool) -> ExecSession:
        return await self._timed("attach", self.inner.attach_session(container_id, stdin=stdin))

    def logs(self, container_id: str, options: LogOptions) -> AsyncIterator[bytes]:
        return self.inner.logs(container_id, options)

    def events(self, labels: Mapping[str, str]) -> AsyncIterator[ContainerEvent]:
        return self.inner.events(labels)

    async def container_stats(self, container_id: str) -> ContainerStats | None:
        return await self._timed("container_stats", self.inner.container_stats(container_id))

    async def close(self) -> None:
        await self.inner.close()
