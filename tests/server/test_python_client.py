"""The official kubernetes Python client against a real ``k3py server``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration

NS = "pyclient"


@pytest.fixture(scope="module")
def api_client(cluster: ServerProcess) -> Iterator[Any]:
    with cluster.api_client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        yield api


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
            },
        },
    }


class Collector:
    """Runs a watch in a thread and keeps (type, name) of its events."""

    def __init__(self, list_call: Any, resource_version: str, **filters: Any) -> None:
        self.events: list[tuple[str, str]] = []
        self.error: BaseException | None = None
        self._watch = watch.Watch()
        self._thread = threading.Thread(
            target=self._run, args=(list_call, resource_version, filters), daemon=True
        )
        self._thread.start()

    def _run(self, list_call: Any, resource_version: str, filters: dict[str, Any]) -> None:
        try:
            for event in self._watch.stream(
                list_call, NS, resource_version=resource_version, timeout_seconds=10, **filters
            ):
                self.events.append((event["type"], event["object"].metadata.name))
        except BaseException as err:
            self.error = err

    def wait_for(self, last: tuple[str, str], within: float = 10.0) -> list[tuple[str, str]]:
        """The events up to and including ``last``."""
        deadline = time.monotonic() + within
        while last not in self.events and time.monotonic() < deadline and self.error is None:
            time.sleep(0.02)
        self._watch.stop()
        assert self.error is None, self.error
        return self.events


def test_config_map_lifecycle(api_client: Any) -> None:
    core = client.CoreV1Api(api_client)
    created = core.create_namespaced_config_map(
        NS, {"metadata": {"name": "settings"}, "data": {"a": "1"}}
    )
    assert created.metadata.uid
    assert core.read_namespaced_config_map("settings", NS).data == {"a": "1"}
    patched = core.patch_namespaced_config_map("settings", NS, {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}
    names = [c.metadata.name for c in core.list_namespaced_config_map(NS).items]
    assert "settings" in names
    stale = created
    stale.data = {"stale": "yes"}
    with pytest.raises(client.ApiException) as conflict:
        core.replace_namespaced_config_map("settings", NS, stale)
    assert conflict.value.status == 409
    fresh = core.read_namespaced_config_map("settings", NS)
    fresh.data["c"] = "3"
    assert core.replace_namespaced_config_map("settings", NS, fresh).data["c"] == "3"
    assert core.delete_namespaced_config_map("settings", NS).status == "Success"
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_config_map("settings", NS)
    assert missing.value.status == 404


def test_deployment_crud_and_watch(api_client: Any) -> None:
    apps = client.AppsV1Api(api_client)
    start = apps.list_namespaced_deployment(NS).metadata.resource_version
    seen = Collector(apps.list_namespaced_deployment, start, field_selector="metadata.name=api")
    apps.create_namespaced_deployment(NS, deployment("api"))
    assert apps.read_namespaced_deployment("api", NS).spec.replicas == 1
    apps.patch_namespaced_deployment("api", NS, {"spec": {"replicas": 0}})
    for attempt in range(5):  # the deployment controller may write status between the two
        current = apps.read_namespaced_deployment("api", NS)
        current.metadata.labels["stage"] = "test"
        try:
            replaced = apps.replace_namespaced_deployment("api", NS, current)
            break
        except client.ApiException as err:
            if err.status != 409 or attempt == 4:
                raise
    assert replaced.metadata.labels == {"app": "api", "stage": "test"}
    scale = apps.read_namespaced_deployment_scale("api", NS)
    assert scale.spec.replicas == 0
    apps.delete_namespaced_deployment("api", NS)
    events = seen.wait_for(("DELETED", "api"))  # controllers add status updates in between
    assert events[0] == ("ADDED", "api")
    assert events[-1] == ("DELETED", "api")
    assert {kind for kind, _ in events[1:-1]} == {"MODIFIED"}


def test_pod_watch_from_a_resource_version(api_client: Any) -> None:
    core = client.CoreV1Api(api_client)
    pod = {
        "metadata": {"name": "worker", "labels": {"role": "worker"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }
    created = core.create_namespaced_pod(NS, pod)
    seen = Collector(
        core.list_namespaced_pod, created.metadata.resource_version, label_selector="role=worker"
    )
    core.patch_namespaced_pod("worker", NS, {"metadata": {"labels": {"extra": "1"}}})
    core.delete_namespaced_pod("worker", NS)
    events = seen.wait_for(("DELETED", "worker"))
    # Nothing before the start revision; the scheduler may add status updates in between.
    assert events[-1] == ("DELETED", "worker")
    assert set(events[:-1]) == {("MODIFIED", "worker")}


def test_compacted_revisions_are_gone(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path,
        "--datastore-compact-min-revisions=1",
        "--datastore-compact-min-age=0",
        "--datastore-compact-interval=0.2",
        "--disable-scheduler",
    )
    server.start()
    try:
        with server.api_client() as api:
            core = client.CoreV1Api(api)
            old = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
            revision = old.metadata.resource_version
            for i in range(3):
                core.patch_namespaced_config_map("c", "default", {"data": {"i": str(i)}})
            deadline = time.monotonic() + 10
            while _exact_list_status(core, revision) != 410:
                assert time.monotonic() < deadline, "never compacted"
                time.sleep(0.1)
            with pytest.raises(client.ApiException) as expired:
                for _ in watch.Watch().stream(
                    core.list_namespaced_config_map,
                    "default",
                    resource_version=revision,
                    timeout_seconds=5,
                ):
                    pass
            assert expired.value.status == 410
    finally:
        server.stop()


def _exact_list_status(core: Any, revision: str) -> int:
    try:
        core.list_namespaced_config_map(
            "default", resource_version=revision, resource_version_match="Exact"
        )
    except client.ApiException as err:
        return int(err.status)
    return 200
