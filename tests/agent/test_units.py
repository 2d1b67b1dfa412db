"""Hermetic pieces of the agent: container configuration from a pod spec, volumes on disk,
the local store, and the tunnel between the server's hub and the agent's client."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from k3py.cluster.agent.autonomy.store import LocalStore, references
from k3py.cluster.agent.podsync.spec import (
    ContainerConfigError,
    PodContext,
    container_config,
    expand,
    resolve_env,
)
from k3py.cluster.agent.podsync.volumes import DATA_LINK, PodVolumes, VolumeError
from k3py.cluster.agent.runtime import ContainerConfig
from k3py.cluster.agent.runtime.fake import FakeRuntime
from k3py.cluster.agent.runtime.pause import pause_binary
from k3py.cluster.agent.tunnel.client import TunnelClient
from k3py.cluster.agent.tunnel.streams import NodeStreams
from k3py.cluster.client import RealClock
from k3py.cluster.server.tunnel import TunnelHub
from tests.agent.fakes import IMAGE, NODE, Objects, make_pod

CTX = PodContext(node_name=NODE, pod_ip="10.42.0.7", host_ip="192.0.2.10", sandbox_id="abc")


def test_env_resolution_order_references_and_expansion() -> None:
    objects = Objects()
    objects.config_maps[("default", "cfg")] = {"data": {"LEVEL": "debug", "PORT": "8080"}}
    secret = base64.b64encode(b"hunter2").decode()
    objects.secrets[("default", "creds")] = {"data": {"password": secret}}
    pod = make_pod()
    pod["metadata"]["labels"] = {"tier": "web"}
    container: dict[str, Any] = {
        "name": "app",
        "image": IMAGE,
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "HOST", "value": "0.0.0.0"},
            {"name": "URL", "value": "http://$(HOST):$(CFG_PORT)/$(MISSING)"},
            {
                "name": "PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
            },
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
        "resources": {"limits": {"memory": "64Mi"}},
    }
    env = resolve_env(pod, container, objects, CTX)
    assert env["CFG_LEVEL"] == "debug"
    assert env["URL"] == "http://0.0.0.0:8080/$(MISSING)"
    assert env["PASSWORD"] == "hunter2"
    assert env["POD_IP"] == "10.42.0.7"
    assert env["TIER"] == "web"
    assert env["MEM"] == "64"
    assert expand("$$(HOST) $(HOST)", {"HOST": "h"}) == "$(HOST) h"


def test_missing_reference_is_a_config_error_unless_optional() -> None:
    pod = make_pod()
    missing = {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}
    with pytest.raises(ContainerConfigError, match='configmap "nope" not found'):
        resolve_env(pod, {"env": [missing]}, Objects(), CTX)
    optional = {
        **missing,
        "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}},
    }
    assert resolve_env(pod, {"env": [optional]}, Objects(), CTX) == {}


def test_container_config_maps_resources_security_and_command() -> None:
    pod = make_pod()
    pod["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 3000}
    container = {
        "name": "app",
        "image": IMAGE,
        "command": ["sh", "-c"],
        "args": ["echo $(GREETING)"],
        "env": [{"name": "GREETING", "value": "hi"}],
        "workingDir": "/srv",
        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
        "securityContext": {"readOnlyRootFilesystem": True, "privileged": True},
    }
    config = container_config(pod, container, "app", 2, objects=Objects(), ctx=CTX, mounts=())
    assert isinstance(config, ContainerConfig)
    assert config.entrypoint == ("sh", "-c")
    assert config.cmd == ("echo hi",)
    assert config.memory_limit == 128 * 1024 * 1024
    assert config.cpu_limit_millis == 500
    assert config.cpu_shares == 256
    assert config.user == "1000:3000"
    assert config.read_only_rootfs is True
    assert config.privileged is True
    assert config.network == "container:abc"
    assert config.working_dir == "/srv"
    assert config.labels["io.k3py.container.attempt"] == "2"
    assert config.name.endswith(f"_{pod['metadata']['uid']}_2")
    only_command = container_config(
        pod,
        {"name": "app", "image": IMAGE, "command": ["true"]},
        "app",
        0,
        objects=Objects(),
        ctx=CTX,
        mounts=(),
    )
    assert only_command.cmd == ()  # a command without args drops the image's CMD


def test_config_map_volume_swaps_atomically_and_follows_items(tmp_path: Path) -> None:
    objects = Objects()
    objects.config_maps[("default", "cfg")] = {"data": {"a": "1", "b": "2"}}
    volumes = PodVolumes(tmp_path)
    pod = make_pod(volumes=[{"name": "conf", "configMap": {"name": "cfg", "defaultMode": 0o600}}])
    paths = volumes.setup(pod, objects)
    conf = paths["conf"]
    assert (conf / "a").read_text() == "1"
    assert os.readlink(conf / "a") == f"{DATA_LINK}/a"
    assert oct((conf / "a").stat().st_mode & 0o777) == oct(0o600)
    first = os.readlink(conf / DATA_LINK)
    assert volumes.refresh(pod, objects) is False  # unchanged: nothing rewritten
    objects.config_maps[("default", "cfg")] = {"data": {"a": "10"}}
    assert volumes.refresh(pod, objects) is True
    assert os.readlink(conf / DATA_LINK) != first
    assert (conf / "a").read_text() == "10"
    assert not (conf / "b").exists()
    assert not (conf / first).exists()  # the old generation is gone

    with_items = make_pod(
        volumes=[
            {"name": "one", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "sub/x"}]}}
        ]
    )
    assert (volumes.setup(with_items, objects)["one"] / "sub" / "x").read_text() == "10"


def test_volume_errors_and_host_paths(tmp_path: Path) -> None:
    volumes = PodVolumes(tmp_path / "agent")
    with pytest.raises(VolumeError, match='secret "absent" not found'):
        volumes.setup(
            make_pod(volumes=[{"name": "s", "secret": {"secretName": "absent"}}]), Objects()
        )
    optional = make_pod(
        volumes=[{"name": "s", "secret": {"secretName": "absent", "optional": True}}]
    )
    assert volumes.setup(optional, Objects())["s"].is_dir()
    created = tmp_path / "host" / "made"
    pod = make_pod(
        volumes=[{"name": "h", "hostPath": {"path": str(created), "type": "DirectoryOrCreate"}}]
    )
    assert volumes.setup(pod, Objects())["h"] == created
    assert created.is_dir()
    with pytest.raises(VolumeError, match="not a file"):
        volumes.setup(
            make_pod(volumes=[{"name": "f", "hostPath": {"path": str(created), "type": "File"}}]),
            Objects(),
        )
    escape = {
        "name": "app",
        "volumeMounts": [{"name": "h", "mountPath": "/x", "subPath": "../etc"}],
    }
    with pytest.raises(VolumeError, match="relative path inside"):
        volumes.mounts(escape, {"h": created})


def test_local_store_keeps_pods_and_the_objects_they_use(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "cache")
    pod = make_pod(volumes=[{"name": "c", "configMap": {"name": "cfg"}}])
    pod["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "creds"}}]
    assert references(pod) == {("configmaps", "default", "cfg"), ("secrets", "default", "creds")}
    store.save_pod(pod)
    store.save_object(
        "secrets", {"metadata": {"name": "creds", "namespace": "default"}, "data": {}}
    )
    store.save_object("configmaps", {"metadata": {"name": "old", "namespace": "default"}})
    again = LocalStore(tmp_path / "cache")
    assert [p["metadata"]["uid"] for p in again.pods()] == [pod["metadata"]["uid"]]
    assert again.get_object("secrets", "default", "creds") is not None
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == oct(0o700)
    secret_file = tmp_path / "cache" / "secrets" / "default" / "creds.json"
    assert oct(secret_file.stat().st_mode & 0o777) == oct(0o600)
    again.prune_objects(references(pod))
    assert again.get_object("configmaps", "default", "old") is None
    assert again.get_object("secrets", "default", "creds") is not None
    again.delete_pod(pod["metadata"]["uid"])
    assert again.pods() == []


@pytest.mark.parametrize(
    ("machine", "magic"),
    [("x86_64", b"\x7fELF\x02"), ("aarch64", b"\x7fELF\x02"), ("armv7l", b"\x7fELF\x01")],
)
def test_pause_binary_is_a_tiny_static_elf(machine: str, magic: bytes) -> None:
    binary = pause_binary(machine)
    assert binary.startswith(magic)
    assert len(binary) < 200


async def test_tunnel_carries_logs_and_exec_between_hub_and_agent() -> None:
    runtime = FakeRuntime(images={IMAGE: "sha256:" + "a" * 64})
    labels = {
        "io.k3py.node": NODE,
        "io.kubernetes.pod.uid": "uid-1",
        "io.kubernetes.container.name": "app",
        "io.k3py.container.attempt": "0",
    }
    container = await runtime.create_container(
        ContainerConfig(name="c", image=IMAGE, labels=labels)
    )
    await runtime.start_container(container)
    runtime.containers[container].output = [b"one\n", b"two\n", b"three\n"]
    runtime.exec_handler = lambda info, command: 3
    hub = TunnelHub()

    async def connect(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await hub.serve(NODE, ws)
        return ws

    app = web.Application()
    app.router.add_get("/connect", connect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = TunnelClient(
        str(server.make_url("/connect")), None, NodeStreams(runtime, NODE, RealClock()), RealClock()
    )
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.connected.wait(), 5)
        for _ in range(50):
            if hub.get(NODE) is not None:
                break
            await asyncio.sleep(0.02)
        tunnel = hub.get(NODE)
        assert tunnel is not None
        params = {"namespace": "default", "pod": "web", "uid": "uid-1", "container": "app"}
        logs = await tunnel.open("logs", {**params, "tailLines": 2})
        assert b"".join([c.payload async for c in logs.output()]) == b"two\nthree\n"
        session = await tunnel.open("exec", {**params, "command": ["false"], "stdin": True})
        await session.stdin(b"ignored")
        output = b"".join([c.payload async for c in session.output()])
        assert output == b"false\n"
        assert session.exit_code == 3
        from k3py.cluster.api.status import ApiError

        with pytest.raises(ApiError, match="previous terminated container"):
            await tunnel.open("logs", {**params, "previous": True})
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hub.close()
        await server.close()
