"""The pod sync loop on the fake runtime and a virtual clock: ordering, back-off, probes,
restart policies, adoption after a restart, deletion and garbage."""

from __future__ import annotations

import collections.abc
from pathlib import Path

import pytest

from k3py.cluster.agent.runtime import ContainerConfig, ContainerInfo
from tests.agent.fakes import IMAGE, NODE, Harness, make_pod


@pytest.fixture
async def harness(tmp_path: Path) -> collections.abc.AsyncIterator[Harness]:
    h = Harness(tmp_path)
    h.sync.start()
    yield h
    await h.sync.stop()


def started_names(h: Harness) -> list[str]:
    return [name.split("_")[1] for call, name in h.runtime.calls if call == "start"]


async def test_sandbox_then_init_containers_in_order_then_app(harness: Harness) -> None:
    h = harness
    pod = make_pod(
        init=[{"name": "first", "image": IMAGE}, {"name": "second", "image": IMAGE}],
        containers=[{"name": "app", "image": IMAGE}, {"name": "side", "image": IMAGE}],
    )
    h.sync.replace_all([pod])
    await h.settle()
    assert started_names(h) == ["POD", "first"]
    assert h.host.last_status("web")["phase"] == "Pending"
    init_state = h.host.last_status("web")["initContainerStatuses"][0]["state"]
    assert "running" in init_state

    h.runtime.exit(h.running(pod, "first")[0].id, 0)
    await h.settle()
    assert started_names(h) == ["POD", "first", "second"]

    h.runtime.exit(h.running(pod, "second")[0].id, 0)
    await h.settle()
    assert started_names(h) == ["POD", "first", "second", "app", "side"]
    status = h.host.last_status("web")
    assert status["phase"] == "Running"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert status["podIP"].startswith("10.88.0.")
    assert status["hostIP"] == "192.0.2.10"
    app = status["containerStatuses"][0]
    assert app["containerID"].startswith("docker://")
    assert app["ready"] is True
    assert app["restartCount"] == 0
    # App containers join the sandbox's network.
    sandbox = h.running(pod, "POD")[0]
    config = next(c.config for c in h.runtime.containers.values() if c.info.container_name == "app")
    assert config.network == f"container:{sandbox.id}"


async def test_failed_container_restarts_with_exponential_backoff(harness: Harness) -> None:
    h = harness
    pod = make_pod()
    h.sync.replace_all([pod])
    await h.settle()
    restart_times: list[float] = []
    for _ in range(5):
        h.runtime.exit(h.running(pod, "app")[0].id, 1)
        crashed_at = h.clock.monotonic()
        await h.settle()
        # Step the virtual clock until the container runs again.
        while not h.running(pod, "app"):
            await h.settle(1.0)
        restart_times.append(h.clock.monotonic() - crashed_at)
    # Kubernetes: first restart at once, then 10 s, 20 s, 40 s, 80 s.
    assert restart_times == [0.0, 10.0, 20.0, 40.0, 80.0]
    status = h.host.last_status("web")["containerStatuses"][0]
    assert status["restartCount"] == 5
    assert status["lastState"]["terminated"]["exitCode"] == 1


async def test_crash_loop_status_and_backoff_event(harness: Harness) -> None:
    h = harness
    pod = make_pod()
    h.sync.replace_all([pod])
    await h.settle()
    h.runtime.exit(h.running(pod, "app")[0].id, 2)
    await h.settle()
    h.runtime.exit(h.running(pod, "app")[0].id, 2)
    await h.settle()
    status = h.host.last_status("web")
    app = status["containerStatuses"][0]
    assert app["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "back-off 10s restarting failed container=app" in app["state"]["waiting"]["message"]
    assert app["lastState"]["terminated"]["exitCode"] == 2
    assert app["lastState"]["terminated"]["reason"] == "Error"
    assert app["restartCount"] == 1
    assert status["phase"] == "Running"  # a crash-looping container keeps the pod Running
    assert "BackOff" in h.host.reasons("web")


@pytest.mark.parametrize(
    ("policy", "code", "phase", "restarted"),
    [
        ("Never", 0, "Succeeded", False),
        ("Never", 3, "Failed", False),
        ("OnFailure", 0, "Succeeded", False),
        ("OnFailure", 3, "Running", True),
        ("Always", 0, "Running", True),
    ],
)
async def test_restart_policy(
    harness: Harness, policy: str, code: int, phase: str, restarted: bool
) -> None:
    h = harness
    pod = make_pod(restart_policy=policy)
    h.sync.replace_all([pod])
    await h.settle()
    h.runtime.exit(h.running(pod, "app")[0].id, code)
    await h.settle()
    assert h.host.last_status("web")["phase"] == phase
    assert bool(h.running(pod, "app")) is restarted


async def test_completed_pod_releases_its_sandbox(harness: Harness) -> None:
    h = harness
    pod = make_pod(restart_policy="Never")
    h.sync.replace_all([pod])
    await h.settle()
    h.runtime.exit(h.running(pod, "app")[0].id, 0)
    await h.settle()
    assert h.host.last_status("web")["phase"] == "Succeeded"
    # The loop sees its own status come back (as from the API) and stops the sandbox.
    h.sync.apply({**pod, "status": h.host.last_status("web")})
    await h.settle()
    assert not h.running(pod, "POD")
    assert h.host.last_status("web")["phase"] == "Succeeded"


async def test_liveness_probe_failure_restarts_the_container(harness: Harness) -> None:
    h = harness
    healthy = {"value": True}
    h.runtime.exec_handler = lambda info, command: 0 if healthy["value"] else 1
    probe = {"exec": {"command": ["check"]}, "periodSeconds": 5, "failureThreshold": 3}
    pod = make_pod(containers=[{"name": "app", "image": IMAGE, "livenessProbe": probe}])
    h.sync.replace_all([pod])
    await h.settle()
    first = h.running(pod, "app")[0].id
    await h.settle(60)
    assert h.running(pod, "app")[0].id == first  # healthy: left alone
    healthy["value"] = False
    await h.settle(10)
    assert h.running(pod, "app")[0].id == first  # two failures are below the threshold
    await h.settle(5)
    replacement = h.running(pod, "app")
    assert replacement
    assert replacement[0].id != first
    assert "Unhealthy" in h.host.reasons("web")
    assert "Killing" in h.host.reasons("web")
    assert h.host.last_status("web")["containerStatuses"][0]["restartCount"] == 1


async def test_readiness_probe_drives_the_ready_condition(harness: Harness) -> None:
    h = harness
    ready = {"value": False}
    h.runtime.exec_handler = lambda info, command: 0 if ready["value"] else 1
    probe = {"exec": {"command": ["ready"]}, "periodSeconds": 10, "failureThreshold": 1}
    pod = make_pod(containers=[{"name": "app", "image": IMAGE, "readinessProbe": probe}])
    h.sync.replace_all([pod])
    await h.settle()

    def ready_condition() -> str:
        status = h.host.last_status("web")
        return str(next(c["status"] for c in status["conditions"] if c["type"] == "Ready"))

    assert ready_condition() == "False"
    ready["value"] = True
    await h.settle(10)
    assert ready_condition() == "True"
    ready["value"] = False
    await h.settle(10)
    assert ready_condition() == "False"
    assert len(h.running(pod, "app")) == 1  # readiness never restarts


async def test_startup_probe_gates_liveness(harness: Harness) -> None:
    h = harness
    calls: list[str] = []

    def handler(info: ContainerInfo, command: list[str]) -> int:
        calls.append(command[0])
        return 1 if command[0] == "started" and len(calls) < 3 else 0

    h.runtime.exec_handler = handler
    startup = {"exec": {"command": ["started"]}, "periodSeconds": 1, "failureThreshold": 10}
    liveness = {"exec": {"command": ["alive"]}, "periodSeconds": 1}
    pod = make_pod(
        containers=[
            {"name": "app", "image": IMAGE, "startupProbe": startup, "livenessProbe": liveness}
        ]
    )
    h.sync.replace_all([pod])
    await h.settle()
    await h.settle(5)
    first_alive = calls.index("alive")
    assert calls[:first_alive] == ["started", "started", "started"]
    assert "started" not in calls[first_alive:]
    assert h.host.last_status("web")["containerStatuses"][0]["started"] is True


async def test_a_new_loop_adopts_running_containers(tmp_path: Path) -> None:
    first = Harness(tmp_path)
    first.sync.start()
    pod = make_pod()
    first.sync.replace_all([pod])
    await first.settle()
    ids = {c.id for c in first.runtime.running()}
    await first.sync.stop()

    # An agent restart: a new loop over the same runtime, with the same pod.
    second = Harness(tmp_path, runtime=first.runtime)
    second.sync.start()
    second.sync.replace_all([{**pod, "status": first.host.last_status("web")}])
    await second.settle()
    await second.settle(120)
    assert {c.id for c in second.runtime.running()} == ids
    assert [c for c in second.runtime.calls if c[0] in {"create", "stop"}] == [
        c for c in first.runtime.calls if c[0] in {"create", "stop"}
    ]
    await second.sync.stop()


async def test_changed_container_spec_replaces_the_container(harness: Harness) -> None:
    h = harness
    pod = make_pod()
    h.sync.replace_all([pod])
    await h.settle()
    old = h.running(pod, "app")[0].id
    changed = {
        **pod,
        "spec": {**pod["spec"], "containers": [{"name": "app", "image": IMAGE, "args": ["v2"]}]},
    }
    h.sync.apply(changed)
    await h.settle()
    new = h.running(pod, "app")
    assert new
    assert new[0].id != old
    assert h.running(pod, "POD")  # the sandbox stays


async def test_deleting_a_pod_stops_and_removes_everything(harness: Harness) -> None:
    h = harness
    pod = make_pod(volumes=[{"name": "scratch", "emptyDir": {}}])
    h.sync.replace_all([pod])
    await h.settle()
    assert h.volumes.pod_dir(pod["metadata"]["uid"]).exists()
    deleting = {
        **pod,
        "metadata": {
            **pod["metadata"],
            "deletionTimestamp": "2026-01-01T00:00:30Z",
            "deletionGracePeriodSeconds": 30,
        },
    }
    h.sync.apply(deleting)
    await h.settle()
    assert not [
        c for c in h.runtime.containers.values() if c.info.pod_uid == pod["metadata"]["uid"]
    ]
    assert h.host.finished == ["web"]
    assert not h.volumes.pod_dir(pod["metadata"]["uid"]).exists()
    assert (
        "stop",
        next(n for c, n in h.runtime.calls if c == "create" and "_app_" in n),
    ) in h.runtime.calls


async def test_sweep_removes_orphans_and_never_touches_other_containers(harness: Harness) -> None:
    h = harness
    kept = make_pod("kept")
    h.sync.replace_all([kept])
    await h.settle()
    orphan = await h.runtime.create_container(
        ContainerConfig(
            name="k3py_app_gone_default_x_0",
            image=IMAGE,
            labels={
                "io.k3py.managed": "true",
                "io.k3py.node": NODE,
                "io.kubernetes.pod.uid": "gone",
            },
        )
    )
    other_node = await h.runtime.create_container(
        ContainerConfig(
            name="theirs",
            image=IMAGE,
            labels={
                "io.k3py.managed": "true",
                "io.k3py.node": "node-b",
                "io.kubernetes.pod.uid": "x",
            },
        )
    )
    foreign = await h.runtime.create_container(ContainerConfig(name="mine", image=IMAGE, labels={}))
    assert await h.sync.sweep() == 1
    assert orphan not in h.runtime.containers
    assert other_node in h.runtime.containers
    assert foreign in h.runtime.containers
    assert h.running(kept, "app")


async def test_missing_image_is_pulled_with_backoff(harness: Harness) -> None:
    h = harness
    pod = make_pod(containers=[{"name": "app", "image": "example/absent:2"}])
    h.sync.replace_all([pod])
    await h.settle()
    reasons = [
        status["containerStatuses"][0]["state"].get("waiting", {}).get("reason")
        for _, status in h.host.statuses
    ]
    assert reasons[:2] == ["ErrImagePull", "ImagePullBackOff"]
    await h.settle(9)
    assert [c for c in h.runtime.calls if c[0] == "pull"] == [("pull", "example/absent:2")]
    h.runtime.pullable["example/absent:2"] = "sha256:" + "c" * 64
    await h.settle(1)
    assert h.running(pod, "app")
    assert [c for c in h.runtime.calls if c[0] == "pull"] == [("pull", "example/absent:2")] * 2


async def test_never_pull_policy_reports_err_image_never_pull(harness: Harness) -> None:
    h = harness
    pod = make_pod(
        containers=[{"name": "app", "image": "example/absent:2", "imagePullPolicy": "Never"}]
    )
    h.sync.replace_all([pod])
    await h.settle()
    waiting = h.host.last_status("web")["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ErrImageNeverPull"
    assert not [c for c in h.runtime.calls if c[0] == "pull"]


async def test_missing_config_map_holds_the_pod_in_container_creating(harness: Harness) -> None:
    h = harness
    volume = {"name": "conf", "configMap": {"name": "settings"}}
    container = {
        "name": "app",
        "image": IMAGE,
        "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"}],
    }
    pod = make_pod(containers=[container], volumes=[volume])
    h.sync.replace_all([pod])
    await h.settle()
    status = h.host.last_status("web")
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
    assert "FailedMount" in h.host.reasons("web")
    h.host.objects.config_maps[("default", "settings")] = {"data": {"mode": "fast"}}
    await h.settle(10)
    assert h.running(pod, "app")
    mount = next(
        c.config for c in h.runtime.containers.values() if c.info.container_name == "app"
    ).mounts[0]
    assert Path(mount.source, "mode").read_text() == "fast"
