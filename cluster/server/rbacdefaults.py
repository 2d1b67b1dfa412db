"""The ClusterRoles and ClusterRoleBindings every cluster has from its first start.

As kube-apiserver's bootstrap policy: ``cluster-admin`` (bound to ``system:masters``), the
user-facing ``admin``, ``edit`` and ``view`` (``admin`` and ``edit`` aggregate the roles
labelled ``rbac.authorization.k8s.io/aggregate-to-admin`` / ``-edit``, so a CRD's roles can
join them), and the ``system:basic-user``, ``system:discovery`` and
``system:public-info-viewer`` roles every authenticated user holds. The scheduler, the
controllers and the admin credentials run as ``system:masters``; nodes are authorized by the
Node authorizer, so no ``system:node`` binding is made (as Kubernetes since 1.8). Missing
objects are created at each start; existing ones are left as their owner changed them.
"""

from __future__ import annotations

from typing import Any

GROUP = "rbac.authorization.k8s.io"
API_VERSION = f"{GROUP}/v1"
AGGREGATE_TO = f"{GROUP}/aggregate-to-"
Object = dict[str, Any]

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_CORE_VIEW = [
    "configmaps",
    "endpoints",
    "persistentvolumeclaims",
    "persistentvolumeclaims/status",
    "pods",
    "pods/log",
    "pods/status",
    "replicationcontrollers",
    "replicationcontrollers/scale",
    "replicationcontrollers/status",
    "resourcequotas",
    "resourcequotas/status",
    "services",
    "services/status",
    "serviceaccounts",
    "limitranges",
    "events",
]
_APPS = [
    "controllerrevisions",
    "daemonsets",
    "daemonsets/status",
    "deployments",
    "deployments/scale",
    "deployments/status",
    "replicasets",
    "replicasets/scale",
    "replicasets/status",
    "statefulsets",
    "statefulsets/scale",
    "statefulsets/status",
]
_BATCH = ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> Object:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def _meta(name: str, labels: dict[str, str] | None = None) -> Object:
    return {
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", **(labels or {})},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    }


def _role(
    name: str,
    rules: list[Object],
    *,
    labels: dict[str, str] | None = None,
    aggregate_from: str = "",
) -> Object:
    role: Object = {
        "apiVersion": API_VERSION,
        "kind": "ClusterRole",
        "metadata": _meta(name, labels),
        "rules": rules,
    }
    if aggregate_from:
        role["aggregationRule"] = {
            "clusterRoleSelectors": [{"matchLabels": {AGGREGATE_TO + aggregate_from: "true"}}]
        }
    return role


def _binding(name: str, role: str, groups: list[str]) -> Object:
    return {
        "apiVersion": API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": _meta(name),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups],
    }


def cluster_roles() -> list[Object]:
    view = [
        _rule([""], [*_CORE_VIEW, "namespaces", "namespaces/status"], _READ),
        _rule(["apps"], _APPS, _READ),
        _rule(["batch"], _BATCH, _READ),
        _rule(["autoscaling"], ["horizontalpodautoscalers"], _READ),
        _rule(["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"], _READ),
        _rule(["discovery.k8s.io"], ["endpointslices"], _READ),
        _rule(["networking.k8s.io"], ["ingresses", "networkpolicies"], _READ),
    ]
    edit = [
        _rule([""], ["secrets"], [*_READ, *_WRITE]),
        _rule([""], [r for r in _CORE_VIEW if "/" not in r or r.endswith("/scale")], _WRITE),
        _rule(
            [""],
            ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "services/proxy"],
            ["create", "get"],
        ),
        _rule([""], ["pods/eviction", "serviceaccounts/token"], ["create"]),
        _rule(["apps"], [r for r in _APPS if not r.endswith("/status")], _WRITE),
        _rule(["batch"], ["cronjobs", "jobs"], _WRITE),
        _rule(["autoscaling"], ["horizontalpodautoscalers"], _WRITE),
        _rule(["policy"], ["poddisruptionbudgets"], _WRITE),
        _rule(["discovery.k8s.io"], ["endpointslices"], _WRITE),
        _rule(["networking.k8s.io"], ["ingresses", "networkpolicies"], _WRITE),
        _rule(["coordination.k8s.io"], ["leases"], [*_READ, *_WRITE]),
    ]
    admin = [
        _rule([GROUP], ["rolebindings", "roles"], [*_READ, *_WRITE]),
        _rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
    ]
    everything = [
        _rule(["*"], ["*"], ["*"]),
        {"nonResourceURLs": ["*"], "verbs": ["*"]},
    ]
    discovery_urls = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"]
    info_urls = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
    return [
        _role("cluster-admin", everything),
        _role("system:aggregate-to-view", view, labels={AGGREGATE_TO + "view": "true"}),
        _role("system:aggregate-to-edit", edit, labels={AGGREGATE_TO + "edit": "true"}),
        _role("system:aggregate-to-admin", admin, labels={AGGREGATE_TO + "admin": "true"}),
        _role("view", [], aggregate_from="view", labels={AGGREGATE_TO + "edit": "true"}),
        _role("edit", [], aggregate_from="edit", labels={AGGREGATE_TO + "admin": "true"}),
        _role("admin", [], aggregate_from="admin"),
        _role(
            "system:basic-user",
            [
                _rule(
                    ["authorization.k8s.io"],
                    ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    ["create"],
                ),
                _rule(["authentication.k8s.io"], ["selfsubjectreviews"], ["create"]),
            ],
        ),
        _role(
            "system:auth-delegator",  # for authenticating proxies: who is this, may they?
            [
                _rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
                _rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"]),
            ],
        ),
        _role("system:discovery", [{"nonResourceURLs": discovery_urls, "verbs": ["get"]}]),
        _role("system:public-info-viewer", [{"nonResourceURLs": info_urls, "verbs": ["get"]}]),
    ]


def cluster_role_bindings() -> list[Object]:
    authenticated = ["system:authenticated"]
    return [
        _binding("cluster-admin", "cluster-admin", ["system:masters"]),
        _binding("system:basic-user", "system:basic-user", authenticated),
        _binding("system:discovery", "system:discovery", authenticated),
        _binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            [*authenticated, "system:unauthenticated"],
        ),
    ]
