"""Authorization and NodeRestriction: what the admin, a node and other users may do."""

from __future__ import annotations

from typing import Any

import pytest

from k3py.cluster.server.auth import RequestAttributes, UserInfo, admit, authorize

ADMIN = UserInfo("system:admin", ("system:masters", "system:authenticated"))
NODE = UserInfo("system:node:n1", ("system:nodes", "system:authenticated"))
BOB = UserInfo("bob", ("developers", "system:authenticated"))
# A node name without the group (or the group without the name) is not a node identity.
FAKE_NODE = UserInfo("system:node:n1", ("system:authenticated",))

LEASES = "coordination.k8s.io"


def attrs(
    verb: str,
    resource: str,
    *,
    group: str = "",
    sub: str = "",
    ns: str = "",
    name: str = "",
) -> RequestAttributes:
    return RequestAttributes(verb, group, resource, sub, ns, name)


def pod(node: str | None, name: str = "p") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if node is not None:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def node_obj(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}


def lease(name: str, holder: str | None) -> dict[str, Any]:
    spec = {"holderIdentity": holder} if holder is not None else {}
    return {"metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec}


ALLOWED_FOR_NODE = [
    attrs("get", "nodes", name="n2"),
    attrs("watch", "pods"),
    attrs("list", "services"),
    attrs("list", "endpoints", ns="default"),
    attrs("get", "configmaps", ns="default", name="cfg"),
    attrs("get", "secrets", ns="default", name="s"),
    attrs("list", "namespaces"),
    attrs("create", "nodes"),
    attrs("update", "nodes", name="n1"),
    attrs("patch", "nodes", sub="status", name="n1"),
    attrs("create", "leases", group=LEASES, ns="kube-node-lease"),
    attrs("update", "leases", group=LEASES, ns="kube-node-lease", name="n1"),
    attrs("get", "leases", group=LEASES, ns="kube-node-lease", name="n1"),
    attrs("patch", "pods", sub="status", ns="default", name="p"),
    attrs("update", "pods", sub="status", ns="default", name="p"),
    attrs("delete", "pods", ns="default", name="p"),
    attrs("create", "events", ns="default"),
    attrs("patch", "events", ns="default", name="e"),
    attrs("create", "events", group="events.k8s.io", ns="default"),
]

DENIED_FOR_NODE = [
    attrs("update", "nodes", name="n2"),
    attrs("patch", "nodes", sub="status", name="n2"),
    attrs("delete", "nodes", name="n2"),
    attrs("delete", "nodes", name="n1"),
    attrs("update", "leases", group=LEASES, ns="kube-node-lease", name="n2"),
    attrs("delete", "leases", group=LEASES, ns="kube-node-lease", name="n1"),
    attrs("create", "leases", group=LEASES, ns="kube-system"),
    attrs("create", "pods", ns="default"),
    attrs("update", "pods", ns="default", name="p"),
    attrs("patch", "pods", ns="default", name="p"),
    attrs("deletecollection", "pods", ns="default"),
    attrs("create", "pods", sub="binding", ns="default", name="p"),
    attrs("create", "secrets", ns="default"),
    attrs("update", "configmaps", ns="default", name="c"),
    attrs("create", "deployments", group="apps", ns="default"),
    attrs("list", "deployments", group="apps"),
    attrs("delete", "namespaces", name="default"),
    attrs("list", "events", ns="default"),
]


@pytest.mark.parametrize("request_attrs", ALLOWED_FOR_NODE, ids=repr)
def test_node_may_do_what_a_kubelet_does(request_attrs: RequestAttributes) -> None:
    assert authorize(NODE, request_attrs) is None


@pytest.mark.parametrize("request_attrs", DENIED_FOR_NODE, ids=repr)
def test_node_is_denied_everything_else(request_attrs: RequestAttributes) -> None:
    reason = authorize(NODE, request_attrs)
    assert reason is not None
    assert 'node "n1"' in reason


@pytest.mark.parametrize("request_attrs", ALLOWED_FOR_NODE + DENIED_FOR_NODE, ids=repr)
def test_admin_may_do_anything(request_attrs: RequestAttributes) -> None:
    assert authorize(ADMIN, request_attrs) is None
    assert admit(ADMIN, request_attrs, pod("other"), pod("other")) is None


@pytest.mark.parametrize("user", [BOB, FAKE_NODE])
def test_other_users_get_discovery_only(user: UserInfo) -> None:
    assert authorize(user, attrs("get", "pods", ns="default", name="p")) is not None
    assert authorize(user, attrs("list", "nodes")) is not None
    for path in ("/api", "/apis/apps/v1", "/openapi/v3", "/version", "/readyz"):
        assert authorize(user, RequestAttributes("get", "", "", path=path)) is None
    assert authorize(user, RequestAttributes("get", "", "", path="/metrics")) is not None
    assert authorize(user, RequestAttributes("post", "", "", path="/apis")) is not None
    # The supervisor's endpoints check the join token themselves.
    issue = RequestAttributes("post", "", "", path="/v1-k3py/node-certificate")
    assert authorize(user, issue) is None


def test_node_may_only_register_itself() -> None:
    create = attrs("create", "nodes")
    assert admit(NODE, create, node_obj("n1"), None) is None
    assert admit(NODE, create, node_obj("n2"), None) is not None
    labelled = node_obj("n1")
    labelled["metadata"]["labels"] = {"node-restriction.kubernetes.io/trusted": "yes"}
    assert admit(NODE, create, labelled, None) is not None
    labelled["metadata"]["labels"] = {"example.node-restriction.kubernetes.io/x": "1"}
    assert admit(NODE, create, labelled, None) is not None
    labelled["metadata"]["labels"] = {"kubernetes.io/hostname": "n1"}
    assert admit(NODE, create, labelled, None) is None


def test_node_may_not_change_its_own_taints() -> None:
    update = attrs("update", "nodes", name="n1")
    old = node_obj("n1", taints=[{"key": "k", "effect": "NoSchedule"}])
    assert admit(NODE, update, node_obj("n1", taints=[]), old) is not None
    assert admit(NODE, update, node_obj("n1", taints=old["spec"]["taints"]), old) is None


def test_node_pod_status_and_delete_only_for_pods_bound_to_it() -> None:
    status = attrs("patch", "pods", sub="status", ns="default", name="p")
    assert admit(NODE, status, pod("n1"), pod("n1")) is None
    assert admit(NODE, status, pod("n2"), pod("n2")) is not None
    assert admit(NODE, status, pod(None), pod(None)) is not None
    # Rebinding a pod to another node through its status is refused.
    assert admit(NODE, status, pod("n2"), pod("n1")) is not None
    delete = attrs("delete", "pods", ns="default", name="p")
    assert admit(NODE, delete, None, pod("n1")) is None
    assert admit(NODE, delete, None, pod("n2")) is not None


def test_node_lease_must_be_its_own_and_held_by_itself() -> None:
    create = attrs("create", "leases", group=LEASES, ns="kube-node-lease")
    assert admit(NODE, create, lease("n1", "n1"), None) is None
    assert admit(NODE, create, lease("n2", "n2"), None) is not None
    update = attrs("update", "leases", group=LEASES, ns="kube-node-lease", name="n1")
    assert admit(NODE, update, lease("n1", "n1"), lease("n1", "n1")) is None
    assert admit(NODE, update, lease("n1", "n2"), lease("n1", "n1")) is not None


def test_events_are_not_restricted_by_admission() -> None:
    event = {"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}}
    assert admit(NODE, attrs("create", "events", ns="default"), event, None) is None
