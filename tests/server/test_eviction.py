"""Eviction honours PodDisruptionBudgets: a 429 kubectl drain retries, then the allowance."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Api

PODS = "/api/v1/namespaces/default/pods"
PDBS = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"


def _eviction(name: str) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}}


async def _running_pod(api: Api, name: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "db"}},
        "spec": {
            "nodeName": "n1",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox"}],
        },
    }
    assert (await api.post(PODS, pod)).status == 201
    status = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert (await api.patch(f"{PODS}/{name}/status", status)).status == 200


async def _budget(api: Api, allowed: int) -> None:
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "db"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}},
    }
    created = await api.post(PDBS, budget)
    assert created.status == 201, created.body
    assert created.body["status"]["disruptionsAllowed"] == 0  # Go never omits the counters
    status = {
        "status": {
            "observedGeneration": 1,
            "disruptionsAllowed": allowed,
            "currentHealthy": 1 + allowed,
            "desiredHealthy": 1,
            "expectedPods": 1 + allowed,
        }
    }
    assert (await api.patch(f"{PDBS}/db/status", status)).status == 200


async def test_an_exhausted_budget_refuses_with_429(api: Api) -> None:
    await _running_pod(api, "db-0")
    await _budget(api, 0)
    reply = await api.post(f"{PODS}/db-0/eviction", _eviction("db-0"))
    assert reply.status == 429
    assert reply.body["message"] == (
        "Cannot evict pod as it would violate the pod's disruption budget."
    )
    assert reply.body["details"]["causes"] == [
        {
            "reason": "DisruptionBudget",
            "message": "The disruption budget db needs 1 healthy pods and has 1 currently",
        }
    ]
    assert (await api.get(f"{PODS}/db-0")).status == 200


async def test_an_allowance_is_spent_once(api: Api) -> None:
    await _running_pod(api, "db-0")
    await _running_pod(api, "db-1")
    await _budget(api, 1)
    first = await api.post(f"{PODS}/db-0/eviction", _eviction("db-0"))
    assert first.status == 201
    assert (await api.get(f"{PODS}/db-0")).status == 404
    budget = (await api.get(f"{PDBS}/db")).body["status"]
    assert budget["disruptionsAllowed"] == 0
    assert "db-0" in budget["disruptedPods"]
    second = await api.post(f"{PODS}/db-1/eviction", _eviction("db-1"))
    assert second.status == 429


async def test_pods_that_do_not_run_are_evicted_at_once(api: Api) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pending", "labels": {"app": "db"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    await api.post(PODS, pod)
    await _budget(api, 0)
    assert (await api.post(f"{PODS}/pending/eviction", _eviction("pending"))).status == 201
