"""What kube-apiserver sends byte for byte and field for field, where clients depend on it:
status counters Go never omits, the deleted object for kinds whose storage returns it, and
error ``Status`` bodies."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Api
from tests.server.test_crud import CM, configmap

APPS = "/apis/apps/v1/namespaces/default"
CORE = "/api/v1/namespaces/default"


def workload(kind: str, name: str) -> dict[str, Any]:
    labels = {"app": name}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    }
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


async def test_new_daemon_sets_and_replica_sets_carry_zero_counters(api: Api) -> None:
    ds = await api.post(f"{APPS}/daemonsets", workload("DaemonSet", "agentd"))
    assert ds.status == 201, ds.body
    assert ds.body["status"] == {
        "currentNumberScheduled": 0,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": 0,
        "numberReady": 0,
    }
    rs = await api.post(f"{APPS}/replicasets", workload("ReplicaSet", "web"))
    assert rs.status == 201, rs.body
    assert rs.body["status"] == {"replicas": 0}
    # A status update that leaves them out still reads back with them.
    rs.body["status"] = {"observedGeneration": 1}
    updated = await api.put(f"{APPS}/replicasets/web/status", rs.body)
    assert updated.body["status"] == {"observedGeneration": 1, "replicas": 0}


async def test_events_carry_reporting_fields(api: Api) -> None:
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Started",
    }
    reply = await api.post(f"{CORE}/events", event)
    assert reply.status == 201, reply.body
    assert reply.body["reportingComponent"] == ""
    assert reply.body["reportingInstance"] == ""


async def test_delete_returns_the_object_for_services_and_service_accounts(api: Api) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]},
    }
    assert (await api.post(f"{CORE}/services", service)).status == 201
    deleted = await api.delete(f"{CORE}/services/web")
    assert deleted.status == 200
    assert deleted.body["kind"] == "Service"
    assert deleted.body["metadata"]["name"] == "web"
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}
    assert (await api.post(f"{CORE}/serviceaccounts", account)).status == 201
    deleted = await api.delete(f"{CORE}/serviceaccounts/robot")
    assert deleted.body["kind"] == "ServiceAccount"
    # Other kinds answer with a Status, as their upstream storage does.
    await api.post(CM, configmap("plain"))
    assert (await api.delete(f"{CM}/plain")).body["kind"] == "Status"


async def test_error_status_bytes_match_kube_apiserver(api: Api) -> None:
    await api.post(CM, configmap("twice"))
    reply = await api.post(CM, configmap("twice"))
    assert reply.status == 409
    # Captured from kube-apiserver 1.32 for the same request.
    assert reply.text == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"configmaps \\"twice\\" already exists","reason":"AlreadyExists",'
        '"details":{"name":"twice","kind":"configmaps"},"code":409}\n'
    )
    missing = await api.get(f"{APPS}/deployments/nope")
    assert missing.text == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"deployments.apps \\"nope\\" not found","reason":"NotFound",'
        '"details":{"name":"nope","group":"apps","kind":"deployments"},"code":404}\n'
    )
