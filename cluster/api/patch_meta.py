"""Strategic merge patch metadata of the served kinds, as data.

Kubernetes keeps this in Go struct tags (``patchStrategy:"merge" patchMergeKey:"name"``). Here
it is a table keyed by type name: for each type, the fields whose value is another described
type or carries a patch strategy. A field not listed has no metadata: its maps merge key by key
and its lists are replaced whole, exactly as for untagged Go fields. The root type of each kind
is the kind's own name (``STRUCTS["Deployment"]``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldMeta:
    """Patch metadata of one field: the type of its value (or list items), strategy, key."""

    type: str | None = None
    strategy: str = ""  # "merge", "replace", "retainKeys" or "merge,retainKeys"
    merge_key: str = ""

    @property
    def merges_lists(self) -> bool:
        return "merge" in self.strategy.split(",")

    @property
    def replaces(self) -> bool:
        return "replace" in self.strategy.split(",")


def _t(type_name: str) -> FieldMeta:
    return FieldMeta(type_name)


def _merge(merge_key: str = "", type_name: str | None = None, retain: bool = False) -> FieldMeta:
    return FieldMeta(type_name, "merge,retainKeys" if retain else "merge", merge_key)


_CONDITIONS = _merge("type")
_OBJECT = {"metadata": _t("ObjectMeta")}

STRUCTS: dict[str, dict[str, FieldMeta]] = {
    "ObjectMeta": {
        "finalizers": _merge(),
        "ownerReferences": _merge("uid"),
    },
    "PodTemplateSpec": {"metadata": _t("ObjectMeta"), "spec": _t("PodSpec")},
    "PodSpec": {
        "volumes": _merge("name", "Volume", retain=True),
        "initContainers": _merge("name", "Container"),
        "containers": _merge("name", "Container"),
        "ephemeralContainers": _merge("name", "Container"),
        "imagePullSecrets": _merge("name"),
        "hostAliases": _merge("ip"),
        "topologySpreadConstraints": _merge("topologyKey"),
        "schedulingGates": _merge("name"),
        "resourceClaims": _merge("name", retain=True),
    },
    "Container": {
        "ports": _merge("containerPort"),
        "env": _merge("name"),
        "volumeMounts": _merge("mountPath"),
        "volumeDevices": _merge("devicePath"),
    },
    "Volume": {},
    "PodStatus": {
        "conditions": _CONDITIONS,
        "podIPs": _merge("ip"),
        "hostIPs": _merge("ip"),
        "resourceClaimStatuses": _merge("name", retain=True),
    },
    "Pod": {**_OBJECT, "spec": _t("PodSpec"), "status": _t("PodStatus")},
    "Binding": dict(_OBJECT),
    "Node": {**_OBJECT, "spec": _t("NodeSpec"), "status": _t("NodeStatus")},
    "NodeSpec": {"podCIDRs": _merge()},
    "NodeStatus": {"conditions": _CONDITIONS, "addresses": _merge("type")},
    "Namespace": {**_OBJECT, "status": _t("NamespaceStatus")},
    "NamespaceStatus": {"conditions": _CONDITIONS},
    "Service": {**_OBJECT, "spec": _t("ServiceSpec"), "status": _t("ServiceStatus")},
    "ServiceSpec": {"ports": _merge("port")},
    "ServiceStatus": {"conditions": _CONDITIONS},
    "Endpoints": dict(_OBJECT),
    "ConfigMap": dict(_OBJECT),
    "Secret": dict(_OBJECT),
    "Event": dict(_OBJECT),
    "ServiceAccount": {**_OBJECT, "secrets": _merge("name")},
    "Deployment": {**_OBJECT, "spec": _t("DeploymentSpec"), "status": _t("DeploymentStatus")},
    "DeploymentSpec": {
        "template": _t("PodTemplateSpec"),
        "strategy": FieldMeta(None, "retainKeys"),
    },
    "DeploymentStatus": {"conditions": _CONDITIONS},
    "ReplicaSet": {**_OBJECT, "spec": _t("ReplicaSetSpec"), "status": _t("ReplicaSetStatus")},
    "ReplicaSetSpec": {"template": _t("PodTemplateSpec")},
    "ReplicaSetStatus": {"conditions": _CONDITIONS},
    "DaemonSet": {**_OBJECT, "spec": _t("DaemonSetSpec"), "status": _t("DaemonSetStatus")},
    "DaemonSetSpec": {"template": _t("PodTemplateSpec")},
    "DaemonSetStatus": {"conditions": _CONDITIONS},
    "ControllerRevision": dict(_OBJECT),
    "Job": {**_OBJECT, "spec": _t("JobSpec"), "status": _t("JobStatus")},
    "JobSpec": {"template": _t("PodTemplateSpec")},
    "JobStatus": {"conditions": _CONDITIONS},
    "Lease": dict(_OBJECT),
}

_NO_META = FieldMeta()


def field_meta(type_name: str | None, field: str) -> FieldMeta:
    """The metadata of ``field`` in ``type_name`` (none for unknown types or fields)."""
    if type_name is None:
        return _NO_META
    return STRUCTS.get(type_name, {}).get(field, _NO_META)
