"""Sandboxes wired and unwired through the pod network's own code, inside a host namespace.

``python -m tests.netns.churn --count N [--docker IMAGE] [--kill K]`` is run by tests and
benchmarks with ``ip netns exec`` in a namespace they created that has an address on ``eth0``.
It configures the pod network for one node (``host-gw``, pod CIDR ``10.42.7.0/24``), then for
each of ``N`` sandboxes — a process in a network namespace of its own (``unshare -n``), or with
``--docker`` a real container of ``IMAGE`` created with Docker's ``none`` network — starts it,
calls :meth:`FlannelNetwork.attach` and times how long until the address answers (a TCP
connection to a closed port is refused: the reset comes from the pod's own stack). Then it
detaches and removes all but ``K`` sandboxes normally; those ``K`` are killed without a detach,
as when the agent was away, and :meth:`FlannelNetwork.reconcile` must release them. It prints
one JSON object: the latencies, and how many addresses and veths are left (both must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

from k3py.cluster.agent.network.podnet import FlannelNetwork, NetworkConfig
from k3py.cluster.agent.runtime import LABEL_KIND, LABEL_NODE, ContainerInfo
from k3py.cluster.client import RealClock

NODE = "churn"
POD_CIDR = "10.42.7.0/24"


class Sandboxes:
    """Just enough of a runtime for the network: the sandboxes that exist."""

    def __init__(self) -> None:
        self.live: dict[str, ContainerInfo] = {}

    async def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return list(self.live.values())


def _eth0_address() -> str:
    text = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(text)[0]["addr_info"][0]["local"])


def _answers(address: str) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.05)
        code = sock.connect_ex((address, 9))
    return code in (0, errno.ECONNREFUSED)


def _wait_answer(address: str) -> None:
    while not _answers(address):
        time.sleep(0.001)


def _start(index: int, image: str) -> tuple[ContainerInfo, Any]:
    labels = {LABEL_NODE: NODE, LABEL_KIND: "sandbox"}
    if not image:
        process = subprocess.Popen(["unshare", "-n", "sleep", "600"])
        home = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{process.pid}/ns/net") == home:  # until it has unshared
            time.sleep(0.0005)
        sandbox_id = f"{index:04d}" + "c" * 60
        info = ContainerInfo(sandbox_id, f"s{index}", labels, "", "", "running", pid=process.pid)
        return info, process
    out = subprocess.run(
        ["docker", "run", "-d", "--network", "none", "--label", f"io.k3py.test={NODE}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", out],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return ContainerInfo(out, f"s{index}", labels, image, "", "running", pid=int(pid)), out


def _remove(handle: Any) -> None:
    if isinstance(handle, str):
        subprocess.run(["docker", "rm", "-f", handle], capture_output=True, check=False)
    else:
        handle.kill()
        handle.wait()


async def churn(count: int, image: str, kill: int, state_dir: Path | None = None) -> dict[str, Any]:
    runtime = Sandboxes()
    node_ip = _eth0_address()
    config = NetworkConfig(
        "host-gw", NODE, node_ip, "", "10.42.0.0/16", state_dir or Path(mkdtemp())
    )
    network = FlannelNetwork(config, None, runtime, RealClock(), node_ip)  # type: ignore[arg-type]
    await network.configure(POD_CIDR)
    pod: dict[str, Any] = {"spec": {}}
    handles: dict[str, Any] = {}
    latencies: list[float] = []
    attach_ms: list[float] = []
    addresses: set[str] = set()
    try:
        for index in range(count):
            sandbox, handle = _start(index, image)
            runtime.live[sandbox.id] = sandbox
            handles[sandbox.id] = handle
            started = time.monotonic()
            address = await network.attach(pod, sandbox)
            attach_ms.append((time.monotonic() - started) * 1000)
            _wait_answer(address)
            latencies.append((time.monotonic() - started) * 1000)
            addresses.add(address)
        if runtime.live:
            again = await network.attach(pod, next(iter(runtime.live.values())))
            assert again in addresses  # attach is idempotent
        doomed = list(runtime.live)[:kill]
        for sandbox_id in list(runtime.live):
            sandbox = runtime.live.pop(sandbox_id)
            if sandbox_id not in doomed:
                await network.detach(pod, sandbox)
            _remove(handles.pop(sandbox_id))
        left_before_reconcile = len(network.allocations())
        await network.reconcile()
        with_veths = await network.veths()
        return {
            "count": count,
            "distinct_addresses": len(addresses),
            "left_before_reconcile": left_before_reconcile,
            "addresses_left": len(network.allocations()),
            "veths_left": len(with_veths),
            "attach_ms": attach_ms,
            "answer_ms": latencies,
        }
    finally:
        for handle in handles.values():
            _remove(handle)
        await network.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--docker", default="", help="an image for real sandboxes")
    parser.add_argument("--kill", type=int, default=5)
    parser.add_argument("--state-dir", type=Path, default=None, help="the network's state")
    args = parser.parse_args()
    result = asyncio.run(churn(args.count, args.docker, args.kill, args.state_dir))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
