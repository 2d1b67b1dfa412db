"""The server's /metrics, health checks and metrics.k8s.io discovery, on the real application.

The exposition is parsed with prometheus_client's own parser (what a Prometheus scrape
accepts), and the request counters must add up to exactly what the test sent.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import Api

NAMESPACE_PODS = "/api/v1/namespaces/default/configmaps"


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def _value(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    # An absent label is an empty one, as Prometheus reads them.
    return sum(v for found, v in samples if all(found.get(k, "") == w for k, w in labels.items()))


def _configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}


async def _scrape(api: Api) -> dict[str, list[tuple[dict[str, str], float]]]:
    reply = await api.get("/metrics")
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return _samples(reply.text)


async def test_request_counts_match_what_was_sent(api: Api) -> None:
    async def write(i: int) -> None:
        assert (await api.post(NAMESPACE_PODS, _configmap(f"cm{i}"))).status == 201

    async def scrape_meanwhile() -> int:
        scrapes = 0
        while scrapes < 5:
            await _scrape(api)  # every scrape parses
            scrapes += 1
            await asyncio.sleep(0)
        return scrapes

    done = await asyncio.gather(scrape_meanwhile(), *(write(i) for i in range(200)))
    assert done[0] == 5
    for i in range(15):
        assert (await api.get(f"{NAMESPACE_PODS}/cm{i}")).status == 200
    assert (await api.get(f"{NAMESPACE_PODS}/absent")).status == 404
    for _ in range(3):
        assert (await api.get(NAMESPACE_PODS)).status == 200
    assert (await api.post(NAMESPACE_PODS, _configmap("cm0"))).status == 409

    samples = await _scrape(api)
    total = samples["apiserver_request_total"]
    common = {"resource": "configmaps", "group": "", "version": "v1", "component": "apiserver"}
    assert _value(total, verb="POST", code="201", scope="namespace", **common) == 200
    assert _value(total, verb="POST", code="409", **common) == 1
    assert _value(total, verb="GET", code="200", scope="resource", **common) == 15
    assert _value(total, verb="GET", code="404", **common) == 1
    assert _value(total, verb="LIST", code="200", **common) == 3
    counts = samples["apiserver_request_duration_seconds_count"]
    assert _value(counts, verb="POST", **common) == 201
    assert (
        _value(
            samples["etcd_request_duration_seconds_count"], operation="create", type="configmaps"
        )
        >= 200
    )
    # The scrapes made during the load (the one being answered is counted once it is done).
    assert _value(total, verb="GET", resource="", code="200") == 5
    assert "apiserver_current_inflight_requests" in samples
    assert _value(samples["apiserver_current_inflight_requests"], request_kind="mutating") == 0
    assert not any(name.endswith("_created") for name in samples)


async def test_metrics_need_an_authorized_credential(api: Api) -> None:
    assert (await api.get("/metrics", token=None)).status == 401
    refused = await api.get("/metrics", token="node1")
    assert refused.status == 403
    assert refused.body["reason"] == "Forbidden"
    assert (await api.get("/metrics", token="jane")).status == 403
    assert (await api.get("/apis/metrics.k8s.io/v1beta1/nodes", token=None)).status == 401
    assert (await api.get("/apis/metrics.k8s.io/v1beta1/nodes", token="node1")).status == 403
    pods = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"
    assert (await api.get(pods, token="node1")).status == 403
    assert (await api.get(pods)).status == 200


async def test_health_checks_report_like_kube_apiserver(api: Api) -> None:
    for path in ("/livez", "/readyz", "/healthz"):
        reply = await api.get(path, token=None)
        assert (reply.status, reply.text) == (200, "ok")
    verbose = await api.get("/readyz?verbose", token=None)
    lines = verbose.text.splitlines()
    assert lines[0] == "[+]ping ok"
    assert "[+]etcd ok" in lines
    assert "[+]poststarthook/k3py-bootstrap ok" in lines
    assert lines[-1] == "readyz check passed"
    live = await api.get("/livez?verbose&exclude=etcd", token=None)
    assert "etcd" not in live.text
    assert live.text.endswith("livez check passed\n")
    single = await api.get("/livez/etcd", token=None)
    assert (single.status, single.text) == (200, "ok")
    assert (await api.get("/readyz/nonsense", token=None)).status == 404


async def test_readyz_fails_when_shutting_down(api: Api) -> None:
    from k3py.cluster.server.rest.context import REST

    api.app[REST].stopping.set()
    reply = await api.get("/readyz?verbose", token=None)
    assert reply.status == 500
    assert "[-]shutdown failed: reason withheld" in reply.text
    assert reply.text.endswith("readyz check failed\n")
    assert (await api.get("/livez", token=None)).status == 200


async def test_metrics_api_is_discoverable(api: Api) -> None:
    groups = (await api.get("/apis")).body["groups"]
    metrics = [g for g in groups if g["name"] == "metrics.k8s.io"]
    assert [g["preferredVersion"]["version"] for g in metrics] == ["v1beta1"]
    resources = (await api.get("/apis/metrics.k8s.io/v1beta1")).body
    assert {r["name"]: r["kind"] for r in resources["resources"]} == {
        "nodes": "NodeMetrics",
        "pods": "PodMetrics",
    }
    listed = (await api.get("/apis/metrics.k8s.io/v1beta1/nodes")).body
    assert (listed["kind"], listed["items"]) == ("NodeMetricsList", [])
    assert (await api.get("/apis/metrics.k8s.io/v1beta1/nodes/absent")).status == 404


async def test_a_board_without_prometheus_client_says_what_to_install(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    reply = await api.get("/metrics")
    assert reply.status == 503
    assert "python3-prometheus-client" in reply.body["message"]
    assert (await api.get("/readyz", token=None)).status == 200


async def test_open_watches_are_counted(api: Api) -> None:
    headers = {"Authorization": "Bearer admin"}
    async with api.client.get(f"{NAMESPACE_PODS}?watch=1", headers=headers) as watch:
        assert watch.status == 200
        samples = await _scrape(api)
        watchers = samples["apiserver_registered_watchers"]
        assert _value(watchers, group="", version="v1", kind="ConfigMap") == 1
        running = samples["apiserver_longrunning_requests"]
        assert _value(running, verb="WATCH", resource="configmaps") == 1
    # The watch ends with the client's connection; the server notices on its next write.
    assert (await api.post(NAMESPACE_PODS, _configmap("wake"))).status == 201
    for _ in range(50):
        samples = await _scrape(api)
        if _value(samples["apiserver_longrunning_requests"], verb="WATCH") == 0:
            break
        await asyncio.sleep(0.05)
    assert _value(samples["apiserver_request_total"], verb="WATCH", code="200") == 1
