"""The real container runtime: a Docker engine, over its unix socket.

The calls the agent makes all the time (version, listings, inspections, statistics, creating
and starting containers and execs) are short JSON requests spoken over the socket with asyncio
(:func:`.dockerstream.request_json`), as are the endpoints that stream for a long time, hijack
the connection or answer late (logs, events, exec, attach, stop, remove): a blocked thread per
``kubectl logs -f``, per probe that hangs past its timeout or per container stopping for its
grace period would exhaust a pool, and an asyncio stream is cancelled by closing it. So are
loading and importing images (:func:`.dockerstream.send_archive`), which every board does at
its first boot (air-gap archives, the sandbox image). Only a pull goes through the synchronous
``docker`` package on a small thread pool (registry authentication and progress): the package,
with ``requests`` and ``urllib3``, costs about 4 MB of resident memory, so it and the pool are
brought in by the first pull, which an agent whose images are present never makes.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import sys
import urllib.parse
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from k3py.cluster.agent.errors import ImageError, RuntimeUnavailable
from k3py.cluster.agent.runtime import (
    ContainerConfig,
    ContainerEvent,
    ContainerInfo,
    ContainerStats,
    ContainerStatus,
    ExecResult,
    ExecSession,
    LogOptions,
    dockerstream,
)

if TYPE_CHECKING:
    import docker

logger = logging.getLogger("k3py.agent.runtime")

DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"
_T = TypeVar("_T")
_ZERO_TIME = "0001-01-01T00:00:00Z"
# How long past the grace period a stop may take (the engine's own kill and clean-up).
_STOP_SLACK = 60.0
_ARCHIVE_SECONDS = 900.0  # loading a big air-gap archive takes minutes on a board


def parse_docker_time(text: str | None) -> datetime.datetime | None:
    """Docker's RFC 3339 times carry nanoseconds; Python keeps microseconds."""
    if not text or text.startswith("0001-01-01"):
        return None
    main, _, rest = text.partition(".")
    if rest:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{main}.{digits[:6].ljust(6, '0')}{zone}"
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def _status(state: Mapping[str, Any]) -> ContainerStatus:
    name = str(state.get("Status", ""))
    if name in {"running", "paused", "restarting"}:
        return "running"
    if name == "created":
        return "created"
    return "exited"


def info_from_inspect(data: Mapping[str, Any]) -> ContainerInfo:
    """A :class:`ContainerInfo` from ``docker inspect`` output."""
    state = data.get("State") or {}
    config = data.get("Config") or {}
    network = data.get("NetworkSettings") or {}
    ip = str(network.get("IPAddress") or "")
    if not ip:
        for net in (network.get("Networks") or {}).values():
            if isinstance(net, dict) and net.get("IPAddress"):
                ip = str(net["IPAddress"])
                break
    status = _status(state)
    return ContainerInfo(
        id=str(data.get("Id", "")),
        name=str(data.get("Name", "")).lstrip("/"),
        labels=dict(config.get("Labels") or {}),
        image=str(config.get("Image", "")),
        image_id=str(data.get("Image", "")),
        status=status,
        exit_code=int(state.get("ExitCode", 0)) if status == "exited" else None,
        started_at=parse_docker_time(state.get("StartedAt")),
        finished_at=parse_docker_time(state.get("FinishedAt")),
        created_at=parse_docker_time(data.get("Created")),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        ip=ip,
        pid=int(state.get("Pid") or 0) if status == "running" else 0,
    )


# requests' encoding guessers (see import_docker).
GUESSERS = ("chardet", "charset_normalizer")


def import_docker() -> ModuleType:
    """Import the ``docker`` package without an encoding guesser.

    ``requests`` (under ``docker``) imports ``chardet`` and ``charset_normalizer``, those that
    are installed, only to guess the encoding of text responses: about 3 MB of resident memory
    each on x86-64, 5.6 and 5.3 MB on an ARM64 board, where Debian's ``python3-requests``
    brings both. The engine answers JSON, whose encoding needs no guessing, so while ``docker``
    is imported the guessers are hidden (``requests`` then falls back to UTF-8), and they are
    made importable again right after for any other user in the process.
    """
    if "docker" in sys.modules:
        return sys.modules["docker"]
    hidden = [
        name for name in GUESSERS if "requests" not in sys.modules and name not in sys.modules
    ]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            # requests warns that it found no encoding guesser; that is the point.
            warnings.simplefilter("ignore")
            import docker  # noqa: F401 (imported for sys.modules)
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    module: ModuleType = sys.modules["docker"]
    return module


def _errors() -> Any:
    return import_docker().errors


def stats_from_docker(data: Mapping[str, Any]) -> ContainerStats | None:
    """CPU time and working set from ``/containers/ID/stats`` (cgroup v1 or v2 fields)."""
    cpu = ((data.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    memory = data.get("memory_stats") or {}
    if cpu is None or "usage" not in memory:
        return None  # a stopped container reports empty statistics
    detail = memory.get("stats") or {}
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return ContainerStats(int(cpu), max(0, int(memory["usage"]) - int(inactive or 0)))


def socket_path(endpoint: str) -> str:
    if not endpoint.startswith("unix://"):
        raise RuntimeUnavailable(
            f"container runtime endpoint {endpoint!r}: only unix:// sockets are supported "
            "(for example unix:///var/run/docker.sock)"
        )
    return endpoint[len("unix://") :]


class DockerRuntime:
    """A :class:`~k3py.cluster.agent.runtime.ContainerRuntime` on a Docker engine."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, workers: int = 4) -> None:
        self._endpoint = endpoint
        self._socket = socket_path(endpoint)
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._client: docker.APIClient | None = None
        self._inspected: dict[str, tuple[str, ContainerInfo]] = {}

    def _api(self) -> docker.APIClient:
        if self._client is None:
            try:
                self._client = import_docker().APIClient(base_url=self._endpoint, version="auto")
            except _errors().DockerException as err:
                raise RuntimeUnavailable(
                    f"cannot reach the Docker engine at {self._endpoint}: {err}; start dockerd "
                    "or point --container-runtime-endpoint at its socket"
                ) from None
        return self._client

    async def _get(self, path: str) -> Any:
        """A read over the socket: the decoded JSON, or None when the engine says 404."""
        status, data = await dockerstream.get_json(self._socket, path)
        if status == 404:
            return None
        if not 200 <= status < 300:
            raise RuntimeUnavailable(f"Docker engine: GET {path.split('?')[0]}: {status} {data}")
        return data

    async def _call(self, fn: Callable[[docker.APIClient], _T]) -> _T:
        def run() -> _T:
            return fn(self._api())

        if self._pool is None:
            import_docker()
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="docker")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, run)
        except (OSError, _errors().DockerException) as err:
            if isinstance(err, _errors().APIError):
                raise
            raise RuntimeUnavailable(
                f"the Docker engine at {self._endpoint} does not answer: {err}"
            ) from None

    async def version(self) -> str:
        # "Docker/26.1.5+dfsg1 (linux)" from the ping; /version only when an engine (or
        # something speaking for it) does not name itself there.
        server = await dockerstream.server_header(self._socket)
        name, _, rest = server.partition("/")
        if name == "Docker" and rest:
            return f"docker://{rest.split(' ', 1)[0]}"
        data = await self._get("/version") or {}
        return f"docker://{data.get('Version', 'unknown')}"

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        query = urllib.parse.urlencode({"all": "1", "filters": json.dumps(filters)})
        summaries = await self._get(f"/containers/json?{query}") or []
        infos = []
        for summary in summaries:
            # What inspect reports only changes with the container's state, so an idle agent
            # that relists its pods costs one engine call, not one per container.
            container_id, state = str(summary["Id"]), str(summary.get("State", ""))
            cached = self._inspected.get(container_id)
            if cached is None or cached[0] != state:
                info = await self.inspect_container(container_id)
                if info is None:
                    continue
                cached = self._inspected[container_id] = (state, info)
            infos.append(cached[1])
        return infos

    async def inspect_container(self, container_id: str) -> ContainerInfo | None:
        data = await self._get(f"/containers/{_quote(container_id)}/json")
        return None if data is None else info_from_inspect(data)

    async def _send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await dockerstream.request_json(self._socket, method, path, body)

    async def create_container(self, config: ContainerConfig) -> str:
        status, data = await self._send(
            "POST",
            f"/containers/create?{urllib.parse.urlencode({'name': config.name})}",
            create_body(config),
        )
        if status == 404:
            raise ImageError(f"image {config.image} is not present: {data}")
        if status != 201:
            raise RuntimeUnavailable(f"cannot create container {config.name}: {data}")
        return str(data["Id"])

    async def start_container(self, container_id: str) -> None:
        status, data = await self._send("POST", f"/containers/{_quote(container_id)}/start")
        if status not in (204, 304):  # started, already running
            raise RuntimeUnavailable(f"cannot start container {container_id[:12]}: {data}")

    async def stop_container(self, container_id: str, grace_seconds: float) -> None:
        # The engine answers a stop only once the container is gone, up to the whole grace
        # period later: spoken over the socket with asyncio so that stopping any number of
        # containers holds no thread of the pool (which creates and starts other pods).
        timeout = max(0, round(grace_seconds))
        path = f"/containers/{urllib.parse.quote(container_id)}/stop?t={timeout}"
        code, message = await dockerstream.call(
            self._socket, "POST", path, limit=timeout + _STOP_SLACK
        )
        if code not in (204, 304, 404):  # stopped, already stopped, gone
            raise RuntimeUnavailable(f"cannot stop container {container_id[:12]}: {message}")

    async def remove_container(self, container_id: str) -> None:
        self._inspected.pop(container_id, None)
        # Over the socket too: a namespace's worth of pods removes its containers at once.
        path = f"/containers/{urllib.parse.quote(container_id)}?v=1&force=1"
        code, message = await dockerstream.call(self._socket, "DELETE", path, limit=_STOP_SLACK)
        if code in (204, 404) or (code == 409 and "in progress" in message):
            return
        raise RuntimeUnavailable(f"cannot remove container {container_id[:12]}: {message}")

    async def image_id(self, reference: str) -> str | None:
        data = await self._get(f"/images/{_quote(reference)}/json")
        return None if data is None else str(data.get("Id", ""))

    async def pull_image(self, reference: str) -> str:
        repository, tag = _split_reference(reference)
        try:
            await self._call(lambda api: api.pull(repository, tag=tag))
        except _errors().APIError as err:
            raise ImageError(f"cannot pull {reference}: {err.explanation or err}") from None
        found = await self.image_id(reference)
        if found is None:
            raise ImageError(f"pulled {reference} but the engine does not list it")
        return found

    async def load_images(self, archive: Path) -> list[str]:
        # Over the socket, not through the docker package: a board loads its air-gap images
        # at first boot, and the package (with requests and urllib3) would stay resident.
        _, messages = await dockerstream.send_archive(
            self._socket, "/images/load?quiet=1", archive, limit=_ARCHIVE_SECONDS
        )
        loaded: list[str] = []
        for message in messages:
            if "errorDetail" in message or "error" in message:
                raise ImageError(f"cannot load {archive}: {message.get('error')}")
            text = str(message.get("stream", "")).strip()
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if text.startswith(prefix):
                    loaded.append(text[len(prefix) :])
        return loaded

    async def import_rootfs(self, rootfs_tar: bytes, reference: str, cmd: list[str]) -> str:
        repository, tag = _split_reference(reference)
        query = urllib.parse.urlencode(
            {"fromSrc": "-", "repo": repository, "tag": tag, "changes": f"CMD {json.dumps(cmd)}"}
        )
        _, messages = await dockerstream.send_archive(
            self._socket, f"/images/create?{query}", rootfs_tar, limit=_ARCHIVE_SECONDS
        )
        for message in messages:
            if "errorDetail" in message or "error" in message:
                raise ImageError(f"cannot import {reference}: {message.get('error')}")
        found = await self.image_id(reference)
        if found is None:
            raise ImageError(f"imported {reference} but the engine does not list it")
        return found

    async def _exec_create(
        self, container_id: str, command: list[str], *, tty: bool, stdin: bool
    ) -> str:
        body = {
            "AttachStdin": stdin,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": tty,
            "Cmd": command,
            "Privileged": False,
            "User": "",
        }
        status, data = await self._send("POST", f"/containers/{_quote(container_id)}/exec", body)
        if status != 201:
            raise RuntimeUnavailable(f"cannot exec in container {container_id[:12]}: {data}")
        return str(data["Id"])

    async def _exec_exit_code(self, exec_id: str) -> int:
        data = await self._get(f"/exec/{_quote(exec_id)}/json") or {}
        code = data.get("ExitCode")
        return int(code) if code is not None else -1

    async def exec_sync(
        self, container_id: str, command: list[str], time_limit: float
    ) -> ExecResult:
        exec_id = await self._exec_create(container_id, command, tty=False, stdin=False)
        stream = await dockerstream.exec_start(self._socket, exec_id, tty=False)
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(time_limit):
                while (item := await stream.read()) is not None:
                    if sum(len(c) for c in chunks) < 64 * 1024:
                        chunks.append(item[1])
        finally:
            await stream.close()
        return ExecResult(await self._exec_exit_code(exec_id), b"".join(chunks))

    async def exec_session(
        self, container_id: str, command: list[str], *, tty: bool, stdin: bool
    ) -> ExecSession:
        exec_id = await self._exec_create(container_id, command, tty=tty, stdin=stdin)
        stream = await dockerstream.exec_start(self._socket, exec_id, tty=tty)
        return _DockerExec(self, exec_id, stream)

    async def attach_session(self, container_id: str, *, stdin: bool) -> ExecSession:
        """The container's main process's stdio, for ``kubectl attach``."""
        data = await self._get(f"/containers/{_quote(container_id)}/json")
        if data is None:
            raise RuntimeUnavailable(f"no container {container_id[:12]} to attach to")
        tty = bool((data.get("Config") or {}).get("Tty"))
        stream = await dockerstream.attach(self._socket, container_id, stdin=stdin, tty=tty)
        return _DockerAttach(self, container_id, stream)

    async def logs(self, container_id: str, options: LogOptions) -> AsyncIterator[bytes]:
        query: dict[str, str] = {
            "stdout": "1",
            "stderr": "1",
            "follow": "1" if options.follow else "0",
            "timestamps": "1" if options.timestamps else "0",
            "tail": "all" if options.tail is None else str(max(0, options.tail)),
        }
        if options.since is not None:
            query["since"] = f"{options.since.timestamp():.9f}"
        data = await self._get(f"/containers/{_quote(container_id)}/json")
        if data is None:
            return
        # A TTY's output is one raw stream; otherwise the engine frames stdout and stderr.
        tty = bool((data.get("Config") or {}).get("Tty"))
        path = f"/containers/{container_id}/logs?{urllib.parse.urlencode(query)}"
        async for _, chunk in dockerstream.get_stream(self._socket, path, multiplexed=not tty):
            yield chunk

    async def events(self, labels: Mapping[str, str]) -> AsyncIterator[ContainerEvent]:
        filters = {"type": ["container"], "label": [f"{k}={v}" for k, v in labels.items()]}
        path = "/events?" + urllib.parse.urlencode({"filters": json.dumps(filters)})
        async for line in dockerstream.get_lines(self._socket, path):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            actor = event.get("Actor") or {}
            yield ContainerEvent(
                container_id=str(actor.get("ID") or event.get("id") or ""),
                action=str(event.get("Action") or event.get("status") or "").split(":")[0],
                labels=dict(actor.get("Attributes") or {}),
            )

    async def container_stats(self, container_id: str) -> ContainerStats | None:
        # one_shot: the engine answers at once instead of waiting a second for a CPU delta;
        # the agent computes rates between its own samples.
        try:
            data = await self._get(f"/containers/{_quote(container_id)}/stats?stream=0&one-shot=1")
        except RuntimeUnavailable:
            return None
        return None if data is None else stats_from_docker(data)

    async def _resize(self, prefix: str, width: int, height: int) -> None:
        status, data = await self._send("POST", f"{prefix}/resize?h={height}&w={width}")
        if not 200 <= status < 300:
            raise RuntimeUnavailable(f"Docker engine: resize: {status} {data}")

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class _HijackedSession:
    """A process's streams over a hijacked connection; the subclass names its engine path."""

    def __init__(self, runtime: DockerRuntime, path: str, stream: dockerstream.Hijacked) -> None:
        self._runtime = runtime
        self._path = path  # /exec/<id> or /containers/<id>
        self._stream = stream

    async def read(self) -> tuple[int, bytes] | None:
        return await self._stream.read()

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)

    async def close_stdin(self) -> None:
        await self._stream.close_write()

    async def resize(self, width: int, height: int) -> None:
        await self._runtime._resize(self._path, width, height)

    async def close(self) -> None:
        await self._stream.close()


class _DockerExec(_HijackedSession):
    def __init__(self, runtime: DockerRuntime, exec_id: str, stream: dockerstream.Hijacked):
        super().__init__(runtime, f"/exec/{_quote(exec_id)}", stream)

    async def exit_code(self) -> int:
        # The engine records the exit code a moment after the output stream ends.
        for _ in range(50):
            data = await self._runtime._get(f"{self._path}/json") or {}
            if not data.get("Running"):
                code = data.get("ExitCode")
                return int(code) if code is not None else -1
            await asyncio.sleep(0.02)
        return -1


class _DockerAttach(_HijackedSession):
    """An attached container: its exit code is the process's, once it has exited."""

    def __init__(
        self, runtime: DockerRuntime, container_id: str, stream: dockerstream.Hijacked
    ) -> None:
        super().__init__(runtime, f"/containers/{_quote(container_id)}", stream)
        self._container_id = container_id

    async def exit_code(self) -> int:
        info = await self._runtime.inspect_container(self._container_id)
        if info is None or info.status != "exited":
            return 0  # detached from a process that goes on
        return info.exit_code or 0


def create_body(config: ContainerConfig) -> dict[str, Any]:
    """The ``POST /containers/create`` body, as the ``docker`` package builds it."""
    network = config.network or "bridge"
    # With "none" the pod network wires the sandbox; Docker cannot publish its ports.
    published = () if network == "none" else config.ports
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in published:
        bindings.setdefault(f"{p.container_port}/{p.protocol}", []).append(
            {"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)}
        )
    host_config: dict[str, Any] = {
        "Binds": [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in config.mounts],
        "NetworkMode": network,
        "Privileged": config.privileged,
        "ReadonlyRootfs": config.read_only_rootfs,
        # Pod containers share the sandbox's IPC namespace, as in Kubernetes.
        "IpcMode": network if network.startswith("container:") else "shareable",
    }
    if bindings:
        host_config["PortBindings"] = bindings
    if config.memory_limit:
        host_config["Memory"] = config.memory_limit
    if config.cpu_limit_millis:
        host_config["NanoCpus"] = config.cpu_limit_millis * 1_000_000
    if config.cpu_shares:
        host_config["CpuShares"] = config.cpu_shares
    return {
        "Image": config.image,
        "Cmd": list(config.cmd) if config.cmd is not None else None,
        "Entrypoint": list(config.entrypoint) if config.entrypoint is not None else None,
        "Env": [f"{k}={v}" for k, v in config.env.items()],
        "WorkingDir": config.working_dir,
        "Labels": dict(config.labels),
        "Hostname": None if network.startswith("container:") else config.hostname,
        "User": config.user,
        "Tty": config.tty,
        "OpenStdin": config.stdin,
        # What the docker package sets for a container that is not detached.
        "StdinOnce": config.stdin,
        "AttachStdin": config.stdin,
        "AttachStdout": True,
        "AttachStderr": True,
        "ExposedPorts": {key: {} for key in bindings} or None,
        "HostConfig": host_config,
    }


def _quote(part: str) -> str:
    """A name in a URL path, as the ``docker`` package quotes it (``/`` and ``:`` kept)."""
    return urllib.parse.quote(part, safe="/:")


def _split_reference(reference: str) -> tuple[str, str]:
    """``repo[:tag]`` → (repo, tag); digests and registry ports are kept intact."""
    if "@" in reference:
        repository, _, digest = reference.partition("@")
        return repository, digest
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, "latest"
