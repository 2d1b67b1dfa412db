"""An in-memory container runtime for unit tests and hollow nodes.

Containers only change state when told to: they run from ``start_container`` until a test calls
:meth:`FakeRuntime.exit` (or the image is marked to exit at once with :meth:`exit_on_start`), or
until they are stopped. Times come from a :class:`~k3py.cluster.client.clock.Clock`, so a test
on a virtual clock sees start and finish times on it. Every call is recorded in ``calls`` so
tests can assert what the agent asked for and in which order. A hollow node uses it as is:
its pods "run" without processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from k3py.cluster.agent.errors import ImageError, RuntimeUnavailable
from k3py.cluster.agent.runtime import (
    STDOUT,
    ContainerConfig,
    ContainerEvent,
    ContainerInfo,
    ContainerStats,
    ExecResult,
    LogOptions,
)
from k3py.cluster.client.clock import Clock, RealClock

ExecHandler = Callable[[ContainerInfo, list[str]], int]


@dataclasses.dataclass
class FakeContainer:
    config: ContainerConfig
    info: ContainerInfo
    output: list[bytes] = dataclasses.field(default_factory=list)


class FakeExec:
    def __init__(self, output: bytes, code: int) -> None:
        self._chunks = [output] if output else []
        self._code = code
        self.stdin = bytearray()
        self.sizes: list[tuple[int, int]] = []

    async def read(self) -> tuple[int, bytes] | None:
        return (STDOUT, self._chunks.pop(0)) if self._chunks else None

    async def write(self, data: bytes) -> None:
        self.stdin.extend(data)

    async def close_stdin(self) -> None:
        return None

    async def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))

    async def exit_code(self) -> int:
        return self._code

    async def close(self) -> None:
        return None


class FakeRuntime:
    """A :class:`~k3py.cluster.agent.runtime.ContainerRuntime` kept in memory."""

    def __init__(
        self,
        clock: Clock | None = None,
        images: Mapping[str, str] | None = None,
        *,
        pull_any: bool = False,
    ) -> None:
        self.clock: Clock = clock or RealClock()
        # Hollow nodes pull whatever they are asked for; unit tests choose what exists.
        self.pull_any = pull_any
        self.images: dict[str, str] = dict(images or {})
        self.pullable: dict[str, str] = {}
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple[str, str]] = []
        self.available = True
        self.exec_handler: ExecHandler = lambda info, command: 0
        self._exit_on_start: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._ips = itertools.count(2)
        self._listeners: list[asyncio.Queue[ContainerEvent]] = []
        # Statistics tests set per container id: (CPU nanoseconds used, working set bytes).
        self.stats: dict[str, tuple[int, int]] = {}

    # -- test controls ---------------------------------------------------------------------

    def exit_on_start(self, image: str, code: int) -> None:
        """Containers of ``image`` exit with ``code`` as soon as they start."""
        self._exit_on_start[image] = code

    def keep_running(self, image: str) -> None:
        self._exit_on_start.pop(image, None)

    def exit(self, container_id: str, code: int, *, oom: bool = False) -> None:
        """The container's process ends with ``code``."""
        container = self.containers[container_id]
        if container.info.status != "running":
            return
        container.info = container.info._replace(
            status="exited",
            exit_code=code,
            finished_at=self.clock.now(),
            oom_killed=oom,
        )
        self._emit(container, "die")

    def running(self) -> list[ContainerInfo]:
        """The containers that run now."""
        return [c.info for c in self.containers.values() if c.info.status == "running"]

    def _emit(self, container: FakeContainer, action: str) -> None:
        event = ContainerEvent(container.info.id, action, dict(container.info.labels))
        for queue in self._listeners:
            queue.put_nowait(event)

    def _check(self) -> None:
        if not self.available:
            raise RuntimeUnavailable("the fake runtime is marked unavailable")

    # -- the runtime protocol --------------------------------------------------------------

    async def version(self) -> str:
        self._check()
        return "fake://0.1"

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        self._check()
        return [
            c.info
            for c in self.containers.values()
            if all(c.info.labels.get(k) == v for k, v in labels.items())
        ]

    async def inspect_container(self, container_id: str) -> ContainerInfo | None:
        self._check()
        container = self.containers.get(container_id)
        return container.info if container else None

    async def create_container(self, config: ContainerConfig) -> str:
        self._check()
        self.calls.append(("create", config.name))
        if config.image not in self.images:
            raise ImageError(f"image {config.image} is not present")
        if any(c.info.name == config.name for c in self.containers.values()):
            raise RuntimeUnavailable(f"a container named {config.name} already exists")
        container_id = f"{next(self._ids):064x}"
        ip = f"10.88.0.{next(self._ips)}" if config.network is None else ""
        info = ContainerInfo(
            id=container_id,
            name=config.name,
            labels=dict(config.labels),
            image=config.image,
            image_id=self.images[config.image],
            status="created",
            created_at=self.clock.now(),
            ip=ip,
        )
        self.containers[container_id] = FakeContainer(config, info)
        return container_id

    async def start_container(self, container_id: str) -> None:
        self._check()
        container = self.containers[container_id]
        self.calls.append(("start", container.info.name))
        container.info = container.info._replace(
            status="running", started_at=self.clock.now(), exit_code=None
        )
        self._emit(container, "start")
        code = self._exit_on_start.get(container.config.image)
        if code is not None:
            self.exit(container_id, code)

    async def stop_container(self, container_id: str, grace_seconds: float) -> None:
        self._check()
        container = self.containers.get(container_id)
        if container is None:
            return
        self.calls.append(("stop", container.info.name))
        # A fake process honours SIGTERM at once: exit code 143 (128 + SIGTERM).
        self.exit(container_id, 143)

    async def remove_container(self, container_id: str) -> None:
        self._check()
        container = self.containers.pop(container_id, None)
        if container is not None:
            self.calls.append(("remove", container.info.name))
            self._emit(container, "destroy")

    async def image_id(self, reference: str) -> str | None:
        self._check()
        return self.images.get(reference)

    async def pull_image(self, reference: str) -> str:
        self._check()
        self.calls.append(("pull", reference))
        if self.pull_any:
            self.pullable.setdefault(reference, f"sha256:{abs(hash(reference)):064x}"[:71])
        if self.pull_any:
            self.pullable.setdefault(reference, f"sha256:{abs(hash(reference)):064x}"[:71])
        if reference not in self.pullable:
            raise ImageError(f"cannot pull {reference}: no registry is reachable")
        self.images[reference] = self.pullable[reference]
        return self.images[reference]

    async def load_images(self, archive: Path) -> list[str]:
        self._check()
        self.calls.append(("load", str(archive)))
        names = [line.strip() for line in archive.read_text().splitlines() if line.strip()]
        for name in names:
            self.images[name] = f"sha256:{abs(hash(name)):064x}"[:71]
        return names

    async def import_rootfs(self, rootfs_tar: bytes, reference: str, cmd: list[str]) -> str:
        self._check()
        self.calls.append(("import", reference))
        self.images[reference] = f"sha256:{len(rootfs_tar):064x}"
        return self.images[reference]

    async def exec_sync(
        self, container_id: str, command: list[str], time_limit: float
    ) -> ExecResult:
        self._check()
        container = self.containers[container_id]
        if container.info.status != "running":
            raise RuntimeUnavailable(f"container {container_id[:12]} is not running")
        return ExecResult(self.exec_handler(container.info, command), b"")

    async def exec_session(
        self, container_id: str, command: list[str], *, tty: bool, stdin: bool
    ) -> FakeExec:
        result = await self.exec_sync(container_id, command, 1.0)
        return FakeExec(" ".join(command).encode() + b"\n", result.exit_code)

    async def attach_session(self, container_id: str, *, stdin: bool) -> FakeExec:
        # A fake process has no stdio: attaching shows nothing and ends at once.
        return FakeExec(b"", 0)

    async def logs(self, container_id: str, options: LogOptions) -> AsyncIterator[bytes]:
        container = self.containers.get(container_id)
        if container is None:
            return
        lines = container.output if options.tail is None else container.output[-options.tail :]
        for line in lines:
            yield line

    async def events(self, labels: Mapping[str, str]) -> AsyncIterator[ContainerEvent]:
        queue: asyncio.Queue[ContainerEvent] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            while True:
                event = await queue.get()
                if all(event.labels.get(k) == v for k, v in labels.items()):
                    yield event
        finally:
            self._listeners.remove(queue)

    async def container_stats(self, container_id: str) -> ContainerStats | None:
        self._check()
        container = self.containers.get(container_id)
        if container is None or container.info.status != "running":
            return None
        cpu, memory = self.stats.get(container_id, (0, 0))
        return ContainerStats(cpu, memory)

    async def close(self) -> None:
        return None
