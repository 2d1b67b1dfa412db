"""A firmware rollout end to end: a server, five agents (fake runtime) each under the firmware
launcher, a signed bundle pushed, an UpdatePlan applied with kubectl semantics (the API).

Every agent runs this tree's wheel from its own firmware directory; the bundle carries the same
code relabelled 0.2.0. The plan (maxUnavailable 1) must never have two nodes in flight in any
state of its status (every one, watched), and end with every node Healthy on 0.2.0. Then a
bundle whose k3py exits at start (0.3.0): its first node crashes three times, the launcher
brings 0.2.0 back, the agent reports RolledBack and the plan halts at its failure threshold
with the other nodes untouched.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3py.cluster.client import KubeClient
from k3py.cluster.ota.agent import UPDATE_PLANS
from k3py.cluster.ota.firmware import Firmware
from k3py.cluster.ota.rollout import IN_FLIGHT
from k3py.image import firmware as wheels
from k3py.image.ota import bundler
from tests.processes import free_port, server_argv, stop_process

pytestmark = pytest.mark.integration
AGENTS = 5
CACHE = Path(os.environ.get("K3PY_CACHE_DIR", "/var/cache/k3py/packages"))


def relabel(wheel: Path, version: str, out_dir: Path, *, broken: bool = False) -> Path:
    """The same wheel under another version (and, broken, a k3py that exits at start)."""
    old = re.fullmatch(r"k3py-([^-]+)-.*", wheel.stem)
    assert old is not None
    target = out_dir / wheel.name.replace(old.group(1), version)
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            name = item.filename.replace(f"k3py-{old.group(1)}.dist-info",
                                         f"k3py-{version}.dist-info")  # fmt: skip
            if name.endswith(".dist-info/METADATA"):
                data = data.replace(
                    f"Version: {old.group(1)}".encode(), f"Version: {version}".encode()
                )
            if broken and name == "k3py/__main__.py":
                data = b"raise SystemExit('this firmware cannot start')\n"
            out.writestr(name, data)
    return target


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Path, int, list[Firmware], Path]]:
    wheel = wheels.firmware_wheel(None, CACHE).path
    bundler.keygen(tmp_path / "k.pem", tmp_path / "k.pub")
    processes: list[subprocess.Popen[bytes]] = []
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    logs = [(tmp_path / "server.log").open("wb")]
    argv = server_argv(tmp_path / "server", kubeconfig, port, "--disable-agent")
    processes.append(subprocess.Popen(argv, stdout=logs[0], stderr=logs[0]))
    token = tmp_path / "server" / "server" / "token"
    firmwares = []
    try:
        deadline = time.monotonic() + 60
        while not (kubeconfig.exists() and token.exists()):
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        base = relabel(wheel, "0.1.0", tmp_path)
        for number in range(AGENTS):
            firmware = Firmware(tmp_path / f"fw{number}")
            firmware.install(base, "0.1.0")
            firmwares.append(firmware)
            env = {**os.environ, "K3PY_FIRMWARE_DIR": str(firmware.root),
                   "K3PY_OTA_KEY": str(tmp_path / "k.pub")}  # fmt: skip
            argv = [sys.executable, "-m", "k3py.cluster.ota.launcher", "agent",
                    "--flannel-backend", "none", "--server", f"https://127.0.0.1:{port}",
                    "--token-file", str(token), "--data-dir", str(tmp_path / f"agent{number}"),
                    "--node-name", f"ota-{number}", "--runtime", "fake",
                    "--node-label", "ring=field"]  # fmt: skip
            agent_log = (tmp_path / f"agent{number}.log").open("wb")
            logs.append(agent_log)
            processes.append(subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=agent_log,
                                              stderr=agent_log))  # fmt: skip
        deadline = time.monotonic() + 120
        while any(f.trial() is not None for f in firmwares):
            assert time.monotonic() < deadline, "the agents did not all report READY=1"
            time.sleep(0.2)
        yield tmp_path, port, firmwares, wheel
    finally:
        for process in reversed(processes):
            stop_process(process)
        for log in logs:
            log.close()


async def _push(kubeconfig: Path, path: Path) -> None:
    """As ``k3py ota push`` does, with the admin kubeconfig."""
    from k3py.cli import main

    assert (
        await asyncio.to_thread(main, ["ota", "push", str(path), "--kubeconfig", str(kubeconfig)])
        == 0
    )


async def _follow(
    client: KubeClient, name: str, until: set[str], seconds: float, resource_version: str
) -> tuple[dict[str, str], int, str]:
    """Every state of the plan's status, watched from ``resource_version`` (read before the
    plan was created): its last node phases, the most nodes ever in flight, its phase."""
    assert UPDATE_PLANS is not None
    most = 0

    async def watch() -> tuple[dict[str, str], str]:
        nonlocal most
        stream = client.watch(UPDATE_PLANS, resource_version=resource_version,
                              timeout_seconds=int(seconds))  # fmt: skip
        async for kind, plan in stream:
            if kind == "BOOKMARK" or plan["metadata"]["name"] != name:
                continue
            status = plan.get("status") or {}
            phases = {e["name"]: e["phase"] for e in status.get("nodes") or []}
            most = max(most, sum(p in IN_FLIGHT for p in phases.values()))
            if status.get("phase") in until and phases:
                return phases, str(status.get("phase"))
        raise AssertionError(f"plan {name} did not reach {until} within {seconds} s")

    phases, phase = await asyncio.wait_for(watch(), seconds + 10)
    return phases, most, phase


async def test_a_rollout_over_five_agents_and_a_bad_bundle_that_halts(
    rig: tuple[Path, int, list[Firmware], Path],
) -> None:
    root, port, firmwares, wheel = rig
    key = bundler.load_private_key(root / "k.pem")
    good = root / "good.k3pyb"
    bundler.firmware_bundle(good, key, relabel(wheel, "0.2.0", root), boards=[],
                            minimum_version=None)  # fmt: skip
    bad = root / "bad.k3pyb"
    bundler.firmware_bundle(bad, key, relabel(wheel, "0.3.0", root, broken=True), boards=[],
                            minimum_version=None)  # fmt: skip
    assert UPDATE_PLANS is not None
    async with KubeClient.from_kubeconfig(root / "kubeconfig") as client:
        await _push(root / "kubeconfig", good)
        await _push(root / "kubeconfig", bad)
        spec: dict[str, object] = {"version": "0.2.0", "nodeSelector": {"ring": "field"},
                                   "maxUnavailable": 1}  # fmt: skip
        plan = {"apiVersion": "ota.k3py.io/v1", "kind": "UpdatePlan",
                "metadata": {"name": "to-0-2-0"}, "spec": spec}  # fmt: skip
        _, version = await client.list(UPDATE_PLANS)
        started = time.monotonic()
        await client.create(UPDATE_PLANS, plan)
        phases, most, phase = await _follow(client, "to-0-2-0", {"Complete", "Halted"}, 240,
                                            version)  # fmt: skip
        rollout_s = time.monotonic() - started
        assert phase == "Complete", phases
        assert most == 1
        assert set(phases.values()) == {"Healthy"}
        assert {f.version_of(f.current) for f in firmwares} == {"0.2.0"}
        plan = {**plan, "metadata": {"name": "to-0-3-0"}, "spec": {**spec, "version": "0.3.0"}}
        _, version = await client.list(UPDATE_PLANS)
        await client.create(UPDATE_PLANS, plan)
        phases, most, phase = await _follow(client, "to-0-3-0", {"Halted"}, 120, version)
        assert most <= 1
        assert sorted(phases.values()).count("RolledBack") == 1
        assert sorted(phases.values()).count("Pending") == AGENTS - 1
        assert {f.version_of(f.current) for f in firmwares} == {"0.2.0"}
    print(f"rollout of 5 agents, maxUnavailable 1: {rollout_s:.1f} s")
