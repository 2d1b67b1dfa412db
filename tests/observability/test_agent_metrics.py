"""The agent's metrics, usage summaries and /healthz, with the in-package fake runtime."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from k3py.cluster.agent.metrics.bundle import AgentObservability
from k3py.cluster.agent.metrics.healthz import HealthServer
from k3py.cluster.agent.node.machine import Machine
from k3py.cluster.agent.node.registration import NodeReporter, NodeSpec
from k3py.cluster.agent.runtime import (
    LABEL_ATTEMPT,
    LABEL_CONTAINER_NAME,
    LABEL_KIND,
    LABEL_NODE,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    ContainerConfig,
)
from k3py.cluster.agent.runtime.fake import FakeRuntime
from k3py.cluster.api.resources import by_kind
from k3py.cluster.client.clock import FakeClock
from k3py.cluster.client.events import EventRecorder
from k3py.cluster.client.fake import FakeApi

NODE = "node-a"
IMAGE = "busybox:test"
EVENTS = by_kind("v1", "Event")


def _observability(tmp_path: Path, clock: FakeClock) -> tuple[AgentObservability, FakeRuntime]:
    fake = FakeRuntime(clock, {IMAGE: "sha256:1"})
    bundle = AgentObservability(
        fake,
        NODE,
        tmp_path,
        clock,
        usage_interval=15.0,
        healthz_address="127.0.0.1",
        healthz_port=0,
    )
    return bundle, fake


async def _run(bundle: AgentObservability, pod: str, name: str, attempt: int = 0) -> str:
    labels = {
        LABEL_NODE: NODE,
        LABEL_POD_NAMESPACE: "default",
        LABEL_POD_NAME: pod,
        LABEL_CONTAINER_NAME: name,
        LABEL_KIND: "app",
        LABEL_ATTEMPT: str(attempt),
    }
    container = await bundle.runtime.create_container(
        ContainerConfig(name=f"{pod}-{name}-{attempt}", image=IMAGE, labels=labels)
    )
    await bundle.runtime.start_container(container)
    return container


def _families(text: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


async def test_usage_is_the_rate_between_samples(tmp_path: Path) -> None:
    clock = FakeClock()
    bundle, fake = _observability(tmp_path, clock)
    busy = await _run(bundle, "busy", "spin")
    idle = await _run(bundle, "idle", "sleep")
    fake.stats[busy] = (0, 8 << 20)
    fake.stats[idle] = (0, 1 << 20)
    await clock.advance(1.0)
    await bundle.sampler.sample()
    fake.stats[busy] = (15 * 10**9, 9 << 20)  # a whole core for 15 s
    fake.stats[idle] = (1_000_000, 1 << 20)
    await clock.advance(15.0)
    await bundle.sampler.sample()
    summary = json.loads(bundle.sampler.summary())
    by_pod = {p["name"]: p["containers"][0] for p in summary["pods"]}
    assert by_pod["busy"]["name"] == "spin"
    assert abs(by_pod["busy"]["cpu"] - 1e9) < 1e6
    assert by_pod["busy"]["memory"] == 9 << 20
    assert by_pod["idle"]["cpu"] < 1e6


async def test_exposition_parses_and_counts_runtime_calls(tmp_path: Path) -> None:
    bundle, _ = _observability(tmp_path, FakeClock())
    await _run(bundle, "web", "nginx")
    await _run(bundle, "web", "nginx", attempt=1)
    bundle.watch(
        lambda: {"a": {"status": {"phase": "Running"}}, "b": {"status": {"phase": "Pending"}}},
        lambda: (True, 3),
        {},
    )
    samples = _families(bundle.metrics.exposition())
    assert ({"container_type": "container"}, 2.0) in samples["kubelet_started_containers_total"]
    assert samples["k3py_agent_container_restarts_total"] == [({}, 1.0)]
    total = samples["kubelet_runtime_operations_total"]
    ops = {labels["operation_type"]: value for labels, value in total}
    assert (ops["create_container"], ops["start_container"]) == (2, 2)
    assert ({"phase": "Running"}, 1.0) in samples["k3py_agent_pods"]
    assert samples["kubelet_running_pods"] == [({}, 1.0)]
    assert samples["k3py_agent_tunnel_connected"] == [({}, 1.0)]
    assert samples["k3py_agent_tunnel_connections_total"] == [({}, 3.0)]
    assert samples["node_memory_MemTotal_bytes"][0][1] > 0
    assert any(labels["mode"] == "idle" for labels, _ in samples["node_cpu_seconds_total"])


async def _http(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    answer = (await reader.read()).decode()
    writer.close()
    head, _, body = answer.partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_healthz_answers_on_a_local_port() -> None:
    failing: dict[str, str | None] = {"syncloop": None}
    server = HealthServer(
        "127.0.0.1", 0, {"ping": lambda: None, "syncloop": lambda: failing["syncloop"]}
    )
    await server.start()
    try:
        assert await _http(server.port, "/healthz") == (200, "ok")
        code, body = await _http(server.port, "/healthz?verbose")
        assert (code, body.splitlines()) == (
            200,
            ["[+]ping ok", "[+]syncloop ok", "healthz check passed"],
        )
        failing["syncloop"] = "stopped: agent-node"
        code, body = await _http(server.port, "/healthz")
        assert code == 500
        assert "[-]syncloop failed: stopped: agent-node" in body
        assert (await _http(server.port, "/other"))[0] == 404
    finally:
        await server.close()


async def _events(api: Any) -> list[tuple[str, str]]:
    assert EVENTS is not None
    items, _ = await api.list(EVENTS, "default")
    return [(e["reason"], e["message"]) for e in items]


def _reporter(api: Any, clock: FakeClock, tmp_path: Path, boot_id: str, version: Any) -> Any:
    machine = Machine(2, 1 << 30, 1 << 34, 110, "machine", boot_id, "6.1", "Debian", "arm64")
    spec = NodeSpec(NODE, ("192.0.2.10",), NODE, (), (), tmp_path)
    recorder = EventRecorder(api, clock, "kubelet", NODE)
    return NodeReporter(api, clock, spec, machine, version, recorder=recorder), recorder


async def test_node_life_events_as_the_kubelet_emits_them(tmp_path: Path) -> None:
    clock = FakeClock()
    api = FakeApi(clock)
    runtime_up = {"up": True}

    async def version() -> str:
        if not runtime_up["up"]:
            raise RuntimeError("docker is down")
        return "docker://20.10"

    reporter, recorder = _reporter(api, clock, tmp_path, "boot-1", version)
    await reporter.register()
    await recorder.flush()
    reasons = {reason for reason, _ in await _events(api)}
    assert reasons == {
        "Starting",
        "NodeHasSufficientMemory",
        "NodeHasNoDiskPressure",
        "NodeHasSufficientPID",
        "NodeReady",
    }

    runtime_up["up"] = False
    await reporter.report_status()
    await recorder.flush()
    assert ("NodeNotReady", f"Node {NODE} status is now: NodeNotReady") in await _events(api)

    again, recorder = _reporter(api, clock, tmp_path, "boot-2", version)
    await again.register()
    await recorder.flush()
    assert ("Rebooted", f"Node {NODE} has been rebooted, boot id: boot-2") in await _events(api)
