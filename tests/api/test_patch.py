"""JSON patch, JSON merge patch and strategic merge patch as the API server applies them.

The strategic cases are the patches kubectl itself computes (``kubectl apply`` sends
``$setElementOrder`` lists and ``$patch: delete`` items; ``kubectl patch`` sends plain maps).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from k3py.cluster.api.patch import (
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from k3py.cluster.api.status import ApiError
from tests.api.kinds import info

DEPLOYMENT = info("Deployment")
POD = info("Pod")
SERVICE = info("Service")
NODE = info("Node")


def _deployment(**container: Any) -> dict[str, Any]:
    web = {
        "name": "web",
        "image": "nginx:1.25",
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"containerPort": 80, "name": "http", "protocol": "TCP"},
            {"containerPort": 443, "name": "https", "protocol": "TCP"},
        ],
        "env": [{"name": "A", "value": "1"}],
        "resources": {},
    }
    web.update(container)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [web],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "a", "operator": "Exists"}],
                },
            },
        },
    }


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def _smp(doc: dict[str, Any], patch: Any, kind: Any = DEPLOYMENT) -> dict[str, Any]:
    return apply_strategic_merge_patch(doc, patch, kind)


# --- strategic merge patch: what kubectl apply sends -------------------------------------


def test_apply_changing_a_container_image() -> None:
    live = _deployment()
    before = copy.deepcopy(live)
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [{"image": "nginx:1.26", "name": "web"}],
                }
            }
        }
    }
    result = _smp(live, patch)
    (web,) = _pod_spec(result)["containers"]
    assert web["image"] == "nginx:1.26"
    assert [p["containerPort"] for p in web["ports"]] == [80, 443]
    assert web["imagePullPolicy"] == "IfNotPresent"
    assert live == before  # the stored object is not modified


def test_apply_adding_an_env_var_keeps_order() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [
                        {
                            "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                            "env": [{"name": "B", "value": "2"}],
                            "name": "web",
                        }
                    ],
                }
            }
        }
    }
    (web,) = _pod_spec(_smp(_deployment(), patch))["containers"]
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]


def test_apply_removing_a_port_and_an_env_var() -> None:
    live = _deployment(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [
                        {
                            "$setElementOrder/env": [{"name": "A"}],
                            "$setElementOrder/ports": [{"containerPort": 80}],
                            "env": [{"$patch": "delete", "name": "B"}],
                            "name": "web",
                            "ports": [{"$patch": "delete", "containerPort": 443}],
                        }
                    ],
                }
            }
        }
    }
    (web,) = _pod_spec(_smp(live, patch))["containers"]
    assert web["ports"] == [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
    assert web["env"] == [{"name": "A", "value": "1"}]
    assert "$setElementOrder/env" not in web


def test_set_element_order_reorders_and_keeps_server_only_items_in_place() -> None:
    live = _deployment()
    containers = _pod_spec(live)["containers"]
    containers.append({"name": "sidecar", "image": "envoy"})
    containers.append({"name": "log", "image": "fluent"})
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}],
                    "containers": [{"name": "log", "image": "fluent:2"}],
                }
            }
        }
    }
    result = _pod_spec(_smp(live, patch))["containers"]
    assert [c["name"] for c in result] == ["web", "sidecar", "log"]
    assert result[2]["image"] == "fluent:2"
    reorder = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [
                        {"name": "log"},
                        {"name": "sidecar"},
                        {"name": "web"},
                    ]
                }
            }
        }
    }
    result = _pod_spec(_smp(live, reorder))["containers"]
    assert [c["name"] for c in result] == ["log", "sidecar", "web"]


def test_apply_adding_a_container_with_order() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                    "containers": [{"name": "sidecar", "image": "envoy"}],
                }
            }
        }
    }
    result = _pod_spec(_smp(_deployment(), patch))["containers"]
    assert [c["name"] for c in result] == ["web", "sidecar"]


def test_kubectl_patch_new_list_item_goes_first_without_order() -> None:
    # Without $setElementOrder a new item leads, as with the real API server.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "e"}]}}}}
    result = _pod_spec(_smp(_deployment(), patch))["containers"]
    assert [c["name"] for c in result] == ["sidecar", "web"]


def test_retain_keys_switches_strategy_type() -> None:
    patch = {
        "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}}
    }
    result = _smp(_deployment(), patch)
    assert result["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_switches_volume_source() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "volumes": [
                        {
                            "$retainKeys": ["configMap", "name"],
                            "configMap": {"name": "cfg"},
                            "name": "data",
                        }
                    ]
                }
            }
        }
    }
    result = _pod_spec(_smp(_deployment(), patch))
    assert result["volumes"] == [{"name": "data", "configMap": {"name": "cfg"}}]


def test_retain_keys_must_cover_the_patched_keys() -> None:
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}}
    with pytest.raises(ApiError) as err:
        _smp(_deployment(), patch)
    assert err.value.code == 400
    assert err.value.message == "invalid patch format of retainKeys"


def test_finalizers_merge_as_a_set_and_delete_from_primitive_list() -> None:
    live = _deployment()
    live["metadata"]["finalizers"] = ["a", "b", "c"]
    added = _smp(live, {"metadata": {"finalizers": ["d", "a"]}})
    assert added["metadata"]["finalizers"] == ["d", "a", "b", "c"]
    removed = _smp(live, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}})
    assert removed["metadata"]["finalizers"] == ["a", "c"]
    ordered = _smp(
        live,
        {
            "metadata": {
                "$setElementOrder/finalizers": ["c", "a"],
                "$deleteFromPrimitiveList/finalizers": ["b"],
            }
        },
    )
    assert ordered["metadata"]["finalizers"] == ["c", "a"]


def test_patch_directives_replace_and_delete() -> None:
    live = _deployment()
    replaced = _smp(
        live,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "only", "image": "busybox"}, {"$patch": "replace"}]
                    }
                }
            }
        },
    )
    assert _pod_spec(replaced)["containers"] == [{"name": "only", "image": "busybox"}]
    labels = _smp(live, {"metadata": {"labels": {"$patch": "replace", "tier": "front"}}})
    assert labels["metadata"]["labels"] == {"tier": "front"}
    deleted = _smp(live, {"spec": {"strategy": {"$patch": "delete"}}})
    assert deleted["spec"]["strategy"] == {}
    gone = _smp(
        live,
        {"spec": {"template": {"spec": {"containers": [{"$patch": "delete", "name": "web"}]}}}},
    )
    assert _pod_spec(gone)["containers"] == []


def test_null_deletes_and_untagged_lists_are_replaced() -> None:
    live = _deployment()
    result = _smp(
        live,
        {
            "metadata": {"labels": {"app": None, "tier": "front"}},
            "spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}},
        },
    )
    assert result["metadata"]["labels"] == {"tier": "front"}
    assert _pod_spec(result)["tolerations"] == [{"key": "b", "operator": "Exists"}]
    fresh = _smp(live, {"spec": {"paused": True, "minReadySeconds": None, "x": {"y": None}}})
    assert fresh["spec"]["paused"] is True
    assert fresh["spec"]["x"] == {}


def test_service_ports_merge_by_port_and_pod_conditions_by_type() -> None:
    svc = {
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]},
    }
    result = _smp(svc, {"spec": {"ports": [{"port": 443, "targetPort": 9443}]}}, SERVICE)
    assert result["spec"]["ports"] == [
        {"port": 80, "targetPort": 8080},
        {"port": 443, "targetPort": 9443},
    ]
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"},
            ]
        },
    }
    patched = _smp(
        pod,
        {
            "status": {
                "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Ready"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
        POD,
    )
    assert patched["status"]["conditions"][1] == {"type": "Ready", "status": "True"}
    node = {
        "metadata": {"name": "n"},
        "status": {"addresses": [{"type": "Hostname", "address": "n"}]},
    }
    patched = _smp(
        node,
        {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}},
        NODE,
    )
    assert [a["type"] for a in patched["status"]["addresses"]] == ["InternalIP", "Hostname"]


def test_owner_references_merge_by_uid() -> None:
    live = _deployment()
    live["metadata"]["ownerReferences"] = [
        {"uid": "1", "name": "a", "kind": "X", "apiVersion": "v1"}
    ]
    result = _smp(
        live,
        {
            "metadata": {
                "ownerReferences": [{"uid": "2", "name": "b", "kind": "X", "apiVersion": "v1"}]
            }
        },
    )
    assert sorted(r["uid"] for r in result["metadata"]["ownerReferences"]) == ["1", "2"]


@pytest.mark.parametrize(
    ("patch", "code", "message"),
    [
        (
            {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
            400,
            "map: map[image:x] does not contain declared merge key: name",
        ),
        (
            {"spec": {"template": {"spec": {"containers": [{"$patch": "merge", "name": "w"}]}}}},
            400,
            "merging lists cannot yet be specified in the patch",
        ),
        ({"spec": {"$patch": "bogus"}}, 400, "unknown patch type: bogus in map: map[$patch:bogus]"),
        (
            {"metadata": {"$deleteFromPrimitiveList": ["a"]}},
            400,
            "invalid patch format of primitive list",
        ),
        ({"spec": {"x": [[1]], "template": {"spec": {"volumes": [[1]]}}}}, 422, None),
    ],
)
def test_strategic_errors(patch: dict[str, Any], code: int, message: str | None) -> None:
    with pytest.raises(ApiError) as err:
        _smp(_deployment(), patch)
    assert err.value.code == code
    if message is not None:
        assert err.value.message == message


def test_set_element_order_must_agree_with_the_patch_list() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [{"name": "other", "image": "x"}],
                }
            }
        }
    }
    with pytest.raises(ApiError) as err:
        _smp(_deployment(), patch)
    assert err.value.code == 400


def test_strategic_patch_body_must_be_an_object() -> None:
    with pytest.raises(ApiError) as err:
        _smp(_deployment(), [{"op": "add"}])
    assert err.value.code == 400


# --- JSON patch ---------------------------------------------------------------------------


def test_json_patch_operations() -> None:
    live = _deployment()
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "add", "path": "/metadata/annotations", "value": {}},
        {"op": "add", "path": "/metadata/annotations/example.com~1owner", "value": "me"},
        {"op": "add", "path": "/metadata/annotations/a~0b", "value": "tilde"},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "B"}},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/0", "value": {"name": "Z"}},
        {"op": "remove", "path": "/spec/template/spec/tolerations"},
        {"op": "copy", "from": "/metadata/labels", "path": "/spec/template/metadata/labels"},
        {"op": "move", "from": "/spec/strategy", "path": "/spec/oldStrategy"},
        {"op": "test", "path": "/spec/replicas", "value": 5.0},
        {"op": "test", "path": "/spec/missing", "value": None},
        {"op": "remove", "path": "/spec/template/spec/containers/0/ports/-1"},
    ]
    result = apply_json_patch(live, ops)
    assert result["spec"]["replicas"] == 5
    assert result["metadata"]["annotations"] == {"example.com/owner": "me", "a~b": "tilde"}
    web = result["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in web["env"]] == ["Z", "A", "B"]
    assert [p["containerPort"] for p in web["ports"]] == [80]
    assert "tolerations" not in result["spec"]["template"]["spec"]
    assert "strategy" not in result["spec"]
    assert result["spec"]["oldStrategy"]["type"] == "RollingUpdate"
    assert live["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("ops", "code", "cause"),
    [
        (
            [{"op": "test", "path": "/spec/replicas", "value": 3}],
            422,
            "testing value /spec/replicas failed: test failed",
        ),
        ([{"op": "test", "path": "/spec/replicas", "value": True}], 422, None),
        ([{"op": "replace", "path": "/spec/nope", "value": 1}], 422, None),
        ([{"op": "add", "path": "/spec/a/b", "value": 1}], 422, None),
        ([{"op": "remove", "path": "/metadata/annotations"}], 422, None),
        ([{"op": "add", "path": "/spec/template/spec/containers/5", "value": {}}], 422, None),
        ([{"op": "jump", "path": "/spec"}], 422, "Unexpected kind: jump"),
        ([{"op": "move", "from": "/spec", "path": "/spec/x"}], 422, None),
        ([{"op": "add", "path": "spec", "value": 1}], 422, None),
        ({"op": "add"}, 400, None),
        (["add"], 400, None),
    ],
)
def test_json_patch_failures(ops: Any, code: int, cause: str | None) -> None:
    with pytest.raises(ApiError) as err:
        apply_json_patch(_deployment(), ops)
    assert err.value.code == code
    if code == 422:
        assert err.value.reason == "Invalid"
        assert err.value.causes
    if cause is not None:
        assert err.value.causes[0].message == cause


def test_json_patch_operation_limit() -> None:
    ops = [{"op": "test", "path": "/kind", "value": "Deployment"}] * 10001
    with pytest.raises(ApiError) as err:
        apply_json_patch(_deployment(), ops)
    assert err.value.code == 413


# --- JSON merge patch ---------------------------------------------------------------------


def test_merge_patch() -> None:
    live = _deployment()
    result = apply_merge_patch(
        live,
        {
            "metadata": {"labels": {"app": None, "tier": "front"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "x"}]}}},
            "new": {"a": None, "b": 1},
        },
    )
    assert result["metadata"]["labels"] == {"tier": "front"}
    assert result["spec"]["replicas"] == 3
    assert result["spec"]["template"]["spec"]["containers"] == [{"name": "x"}]  # lists replace
    assert result["new"] == {"b": 1}
    assert result["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    with pytest.raises(ApiError) as err:
        apply_merge_patch(live, [1])
    assert err.value.code == 400
