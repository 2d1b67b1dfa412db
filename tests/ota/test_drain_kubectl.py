"""An UpdatePlan with ``drain`` against a real server, followed and edited with the real kubectl.

Two hollow nodes (Node objects; the test plays their agents and kubelets) each run one pod of
``app=web``, which a PodDisruptionBudget keeps at one available pod at least. The plan drains
the first node (its pod evicted through the Eviction API), starts it, uncordons it once
Healthy; the second node's eviction is refused by the budget, so it stays Pending with the
budget's reason until a replacement pod runs elsewhere. ``kubectl get updateplans`` (and ``-o
wide``, one cell per started node), ``describe`` and ``edit`` are checked along the way.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.api.resources import by_kind
from k3py.cluster.client import KubeClient
from k3py.cluster.ota.agent import UPDATE_PLANS
from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration
Object = dict[str, Any]
NODES, PODS = by_kind("v1", "Node"), by_kind("v1", "Pod")
BUDGETS = by_kind("policy/v1", "PodDisruptionBudget")
TOLERATE = [{"key": f"node.kubernetes.io/{t}", "operator": "Exists", "effect": "NoExecute"}
            for t in ("not-ready", "unreachable")]  # fmt: skip
PLAN = """\
apiVersion: ota.k3py.io/v1
kind: UpdatePlan
metadata: {name: fw-drain}
spec:
  version: 0.2.0
  nodeSelector: {ring: drain}
  maxUnavailable: 1
  drain: true
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path, "--disable-agent")
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def _until(what: str, check: Callable[[], Any], seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        await asyncio.sleep(0.2)


async def _running_pod(client: KubeClient, name: str, node: str) -> None:
    """A pod bound to ``node``, reported Running and Ready as its kubelet would."""
    assert PODS is not None
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
           "spec": {"nodeName": node, "tolerations": TOLERATE,
                    "containers": [{"name": "web", "image": "web:1"}]}}  # fmt: skip
    created = await client.create(PODS, pod)
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    created["status"] = {"phase": "Running", "conditions": [ready]}
    await client.update(PODS, created, subresource="status")


async def _plan(client: KubeClient) -> tuple[Object, dict[str, Object]]:
    assert UPDATE_PLANS is not None
    plan = await client.get(UPDATE_PLANS, "fw-drain")
    return plan, {e["name"]: e for e in (plan.get("status") or {}).get("nodes") or []}


async def _report(client: KubeClient, node: str, phase: str) -> None:
    """What the node's agent writes once its update is done."""
    assert UPDATE_PLANS is not None
    plan, entries = await _plan(client)
    entries[node] = {"name": node, "phase": phase,
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    plan["status"]["nodes"] = [entries[n] for n in sorted(entries)]
    await client.update(UPDATE_PLANS, plan, subresource="status")


async def _evicted(client: KubeClient, name: str) -> bool:
    """Once the pod is being deleted, finish it as its kubelet would; whether it was."""
    assert PODS is not None
    pod = await client.get(PODS, name, "default")
    if not pod["metadata"].get("deletionTimestamp"):
        return False
    await client.delete(PODS, name, "default", grace_period_seconds=0)
    return True


async def _unschedulable(client: KubeClient, node: str) -> bool:
    assert NODES is not None
    return bool(((await client.get(NODES, node)).get("spec") or {}).get("unschedulable"))


async def test_drain_honours_the_disruption_budget_and_kubectl_follows(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert NODES is not None
    assert BUDGETS is not None
    assert PODS is not None
    async with KubeClient.from_kubeconfig(server.kubeconfig) as client:
        for name in ("d1", "d2"):
            await client.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": name, "labels": {"ring": "drain"}}})  # fmt: skip
        await client.create(BUDGETS, {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})  # fmt: skip
        await _running_pod(client, "web-a", "d1")
        await _running_pod(client, "web-b", "d2")

        async def allowed() -> int:
            budget = await client.get(BUDGETS, "web", "default")
            return int((budget.get("status") or {}).get("disruptionsAllowed") or 0)

        await _until("the budget allows one disruption", allowed)
        server.kubectl("apply", "-f", "-", stdin=PLAN)
        # d1: cordoned, web-a evicted (the budget allows it); d1 starts once web-a is gone.
        await _until("web-a evicted", lambda: _evicted(client, "web-a"))
        assert await _unschedulable(client, "d1")

        async def phase_of(node: str, phase: str) -> bool:
            return (await _plan(client))[1].get(node, {}).get("phase") == phase

        await _until("d1 started", lambda: phase_of("d1", "Downloading"))
        table = server.kubectl("get", "updateplans", "-o", "wide").stdout.split()
        assert table[:8] == ["NAME", "VERSION", "PHASE", "HEALTHY", "UPDATING", "FAILED", "AGE",
                             "NODES"]  # fmt: skip
        assert table[8:13] == ["fw-drain", "0.2.0", "Progressing", "0/2", "1"]
        assert table[-1] == "d1=Downloading"
        await _report(client, "d1", "Healthy")

        # d2: its eviction would leave no web pod: refused, d2 waits, cordoned, Pending.
        async def blocked() -> str:
            entry = (await _plan(client))[1].get("d2", {})
            return str(entry.get("message", "")) if "budget" in entry.get("message", "") else ""

        message = await _until("d2's eviction refused", blocked)
        assert message.startswith("draining: 1 pod left; default/web-b: The disruption budget web")
        assert await _unschedulable(client, "d2")
        assert not await _unschedulable(client, "d1")  # uncordoned once Healthy
        assert (await _plan(client))[1]["d2"]["phase"] == "Pending"
        described = server.kubectl("describe", "updateplan", "fw-drain").stdout
        assert "The disruption budget web" in described
        assert "1/2 healthy" in described
        # A replacement runs on d1: the budget allows the eviction and d2 starts.
        await _running_pod(client, "web-c", "d1")
        await _until("web-b evicted", lambda: _evicted(client, "web-b"), 30)
        await _until("d2 started", lambda: phase_of("d2", "Downloading"))
        await _report(client, "d2", "Healthy")

        async def complete() -> bool:
            return str((await _plan(client))[0]["status"].get("phase")) == "Complete"

        await _until("the plan complete", complete)
        await _until("d2 uncordoned", lambda: _not(_unschedulable(client, "d2")))
        # kubectl edit: the editor raises maxUnavailable; the status is the controller's still.
        editor = tmp_path / "editor.sh"
        editor.write_text("#!/bin/sh\nsed -i 's/maxUnavailable: 1/maxUnavailable: 2/' \"$1\"\n")
        editor.chmod(0o755)
        monkeypatch.setenv("KUBE_EDITOR", str(editor))
        edited = server.kubectl("edit", "updateplan", "fw-drain")
        assert "updateplan.ota.k3py.io/fw-drain edited" in edited.stdout
        got = json.loads(server.kubectl("get", "updateplan", "fw-drain", "-o", "json").stdout)
        assert got["spec"]["maxUnavailable"] == 2
        assert got["status"]["phase"] == "Complete"
        assert {p["metadata"]["name"] for p in (await client.list(PODS, "default"))[0]} == {"web-c"}


async def _not(value: Any) -> bool:
    return not await value


async def test_a_drain_that_cannot_finish_fails_the_node_after_the_progress_deadline(
    server: ServerProcess,
) -> None:
    """As ``kubectl drain --timeout``: a budget that never allows the eviction fails the node
    after ``progressDeadlineSeconds`` instead of holding the rollout; the node is uncordoned."""
    assert NODES is not None
    assert BUDGETS is not None
    async with KubeClient.from_kubeconfig(server.kubeconfig) as client:
        await client.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": "d1", "labels": {"ring": "drain"}}})  # fmt: skip
        await client.create(BUDGETS, {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})  # fmt: skip
        await _running_pod(client, "web-a", "d1")
        server.kubectl("apply", "-f", "-", stdin=PLAN + "  progressDeadlineSeconds: 3\n")

        async def failed() -> Object:
            entry = (await _plan(client))[1].get("d1", {})
            return entry if entry.get("phase") == "Failed" else {}

        entry = await _until("d1 Failed", failed, 30)
        assert entry["message"].startswith(
            "drain not finished within 3s: 1 pod left; default/web-a"
        )
        await _until("d1 uncordoned", lambda: _not(_unschedulable(client, "d1")))
        assert PODS is not None
        assert not (await client.get(PODS, "web-a", "default"))["metadata"].get("deletionTimestamp")
