"""The agent's updater against a real (in-process) server: it takes the firmware a plan names
when its entry says Downloading, reports each phase, and closes the entry after the restart."""

from __future__ import annotations

import json
from pathlib import Path

from k3py.cluster.client import KubeClient
from k3py.cluster.ota.agent import UPDATE_PLANS, Updater
from k3py.cluster.ota.bundle import Running
from k3py.cluster.ota.firmware import Firmware
from k3py.image.ota import bundler
from tests.ota.test_distribution import _session
from tests.ota.test_firmware_update import _wheel
from tests.server.conftest import Api

OLD = Running("0.1.0", "arm64", "qemu-virt-arm64")


async def _plan(api: Api, name: str, version: str, phase: str) -> None:
    body = {"apiVersion": "ota.k3py.io/v1", "kind": "UpdatePlan", "metadata": {"name": name},
            "spec": {"version": version}}  # fmt: skip
    created = await api.post("/apis/ota.k3py.io/v1/updateplans", body)
    assert created.status == 201, created.body
    obj = created.body
    obj["status"] = {"phase": "Progressing", "nodes": [{"name": "node1", "phase": phase}]}
    path = f"/apis/ota.k3py.io/v1/updateplans/{name}/status"
    assert (await api.put(path, obj)).status == 200


async def _entry(client: KubeClient, name: str) -> dict[str, str]:
    assert UPDATE_PLANS is not None
    plan = await client.get(UPDATE_PLANS, name)
    (entry,) = plan["status"]["nodes"]
    return {k: str(v) for k, v in entry.items()}


async def _push(api: Api, tmp_path: Path, key: Path, version: str) -> None:
    out = tmp_path / f"firmware-{version}.k3pyb"
    wheel = _wheel(tmp_path, version, "good")
    bundler.firmware_bundle(out, bundler.load_private_key(key), wheel, boards=[],
                            minimum_version=None)  # fmt: skip
    put = await api.put(f"/ota/v1/bundles/firmware-{version}.k3pyb", data=out.read_bytes())
    assert put.status == 201


async def test_a_node_updates_reports_and_closes_its_entry(api: Api, tmp_path: Path) -> None:
    bundler.keygen(tmp_path / "k.pem", tmp_path / "k.pub")
    (tmp_path / "o").mkdir()
    bundler.keygen(tmp_path / "o/k.pem", tmp_path / "o/k.pub")
    await _push(api, tmp_path, tmp_path / "k.pem", "0.2.0")
    await _push(api, tmp_path, tmp_path / "o/k.pem", "0.3.0")  # signed with another key
    await _plan(api, "fw-good", "0.2.0", "Downloading")
    await _plan(api, "fw-foreign", "0.3.0", "Downloading")
    firmware = Firmware(tmp_path / "firmware")
    restarts: list[int] = []
    url = str(api.client.make_url("/")).rstrip("/")
    async with (
        KubeClient(url, ssl_context=None, token="node1") as client,
        _session(api, "node1") as session,
    ):
        updater = Updater(client, session, "node1", firmware, OLD, key_path=tmp_path / "k.pub",
                          restart=lambda: restarts.append(1))  # fmt: skip
        assert await updater.once()
        foreign = await _entry(client, "fw-foreign")
        assert foreign["phase"] == "Failed"
        assert "signed with another key" in foreign["message"]
        good = await _entry(client, "fw-good")
        assert good["phase"] == "Rebooting"
        assert restarts == [1]
        assert firmware.version_of(firmware.current) == "0.2.0"
        # The new version starts: its updater closes the entry.
        new = Running("0.2.0", "arm64", "qemu-virt-arm64")
        after = Updater(client, session, "node1", firmware, new, key_path=tmp_path / "k.pub",
                        restart=lambda: None)  # fmt: skip
        await after.report_startup()
        assert (await _entry(client, "fw-good"))["phase"] == "Healthy"
        # A version that never came up: the launcher brought the old one back with a reason.
        await _plan(api, "fw-crashed", "0.4.0", "Rebooting")
        note = {"version": "0.4.0-x", "reason": "crashed 3 times"}
        (Path(firmware.root) / "rolled-back.json").write_text(json.dumps(note))
        await after.report_startup()
        crashed = await _entry(client, "fw-crashed")
        assert crashed["phase"] == "RolledBack"
        assert crashed["message"] == "rolled back: crashed 3 times"


async def test_ten_nodes_reporting_at_once_all_land(api: Api, tmp_path: Path) -> None:
    """A batch of maxUnavailable 10 reports together: each node patches only its own entry."""
    import asyncio

    body = {"apiVersion": "ota.k3py.io/v1", "kind": "UpdatePlan", "metadata": {"name": "wide"},
            "spec": {"version": "0.2.0"}}  # fmt: skip
    created = (await api.post("/apis/ota.k3py.io/v1/updateplans", body)).body
    nodes = [f"n{i}" for i in range(10)]
    created["status"] = {"nodes": [{"name": n, "phase": "Downloading"} for n in nodes]}
    assert (await api.put("/apis/ota.k3py.io/v1/updateplans/wide/status", created)).status == 200
    url = str(api.client.make_url("/")).rstrip("/")
    async with (
        KubeClient(url, ssl_context=None, token="admin") as client,
        _session(api, "admin") as session,
    ):
        updaters = [Updater(client, session, n, Firmware(tmp_path / n), OLD,
                            key_path=tmp_path / "k.pub", restart=lambda: None)
                    for n in nodes]  # fmt: skip
        for phase in ("Verifying", "Installing"):
            await asyncio.gather(*(u._set("wide", phase) for u in updaters))
            assert UPDATE_PLANS is not None
            plan = await client.get(UPDATE_PLANS, "wide")
            assert [e["phase"] for e in plan["status"]["nodes"]] == [phase] * 10


async def test_a_node_writes_only_its_own_entry_of_a_plans_status(api: Api) -> None:
    await _plan(api, "own", "0.2.0", "Downloading")
    path = "/apis/ota.k3py.io/v1/updateplans/own/status"
    plan = (await api.get(path)).body
    mine = {"name": "node1", "phase": "Verifying"}
    forged = [
        {**plan, "status": {**plan["status"], "phase": "Complete"}},  # the plan's own field
        {
            **plan,
            "status": {**plan["status"], "nodes": [mine, {"name": "node2", "phase": "Failed"}]},
        },
    ]
    for body in forged:
        refused = await api.put(path, body, token="node1")
        assert refused.status == 403, refused.body
        assert "its own entry" in refused.body["message"]
    patch = [
        {"op": "add", "path": "/status/nodes/-", "value": {"name": "node2", "phase": "Healthy"}}
    ]
    assert (await api.patch(path, patch, kind="json", token="node1")).status == 403
    ok = await api.put(path, {**plan, "status": {**plan["status"], "nodes": [mine]}}, token="node1")
    assert ok.status == 200, ok.body
    assert ok.body["status"]["nodes"] == [mine]
