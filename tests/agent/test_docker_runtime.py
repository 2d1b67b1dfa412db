"""The Docker runtime against the real engine: configuration reaches the container, streams
work, stop honours the grace period, air-gap archives load once, the sandbox image is made on
the node. Every container made here carries a unique node label and is removed afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from k3py.cluster.agent.agent import with_runtime_retries
from k3py.cluster.agent.errors import ImageError, RuntimeUnavailable
from k3py.cluster.agent.images.airgap import ensure_sandbox_image, load_airgap_images
from k3py.cluster.agent.runtime import (
    ContainerConfig,
    ContainerEvent,
    LogOptions,
    Mount,
    PortMapping,
)
from k3py.cluster.agent.runtime.docker import DockerRuntime
from k3py.cluster.client.clock import RealClock
from tests.agent.cluster import docker, remove_node_containers, unique
from tests.agent.images import TEST_IMAGE, docker_tier, ensure_test_image
from tests.processes import free_port

pytestmark = docker_tier()


@pytest.fixture
async def runtime() -> AsyncIterator[tuple[DockerRuntime, str]]:
    ensure_test_image()
    node = unique("rt")
    docker_runtime = DockerRuntime()
    try:
        yield docker_runtime, node
    finally:
        await docker_runtime.close()
        remove_node_containers(node)


def _config(node: str, name: str, **fields: object) -> ContainerConfig:
    labels = {"io.k3py.managed": "true", "io.k3py.node": node, "io.kubernetes.pod.uid": "u"}
    return ContainerConfig(name=f"{node}-{name}", image=TEST_IMAGE, labels=labels, **fields)  # type: ignore[arg-type]


async def test_configuration_reaches_the_container(runtime: tuple[DockerRuntime, str]) -> None:
    rt, node = runtime
    # The container runs as nobody: the bound directory must be reachable for it.
    shared = Path(tempfile.mkdtemp(prefix="k3py-mount-"))
    shared.chmod(0o755)
    (shared / "data.txt").write_text("from the host")
    (shared / "data.txt").chmod(0o644)
    try:
        await _check_configuration(rt, node, shared)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


async def _check_configuration(rt: DockerRuntime, node: str, shared: Path) -> None:
    sandbox = await rt.create_container(
        _config(node, "sandbox", cmd=("sleep", "60"), hostname="mypod")
    )
    await rt.start_container(sandbox)
    app = await rt.create_container(
        _config(
            node,
            "app",
            entrypoint=("sleep",),
            cmd=("60",),
            env={"GREETING": "hello"},
            working_dir="/tmp",
            mounts=(Mount(str(shared), "/data", read_only=True),),
            network=f"container:{sandbox}",
            memory_limit=64 * 1024 * 1024,
            cpu_limit_millis=500,
            cpu_shares=256,
            user="65534",
            read_only_rootfs=True,
        )
    )
    await rt.start_container(app)
    inspected = json.loads(docker("inspect", app))[0]
    host = inspected["HostConfig"]
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["CpuShares"] == 256
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == f"container:{sandbox}"
    checks = {
        "cat /etc/hostname": b"mypod\n",
        "echo $GREETING": b"hello\n",
        "pwd": b"/tmp\n",
        "cat /data/data.txt": b"from the host",
        "id -u": b"65534\n",
    }
    for command, expected in checks.items():
        result = await rt.exec_sync(app, ["sh", "-c", command], 10)
        assert (result.exit_code, result.output) == (0, expected), command
    assert (await rt.exec_sync(app, ["sh", "-c", "touch /x"], 10)).exit_code != 0
    listed = await rt.list_containers({"io.k3py.node": node})
    assert {c.id for c in listed} == {sandbox, app}
    sandbox_info = next(c for c in listed if c.id == sandbox)
    assert sandbox_info.ip


async def test_host_ports_are_published_and_a_missing_image_says_so(
    runtime: tuple[DockerRuntime, str],
) -> None:
    rt, node = runtime
    port = free_port()
    sandbox = await rt.create_container(
        _config(node, "ports", cmd=("sleep", "60"), ports=(PortMapping(80, port, "tcp"),))
    )
    await rt.start_container(sandbox)
    published = json.loads(docker("inspect", sandbox))[0]["NetworkSettings"]["Ports"]
    assert published["80/tcp"][0]["HostPort"] == str(port)
    with pytest.raises(ImageError, match="not present"):
        # An image this machine never built nor pulled.
        await rt.create_container(_config(node, "missing")._replace(image="k3py-test/absent:0"))


async def test_logs_exec_session_and_events(runtime: tuple[DockerRuntime, str]) -> None:
    rt, node = runtime
    events: list[ContainerEvent] = []

    async def listen() -> None:
        async for event in rt.events({"io.k3py.node": node}):
            events.append(event)

    listener = asyncio.create_task(listen())
    try:
        await asyncio.sleep(0.3)
        app = await rt.create_container(
            _config(
                node,
                "talker",
                entrypoint=("sh", "-c"),
                cmd=("for i in 1 2 3; do echo out $i; echo err $i >&2; done; sleep 60",),
            )
        )
        await rt.start_container(app)
        await asyncio.sleep(0.5)
        everything = b"".join([c async for c in rt.logs(app, LogOptions())])
        assert everything.count(b"out") == 3
        assert everything.count(b"err") == 3
        tail = b"".join([c async for c in rt.logs(app, LogOptions(tail=1, timestamps=True))])
        assert tail.count(b"\n") == 1
        assert tail.endswith((b"out 3\n", b"err 3\n"))
        assert tail[:2] == b"20"
        session = await rt.exec_session(app, ["sh"], tty=True, stdin=True)
        await session.resize(100, 30)
        await session.write(b"stty size; exit 4\n")
        output = b""
        while (chunk := await session.read()) is not None:
            output += chunk[1]
        assert b"30 100" in output
        assert await session.exit_code() == 4
        await session.close()
        await rt.stop_container(app, 1)
        await asyncio.sleep(0.5)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    actions = [e.action for e in events if e.container_id == app]
    assert "start" in actions
    assert "die" in actions


async def test_stop_sends_sigterm_then_kills_after_the_grace_period(
    runtime: tuple[DockerRuntime, str],
) -> None:
    rt, node = runtime
    polite = await rt.create_container(
        _config(
            node,
            "polite",
            entrypoint=("sh", "-c"),
            cmd=("trap 'exit 0' TERM; while true; do sleep 0.1; done",),
        )
    )
    stubborn = await rt.create_container(_config(node, "stubborn", cmd=("sleep", "60")))
    for container in (polite, stubborn):
        await rt.start_container(container)
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await rt.stop_container(polite, 10)
    assert time.monotonic() - started < 3
    info = await rt.inspect_container(polite)
    assert info is not None
    assert info.exit_code == 0
    started = time.monotonic()
    await rt.stop_container(stubborn, 2)
    assert 1.5 < time.monotonic() - started < 6
    info = await rt.inspect_container(stubborn)
    assert info is not None
    assert info.exit_code == 137
    await rt.remove_container(stubborn)
    await rt.remove_container(stubborn)  # removing twice is fine
    assert await rt.inspect_container(stubborn) is None


def _airgap_archive(reference: str, directory: Path) -> None:
    """``directory/bundle.tar``: the test image saved as ``reference``, which the engine then
    no longer has."""
    directory.mkdir(exist_ok=True)
    docker("tag", TEST_IMAGE, reference)
    docker("save", "-o", str(directory / "bundle.tar"), reference)
    docker("rmi", reference)


async def test_airgap_archives_load_once_and_the_sandbox_image_is_made(
    runtime: tuple[DockerRuntime, str], tmp_path: Path
) -> None:
    rt, node = runtime
    reference = f"k3py-test/airgap:{node}"
    _airgap_archive(reference, tmp_path)
    try:
        assert await rt.image_id(reference) is None
        assert await load_airgap_images(rt, tmp_path) == [reference]
        assert await rt.image_id(reference) is not None
        assert await load_airgap_images(rt, tmp_path) == []  # remembered
        broken = tmp_path / "broken" / "broken.tar"
        broken.parent.mkdir()
        broken.write_bytes(b"not a tar archive" * 100)
        with pytest.raises(ImageError, match="cannot load"):
            await rt.load_images(broken)
        pause = f"k3py-test/pause:{node}"
        image = await ensure_sandbox_image(rt, pause)
        assert image == await ensure_sandbox_image(rt, pause)
        sandbox = await rt.create_container(
            ContainerConfig(name=f"{node}-pause", image=pause, labels={"io.k3py.node": node})
        )
        await rt.start_container(sandbox)
        await asyncio.sleep(0.3)
        info = await rt.inspect_container(sandbox)
        assert info is not None
        assert info.status == "running"
        await rt.remove_container(sandbox)
        docker("rmi", pause)
    finally:
        docker("rmi", "-f", reference, check=False)


async def _resetting_proxy(path: Path, engine: str, resets: list[int]) -> asyncio.AbstractServer:
    """A socket in front of the engine that resets a connection once the upload has begun
    (as an engine still settling at boot did) while ``resets[0]`` says so, and forwards the
    others."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if resets[0] > 0:
            resets[0] -= 1
            await reader.read(65536)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_unix_connection(engine)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_unix_server(handle, str(path))


async def test_an_upload_reset_by_the_engine_is_sent_again_at_start(
    runtime: tuple[DockerRuntime, str], tmp_path: Path
) -> None:
    _, node = runtime
    reference = f"k3py-test/airgap-reset:{node}"
    images = tmp_path / "images"
    _airgap_archive(reference, images)
    resets = [1]
    proxy = await _resetting_proxy(tmp_path / "engine.sock", "/var/run/docker.sock", resets)
    flaky = DockerRuntime(f"unix://{tmp_path / 'engine.sock'}")
    try:
        with pytest.raises(RuntimeUnavailable, match="POST /images/load"):
            await load_airgap_images(flaky, images)
        assert await flaky.image_id(reference) is None
        resets[0] = 1
        await with_runtime_retries(
            "air-gap images", lambda: load_airgap_images(flaky, images), RealClock()
        )
        assert resets == [0]
        assert await flaky.image_id(reference) is not None
    finally:
        proxy.close()
        await flaky.close()
        docker("rmi", "-f", reference, check=False)


async def _recording_proxy(
    path: Path, engine: str, seen: list[str], strip_server: bool
) -> asyncio.AbstractServer:
    """A socket in front of the engine that notes each request line (the runtime sends one
    request per connection) and can hide the engine's ``Server`` header."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        seen.append(request.split(b"\r\n", 1)[0].decode())
        up_reader, up_writer = await asyncio.open_unix_connection(engine)
        up_writer.write(request)
        answer = await up_reader.read()
        if strip_server:
            head, _, body = answer.partition(b"\r\n\r\n")
            lines = [x for x in head.split(b"\r\n") if not x.lower().startswith(b"server:")]
            answer = b"\r\n".join(lines) + b"\r\n\r\n" + body
        writer.write(answer)
        await writer.drain()
        writer.close()
        up_writer.close()

    return await asyncio.start_unix_server(handle, str(path))


@pytest.mark.parametrize("strip_server", [False, True], ids=["ping", "no-server-header"])
async def test_the_node_reports_the_engines_version_from_its_ping(
    tmp_path: Path, strip_server: bool
) -> None:
    # /version makes dockerd start runc and docker-init to describe them; a node reports
    # its runtime's version every status update, so it asks the ping, which names the engine.
    engine = docker("version", "--format", "{{.Server.Version}}").strip()
    seen: list[str] = []
    proxy = await _recording_proxy(
        tmp_path / "engine.sock", "/var/run/docker.sock", seen, strip_server
    )
    rt = DockerRuntime(f"unix://{tmp_path / 'engine.sock'}")
    try:
        assert await rt.version() == f"docker://{engine}"
    finally:
        proxy.close()
        await rt.close()
    paths = [line.split(" ")[1] for line in seen]
    assert paths == (["/_ping", "/version"] if strip_server else ["/_ping"])
