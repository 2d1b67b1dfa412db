"""The registry of served API resources: what discovery lists and what the REST layer routes.

One :class:`ResourceInfo` per served resource (``pods``, ``deployments``…) with its group,
version, kind, scope, short names, categories, verbs and subresources. It is the single source
for discovery documents, URL routing, storage keys and kubectl's ``api-resources``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceInfo:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "binding", "log", "exec", ...
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def storage_prefix(self, namespace: str | None = None) -> str:
        """``/registry/<group.>plural/[namespace/]`` — the datastore prefix of these objects."""
        resource = f"{self.group}/{self.plural}" if self.group else self.plural
        if self.namespaced and namespace:
            return f"/registry/{resource}/{namespace}/"
        return f"/registry/{resource}/"

    def storage_key(self, namespace: str | None, name: str) -> str:
        return self.storage_prefix(namespace) + name


_CORE = "v1"
_RBAC = "rbac.authorization.k8s.io"
# The review kinds are created only: the server answers them and stores nothing.
REVIEW_GROUPS = frozenset({"authorization.k8s.io", "authentication.k8s.io"})
RESOURCES: tuple[ResourceInfo, ...] = (
    ResourceInfo(
        "",
        _CORE,
        "Namespace",
        "namespaces",
        "namespace",
        False,
        ("ns",),
        (),
        ("status", "finalize"),
    ),
    ResourceInfo("", _CORE, "Node", "nodes", "node", False, ("no",), (), ("status", "proxy")),
    ResourceInfo(
        "",
        _CORE,
        "Pod",
        "pods",
        "pod",
        True,
        ("po",),
        ("all",),
        (
            "status",
            "binding",
            "log",
            "exec",
            "attach",
            "portforward",
            "proxy",
            "eviction",
            "ephemeralcontainers",
        ),
    ),
    ResourceInfo("", _CORE, "Binding", "bindings", "binding", True, (), (), (), ("create",)),
    ResourceInfo(
        "", _CORE, "Service", "services", "service", True, ("svc",), ("all",), ("status", "proxy")
    ),
    ResourceInfo("", _CORE, "Endpoints", "endpoints", "endpoints", True, ("ep",)),
    ResourceInfo("", _CORE, "ConfigMap", "configmaps", "configmap", True, ("cm",)),
    ResourceInfo("", _CORE, "Secret", "secrets", "secret", True),
    ResourceInfo("", _CORE, "Event", "events", "event", True, ("ev",)),
    ResourceInfo(
        "",
        _CORE,
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        True,
        ("sa",),
        (),
        ("token",),
    ),
    ResourceInfo(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        True,
        ("deploy",),
        ("all",),
        ("status", "scale"),
    ),
    ResourceInfo(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        True,
        ("rs",),
        ("all",),
        ("status", "scale"),
    ),
    ResourceInfo(
        "apps", "v1", "DaemonSet", "daemonsets", "daemonset", True, ("ds",), ("all",), ("status",)
    ),
    ResourceInfo(
        "apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", True
    ),
    ResourceInfo("batch", "v1", "Job", "jobs", "job", True, (), ("all",), ("status",)),
    ResourceInfo(
        "batch", "v1", "CronJob", "cronjobs", "cronjob", True, ("cj",), ("all",), ("status",)
    ),
    ResourceInfo("coordination.k8s.io", "v1", "Lease", "leases", "lease", True),
    ResourceInfo(_RBAC, "v1", "Role", "roles", "role", True),
    ResourceInfo(_RBAC, "v1", "ClusterRole", "clusterroles", "clusterrole", False),
    ResourceInfo(_RBAC, "v1", "RoleBinding", "rolebindings", "rolebinding", True),
    ResourceInfo(
        _RBAC, "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", False
    ),
    *(
        ResourceInfo(group, "v1", kind, kind.lower() + "s", kind.lower(), False, verbs=("create",))
        for group, kind in (
            ("authorization.k8s.io", "SelfSubjectAccessReview"),
            ("authorization.k8s.io", "SelfSubjectRulesReview"),
            ("authorization.k8s.io", "SubjectAccessReview"),
            ("authentication.k8s.io", "SelfSubjectReview"),
            ("authentication.k8s.io", "TokenReview"),
        )
    ),
    ResourceInfo(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        True,
        verbs=("create",),
    ),
    ResourceInfo(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        True,
        ("pdb",),
        (),
        ("status",),
    ),
    # Over-the-air updates (k3py.cluster.api.updateplan): rollouts of a bundle to nodes.
    ResourceInfo(
        "ota.k3py.io", "v1", "UpdatePlan", "updateplans", "updateplan", False, (), (), ("status",)
    ),
)


class GroupVersion(NamedTuple):
    group: str
    version: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def group_versions() -> tuple[GroupVersion, ...]:
    """Every served group/version, core first, in a stable order."""
    seen: dict[tuple[str, str], None] = {}
    for info in RESOURCES:
        seen.setdefault((info.group, info.version), None)
    return tuple(GroupVersion(g, v) for g, v in seen)


def resources_in(group: str, version: str) -> tuple[ResourceInfo, ...]:
    return tuple(r for r in RESOURCES if r.group == group and r.version == version)


def by_plural(group: str, version: str, plural: str) -> ResourceInfo | None:
    for info in RESOURCES:
        if info.group == group and info.version == version and info.plural == plural:
            return info
    return None


def by_kind(api_version: str, kind: str) -> ResourceInfo | None:
    for info in RESOURCES:
        if info.api_version == api_version and info.kind == kind:
            return info
    return None
