"""The container runtime seam: what the pod sync loop asks of a runtime, and the data it gets.

:class:`ContainerRuntime` is the protocol; :mod:`.docker` drives a Docker engine through the
``docker`` package and :mod:`.fake` keeps containers in memory for unit tests and hollow nodes.
Containers are described in runtime terms (:class:`ContainerConfig`: entrypoint, cmd, mounts,
a network mode), never in Pod terms, so a runtime knows nothing about Kubernetes objects. Every
container the agent creates carries the labels below; listing filters on them, which is how the
agent never touches containers it did not create, and how it finds its pods again after a
restart. The records are named tuples (immutable, compared by value): the agent imports this
module before its node registers, and on an emulated ARM64 board a frozen dataclass took
about 29 ms to create, a named tuple 9.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NamedTuple, Protocol

LABEL_MANAGED = "io.k3py.managed"
LABEL_NODE = "io.k3py.node"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
LABEL_KIND = "io.k3py.container.kind"
LABEL_ATTEMPT = "io.k3py.container.attempt"
LABEL_HASH = "io.k3py.container.hash"

SANDBOX_NAME = "POD"

ContainerKind = Literal["sandbox", "init", "app"]
ContainerStatus = Literal["created", "running", "exited"]


class Mount(NamedTuple):
    """A host path bound into the container."""

    source: str
    target: str
    read_only: bool = False


class PortMapping(NamedTuple):
    """A hostPort published on the node (only sandboxes carry them: they own the network)."""

    container_port: int
    host_port: int
    protocol: str = "tcp"
    host_ip: str = ""


class ContainerConfig(NamedTuple):
    """What to create. ``entrypoint``/``cmd`` are a Pod's command/args; None keeps the image's.

    ``network`` is None for a sandbox (the runtime's default network until a pod network plugs
    in) and ``container:<sandbox id>`` for the pod's other containers, which join its network,
    hostname and IPC namespaces.
    """

    name: str
    image: str
    labels: Mapping[str, str]
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: Mapping[str, str] = MappingProxyType({})
    working_dir: str | None = None
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    hostname: str | None = None
    ports: tuple[PortMapping, ...] = ()
    memory_limit: int | None = None
    cpu_limit_millis: int | None = None
    cpu_shares: int | None = None
    privileged: bool = False
    user: str | None = None
    read_only_rootfs: bool = False
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False


class ContainerInfo(NamedTuple):
    """A container as the runtime reports it."""

    id: str
    name: str
    labels: Mapping[str, str]
    image: str
    image_id: str
    status: ContainerStatus
    exit_code: int | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    created_at: datetime.datetime | None = None
    oom_killed: bool = False
    error: str = ""
    ip: str = ""
    pid: int = 0  # the main process while running (a sandbox's network namespace is its)

    @property
    def pod_uid(self) -> str:
        return self.labels.get(LABEL_POD_UID, "")

    @property
    def container_name(self) -> str:
        return self.labels.get(LABEL_CONTAINER_NAME, "")

    @property
    def kind(self) -> str:
        return self.labels.get(LABEL_KIND, "app")

    @property
    def attempt(self) -> int:
        try:
            return int(self.labels.get(LABEL_ATTEMPT, "0"))
        except ValueError:
            return 0

    @property
    def spec_hash(self) -> str:
        return self.labels.get(LABEL_HASH, "")


class ContainerStats(NamedTuple):
    """One statistics snapshot: CPU time since start and the memory working set."""

    cpu_ns: int
    memory_working_set: int


class ExecResult(NamedTuple):
    exit_code: int
    output: bytes


class LogOptions(NamedTuple):
    follow: bool = False
    tail: int | None = None
    since: datetime.datetime | None = None
    timestamps: bool = False


class ContainerEvent(NamedTuple):
    """Something happened to a labelled container (``action``: start, die, destroy, oom...)."""

    container_id: str
    action: str
    labels: Mapping[str, str]


STDOUT = 1
STDERR = 2


class ExecSession(Protocol):
    """An interactive process in a container (``kubectl exec``)."""

    async def read(self) -> tuple[int, bytes] | None:
        """The next output chunk as (STDOUT|STDERR, data); None once the output ended."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def resize(self, width: int, height: int) -> None: ...

    async def exit_code(self) -> int:
        """The process's exit code (after the output ended)."""
        ...

    async def close(self) -> None: ...


class ContainerRuntime(Protocol):
    async def version(self) -> str:
        """The runtime's name and version as a Node reports it (``docker://20.10.24``)."""
        ...

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers (any state) carrying all of ``labels``."""
        ...

    async def inspect_container(self, container_id: str) -> ContainerInfo | None: ...

    async def create_container(self, config: ContainerConfig) -> str:
        """Create (not start) a container; returns its id."""
        ...

    async def start_container(self, container_id: str) -> None: ...

    async def stop_container(self, container_id: str, grace_seconds: float) -> None:
        """SIGTERM (or the image's stop signal), then SIGKILL after ``grace_seconds``."""
        ...

    async def remove_container(self, container_id: str) -> None:
        """Remove a container; a missing one is not an error."""
        ...

    async def image_id(self, reference: str) -> str | None:
        """The id of a local image, None when it is not present."""
        ...

    async def pull_image(self, reference: str) -> str:
        """Pull an image; returns its id. Raises ImageError."""
        ...

    async def load_images(self, archive: Path) -> list[str]:
        """Load an image archive (``docker save`` format); returns the loaded references."""
        ...

    async def import_rootfs(self, rootfs_tar: bytes, reference: str, cmd: list[str]) -> str:
        """Make an image from a root filesystem tar (``docker import``); returns its id."""
        ...

    async def exec_sync(
        self, container_id: str, command: list[str], time_limit: float
    ) -> ExecResult:
        """Run a command to completion (probes); a timeout raises TimeoutError."""
        ...

    async def exec_session(
        self, container_id: str, command: list[str], *, tty: bool, stdin: bool
    ) -> ExecSession: ...

    async def attach_session(self, container_id: str, *, stdin: bool) -> ExecSession:
        """The stdio of the container's main process (``kubectl attach``)."""
        ...

    def logs(self, container_id: str, options: LogOptions) -> AsyncIterator[bytes]:
        """The container's output (stdout and stderr interleaved), as chunks."""
        ...

    def events(self, labels: Mapping[str, str]) -> AsyncIterator[ContainerEvent]:
        """Lifecycle events of containers carrying ``labels``, until cancelled."""
        ...

    async def container_stats(self, container_id: str) -> ContainerStats | None:
        """CPU and memory of a running container (None when it is gone or stopped)."""
        ...

    async def close(self) -> None: ...
