"""OTA rollout benchmark: an UpdatePlan over 100 hollow agents with ``maxUnavailable: 10``.

A server (no agent of its own) and 100 hollow nodes served from this process
(:mod:`tests.controllers.hollow`: Node objects and Lease renewals through the API). Each node's
agent is the real updater (:class:`k3py.cluster.ota.agent.Updater`) polling the plans as an
agent does: when its entry says ``Downloading`` it downloads the pushed firmware bundle over
HTTPS into ``<name>.partial`` (resumable with ``Range``), verifies signature, rules and hashes,
installs the wheel into its own firmware directory (on tmpfs, 100 copies, without the bytecode
a board compiles for itself: 100 boards' compiling would not fit these 2 cores) and reports
each phase in the plan. The launcher's restart is the one part simulated: the node pauses
:data:`RESTART_S` (the firmware downtime ``bench/ota_firmware_bench.py`` measures with a real
agent) and a fresh updater on the new version reports ``Healthy`` as a restarted agent does.

Measured: the plan's creation to ``Complete``; the most nodes in flight in any observed status
(polled every 0.2 s; the plan's limit is 10); each node's time from ``Downloading`` to
``Healthy``; the server's CPU; the load average (the machine is shared: figures are noisy).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from k3py.cluster.client import KubeClient
from k3py.cluster.client.kubeconfig import read_kubeconfig
from k3py.cluster.ota.agent import UPDATE_PLANS, Updater
from k3py.cluster.ota.bundle import Running
from k3py.cluster.ota.firmware import Firmware
from k3py.cluster.ota.rollout import IN_FLIGHT
from k3py.image import firmware as wheels
from k3py.image.ota import bundler
from tests.controllers.hollow import HollowNodes
from tests.controllers.serverproc import ServerProcess
from tests.ota.test_rollout_processes import relabel

NODES, MAX_UNAVAILABLE = 100, 10
POLL_S = 2.0  # as an agent's updater polls (k3py.cluster.ota.agent.POLL_SECONDS)
RESTART_S = 1.0  # the launcher's restart into the new firmware (median 0.93 s measured)
CACHE = Path(os.environ.get("K3PY_CACHE_DIR", "/var/cache/k3py/packages"))
Object = dict[str, Any]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _hollow_agent(
    name: str, client: KubeClient, session: aiohttp.ClientSession, root: Path, key: Path
) -> None:
    """One node's updater until it installed the bundle, then its restart on the new one."""
    firmware = Firmware(root / name, compile_bytecode=False)  # 100 nodes, one machine
    old = Updater(client, session, name, firmware, Running("0.1.0", "arm64", "hollow"),
                  key_path=key, restart=lambda: None)  # fmt: skip
    installed = False
    while not installed:  # polling the plans, as an agent's updater does
        installed = await old.once()
        await asyncio.sleep(0 if installed else POLL_S)
    await asyncio.sleep(RESTART_S)
    new = Updater(client, session, name, firmware, Running("0.2.0", "arm64", "hollow"),
                  key_path=key, restart=lambda: None)  # fmt: skip
    await new.report_startup()
    shutil.rmtree(firmware.root, ignore_errors=True)  # 100 copies on tmpfs: keep memory flat


async def _rollout(work: Path, nodes: int, max_unavailable: int) -> dict[str, Any]:
    assert UPDATE_PLANS is not None
    wheel = wheels.firmware_wheel(None, CACHE).path
    bundler.keygen(work / "k.pem", work / "k.pub")
    bundle = work / "firmware-0.2.0.k3pyb"
    bundler.firmware_bundle(bundle, bundler.load_private_key(work / "k.pem"),
                            relabel(wheel, "0.2.0", work), boards=[],
                            minimum_version=None)  # fmt: skip
    server = ServerProcess(work, "--disable-agent")
    await server.start()
    assert server.process is not None
    pid = server.process.pid
    creds = read_kubeconfig(server.kubeconfig, None)
    client = KubeClient(creds.server_url, ssl_context=creds.ssl_context, token=creds.token)
    headers = {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
    session = aiohttp.ClientSession(creds.server_url, headers=headers,
                                    connector=aiohttp.TCPConnector(ssl=creds.ssl_context or False,
                                                                   limit=32))  # fmt: skip
    hollow = HollowNodes(client, renew_interval=10.0, concurrency=32)
    firmware_root = Path(tempfile.mkdtemp(prefix="k3py-ota-rollout-", dir="/dev/shm"))
    names = [f"hollow-{i:03d}" for i in range(nodes)]
    agents: list[asyncio.Task[None]] = []
    try:
        await hollow.start(kubelets=2)
        await hollow.add(names, labels={"ring": "bench"})
        async with session.put(f"/ota/v1/bundles/{bundle.name}", data=bundle.read_bytes()) as put:
            assert put.status == 201, await put.text()
        agents = [asyncio.create_task(_hollow_agent(n, client, session, firmware_root,
                                                    work / "k.pub")) for n in names]  # fmt: skip
        await asyncio.sleep(1.0)  # the agents' first poll: nothing to do yet
        load_before = os.getloadavg()
        cpu_before = _cpu_seconds(pid)
        plan = {"apiVersion": "ota.k3py.io/v1", "kind": "UpdatePlan",
                "metadata": {"name": "bench"},
                "spec": {"version": "0.2.0", "nodeSelector": {"ring": "bench"},
                         "maxUnavailable": max_unavailable}}  # fmt: skip
        started = time.monotonic()
        await client.create(UPDATE_PLANS, plan)
        most, phase = 0, ""
        entered: dict[str, float] = {}
        healthy: dict[str, float] = {}
        while phase not in ("Complete", "Halted"):
            if time.monotonic() - started > 900:
                raise TimeoutError(f"the rollout did not end within 900 s ({phase})")
            await asyncio.sleep(0.2)
            status = (await client.get(UPDATE_PLANS, "bench")).get("status") or {}
            phase = str(status.get("phase", ""))
            now = time.monotonic() - started
            entries = [e for e in status.get("nodes") or [] if isinstance(e, dict)]
            most = max(most, sum(e.get("phase") in IN_FLIGHT for e in entries))
            for entry in entries:
                if entry.get("phase") != "Pending":
                    entered.setdefault(entry["name"], now)
                if entry.get("phase") == "Healthy":
                    healthy.setdefault(entry["name"], now)
        rollout_s = time.monotonic() - started
        cpu = _cpu_seconds(pid) - cpu_before
        load_after = os.getloadavg()
        await asyncio.wait_for(asyncio.gather(*agents), 30)
        per_node = sorted(healthy[n] - entered[n] for n in healthy if n in entered)
    finally:
        for task in agents:
            task.cancel()
        await asyncio.gather(*agents, return_exceptions=True)
        await hollow.stop()
        await session.close()
        await client.close()
        await server.stop()
        shutil.rmtree(firmware_root, ignore_errors=True)
    return {
        "nodes": nodes,
        "max_unavailable": max_unavailable,
        "phase": phase,
        "bundle_bytes": bundle.stat().st_size,
        "rollout_s": round(rollout_s, 1),
        "most_in_flight_observed": most,
        "node_update_s": {
            "p50": round(statistics.median(per_node), 2),
            "p95": round(per_node[int(0.95 * (len(per_node) - 1))], 2),
            "max": round(per_node[-1], 2),
        },
        "server_cpu_s": round(cpu, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "simulated_restart_s": RESTART_S,
    }


def run(*, quick: bool = False) -> dict[str, Any]:
    nodes, unavailable = (20, 5) if quick else (NODES, MAX_UNAVAILABLE)
    with tempfile.TemporaryDirectory(prefix="k3py-ota-rollout-") as tmp:
        result = asyncio.run(_rollout(Path(tmp), nodes, unavailable))
    key = f"rollout_s_{nodes}_nodes_max_unavailable_{unavailable}"
    return {
        "benchmark": "ota_rollout",
        "quick": quick,
        **result,
        "summary": {
            key: result["rollout_s"],
            "node_update_p50_s": result["node_update_s"]["p50"],
            "most_in_flight_observed": result["most_in_flight_observed"],
            "load_average_1m_before": result["load_average_before"][0],
            "load_average_1m_after": result["load_average_after"][0],
        },
        "budget": {
            "most_in_flight_observed": {
                "budget": unavailable,
                "met": result["most_in_flight_observed"] <= unavailable,
            }
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
