"""RBAC rule matching, aggregation and escalation checks, without a server."""

from __future__ import annotations

from typing import Any

from k3py.cluster.server.auth import RequestAttributes, UserInfo
from k3py.cluster.server.rbac import RBACAuthorizer, covers, escalation_refusal, rule_allows
from k3py.cluster.server.rbacdefaults import cluster_role_bindings, cluster_roles

ROBOT = UserInfo("system:serviceaccount:team:robot", ("system:serviceaccounts",))


def attrs(verb: str, resource: str, sub: str = "", ns: str = "team", name: str = "") -> Any:
    return RequestAttributes(verb, "", resource, sub, ns, name)


def test_rules_match_as_kubernetes_matches_them() -> None:
    rule = {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}
    assert rule_allows(rule, attrs("get", "pods"))
    assert rule_allows(rule, attrs("get", "pods", "log"))
    assert not rule_allows(rule, attrs("get", "pods", "exec"))
    assert not rule_allows(rule, attrs("delete", "pods"))
    named = {**rule, "resourceNames": ["web"]}
    assert rule_allows(named, attrs("get", "pods", name="web"))
    assert not rule_allows(named, attrs("list", "pods"))
    scale = {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"]}
    assert rule_allows(scale, attrs("update", "deployments", "scale"))
    urls = {"nonResourceURLs": ["/healthz", "/api/*"], "verbs": ["get"]}
    assert rule_allows(urls, RequestAttributes("get", "", "", path="/api/v1"))
    assert not rule_allows(urls, RequestAttributes("get", "", "", path="/metrics"))
    assert covers(
        [scale], {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]}, "x"
    )


def _authorizer(*objects: dict[str, Any]) -> RBACAuthorizer:
    authorizer = RBACAuthorizer()
    for obj in [*cluster_roles(), *cluster_role_bindings(), *objects]:
        meta = obj["metadata"]
        plural = {
            "Role": "roles",
            "ClusterRole": "clusterroles",
            "RoleBinding": "rolebindings",
            "ClusterRoleBinding": "clusterrolebindings",
        }[obj["kind"]]
        authorizer._objects[(plural, meta.get("namespace", ""), meta["name"])] = obj
    return authorizer


def test_aggregated_roles_and_namespaced_bindings() -> None:
    binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "team"},
        "roleRef": {"kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot"}],
    }
    authorizer = _authorizer(binding)
    assert authorizer.allows(ROBOT, attrs("list", "pods"))  # edit aggregates view
    assert authorizer.allows(ROBOT, attrs("create", "secrets"))
    assert not authorizer.allows(ROBOT, attrs("list", "pods", ns="other"))
    assert not authorizer.allows(ROBOT, attrs("create", "rolebindings"))  # admin only


def test_escalation_needs_the_permissions_granted() -> None:
    rule = {"apiGroups": [""], "resources": ["pods", "roles"], "verbs": ["get"]}
    reader: dict[str, Any] = {
        "kind": "Role",
        "metadata": {"name": "r", "namespace": "team"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "roles"], "verbs": ["get"]}],
    }
    binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "team"},
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "team"}],
    }
    authorizer = _authorizer(reader, binding)
    held = {"kind": "Role", "metadata": {"name": "x"}, "rules": [rule]}
    assert escalation_refusal(authorizer, ROBOT, held, "team") is None
    more = {
        "kind": "Role",
        "metadata": {"name": "y"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }
    assert "not currently held" in str(escalation_refusal(authorizer, ROBOT, more, "team"))
    admin_binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "z"},
        "roleRef": {"kind": "ClusterRole", "name": "admin"},
    }
    assert escalation_refusal(authorizer, ROBOT, admin_binding, "team") is not None
