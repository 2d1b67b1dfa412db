"""Custom resources: what a CustomResourceDefinition serves, and the registry of them.

A stored ``apiextensions.k8s.io/v1`` CustomResourceDefinition becomes one
:class:`CustomResourceInfo` per served version: a :class:`~.resources.ResourceInfo` that also
carries the version's structural schema, its printer columns, its scale paths and the storage
version. All versions of one CRD share one storage prefix (``/registry/<group>/<plural>/``), so
the ``None`` conversion strategy is a change of ``apiVersion`` (:func:`convert`).
:class:`CustomResourceRegistry` holds the infos of one server; it is fed by the server's CRD
follower and consulted only after the static registry, so built-in kinds keep their path. A CRD
itself is checked by :mod:`.crdvalidation`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from k3py.cluster.api.resources import ALL_VERBS, GroupVersion, ResourceInfo

Object = dict[str, Any]

GROUP = "apiextensions.k8s.io"
CRD = ResourceInfo(
    GROUP,
    "v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    "customresourcedefinition",
    False,
    ("crd", "crds"),
    ("api-extensions",),
    ("status",),
)
# Set on every CRD: its objects are removed before the CRD goes (as kube-apiserver's finalizer).
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class ScalePaths:
    spec_replicas: str
    status_replicas: str
    label_selector: str = ""


@dataclass(frozen=True)
class CustomResourceInfo(ResourceInfo):
    crd_name: str = ""
    storage_version: str = ""
    schema: Object = field(default_factory=dict, compare=False, hash=False)
    columns: tuple[PrinterColumn, ...] = ()
    scale: ScalePaths | None = None

    @property
    def storage_api_version(self) -> str:
        return f"{self.group}/{self.storage_version}"


def convert(info: ResourceInfo, obj: Object) -> Object:
    """``obj`` as served through ``info``'s version (a copy only when the version differs)."""
    if isinstance(info, CustomResourceInfo) and obj.get("apiVersion") != info.api_version:
        return {**obj, "apiVersion": info.api_version}
    return obj


def to_storage(info: ResourceInfo, obj: Object) -> Object:
    """``obj`` as stored: custom objects in their storage version (a copy when it differs)."""
    if isinstance(info, CustomResourceInfo) and info.version != info.storage_version:
        return {**obj, "apiVersion": info.storage_api_version}
    return obj


def path_value(obj: Object, path: str) -> Any:
    """The value at a simple JSON path (``.spec.replicas``), or None."""
    current: Any = obj
    for part in path.strip().lstrip(".").split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def set_path_value(obj: Object, path: str, value: Any) -> None:
    """Set the value at a simple JSON path, making the objects on the way."""
    parts = path.strip().lstrip(".").split(".")
    current = obj
    for part in parts[:-1]:
        child = current.get(part)
        if not isinstance(child, dict):
            child = current[part] = {}
        current = child
    current[parts[-1]] = value


def scale_object(obj: Object, spec_replicas: Any, status: Object) -> Object:
    """An autoscaling/v1 Scale of ``obj`` with these replicas and status."""
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": spec_replicas},
        "status": status,
    }


def custom_scale(info: CustomResourceInfo, obj: Object) -> Object:
    """The autoscaling/v1 Scale of a custom object, read through its CRD's scale paths."""
    assert info.scale is not None
    replicas = path_value(obj, info.scale.spec_replicas)
    current = path_value(obj, info.scale.status_replicas)
    selector = path_value(obj, info.scale.label_selector) if info.scale.label_selector else None
    scale_status: Object = {"replicas": current if isinstance(current, int) else 0}
    if isinstance(selector, str) and selector:
        scale_status["selector"] = selector
    return scale_object(obj, replicas if isinstance(replicas, int) else 0, scale_status)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _columns(version: Object) -> tuple[PrinterColumn, ...]:
    columns = []
    for column in version.get("additionalPrinterColumns") or []:
        if not isinstance(column, dict):
            continue
        priority = column.get("priority", 0)
        columns.append(
            PrinterColumn(
                _str(column.get("name")),
                _str(column.get("type")) or "string",
                _str(column.get("jsonPath")),
                _str(column.get("description")),
                priority if isinstance(priority, int) else 0,
                _str(column.get("format")),
            )
        )
    return tuple(columns)


def infos_of(crd: Object) -> tuple[CustomResourceInfo, ...]:
    """The resources a (valid) CRD serves, one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = _str(spec.get("group"))
    kind = _str(names.get("kind"))
    plural = _str(names.get("plural"))
    versions = [v for v in spec.get("versions") or [] if isinstance(v, dict)]
    storage = next((_str(v.get("name")) for v in versions if v.get("storage")), "")
    infos = []
    for version in versions:
        if not version.get("served"):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        scale_paths = (
            ScalePaths(
                _str(scale.get("specReplicasPath")),
                _str(scale.get("statusReplicasPath")),
                _str(scale.get("labelSelectorPath")),
            )
            if isinstance(scale, dict)
            else None
        )
        infos.append(
            CustomResourceInfo(
                group,
                _str(version.get("name")),
                kind,
                plural,
                _str(names.get("singular")) or kind.lower(),
                spec.get("scope") == "Namespaced",
                tuple(names.get("shortNames") or ()),
                tuple(names.get("categories") or ()),
                tuple(s for s in ("status", "scale") if s in subresources),
                ALL_VERBS,
                crd_name=_str((crd.get("metadata") or {}).get("name")),
                storage_version=storage,
                schema=(version.get("schema") or {}).get("openAPIV3Schema") or {},
                columns=_columns(version),
                scale=scale_paths,
            )
        )
    return tuple(infos)


class CustomResourceRegistry:
    """The resources one server serves beyond the static registry: the CRD kind and the kinds
    of the established CRDs. ``generation`` grows with every change (documents built from the
    registry are cached against it)."""

    def __init__(self) -> None:
        self._crds: dict[str, tuple[CustomResourceInfo, ...]] = {}
        self._by_plural: dict[tuple[str, str, str], ResourceInfo] = {}
        self._by_kind: dict[tuple[str, str], ResourceInfo] = {}
        self.generation = 0
        # What is built from the registry (OpenAPI documents), dropped at every change.
        self.cache: dict[str, Any] = {}
        self._index()

    def _index(self) -> None:
        infos: list[ResourceInfo] = [CRD]
        for name in sorted(self._crds):
            infos.extend(self._crds[name])
        self._by_plural = {(i.group, i.version, i.plural): i for i in infos}
        self._by_kind = {(i.api_version, i.kind): i for i in infos}
        self.generation += 1
        self.cache.clear()

    def put(self, crd_name: str, infos: tuple[CustomResourceInfo, ...]) -> bool:
        """Serve ``infos`` for ``crd_name`` (replacing what it served); False if unchanged."""
        if self._crds.get(crd_name) == infos and all(
            a.schema == b.schema for a, b in zip(self._crds[crd_name], infos, strict=True)
        ):
            return False
        self._crds[crd_name] = infos
        self._index()
        return True

    def remove(self, crd_name: str) -> bool:
        if self._crds.pop(crd_name, None) is None:
            return False
        self._index()
        return True

    def served(self, crd_name: str) -> tuple[CustomResourceInfo, ...]:
        return self._crds.get(crd_name, ())

    def by_plural(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_plural.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        return self._by_kind.get((api_version, kind))

    def resources(self) -> tuple[ResourceInfo, ...]:
        return tuple(self._by_plural.values())

    def custom(self) -> tuple[CustomResourceInfo, ...]:
        return tuple(i for infos in self._crds.values() for i in infos)

    def storage_infos(self) -> tuple[CustomResourceInfo, ...]:
        """One info per CRD (its storage version where served): to visit every object once."""
        picked = []
        for infos in self._crds.values():
            storage = [i for i in infos if i.version == i.storage_version]
            if infos:
                picked.append(storage[0] if storage else infos[0])
        return tuple(picked)

    def group_versions(self) -> tuple[GroupVersion, ...]:
        """Served group/versions, the versions of a group in Kubernetes' priority order."""
        seen: dict[tuple[str, str], None] = {}
        for info in sorted(self.resources(), key=lambda i: (i.group, version_priority(i.version))):
            seen.setdefault((info.group, info.version), None)
        return tuple(GroupVersion(g, v) for g, v in seen)

    def resources_in(self, group: str, version: str) -> tuple[ResourceInfo, ...]:
        return tuple(i for i in self.resources() if i.group == group and i.version == version)


_KUBE_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key of Kubernetes' version priority: GA before beta before alpha, newer first, then
    other names alphabetically."""
    match = _KUBE_VERSION.match(version)
    if match is None:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0), version)
