"""The write rules of custom objects and of CustomResourceDefinitions.

For a custom object (a :class:`~k3py.cluster.api.customresources.CustomResourceInfo`): a new
object's status is dropped when its version has a status subresource, then unknown fields are
pruned, defaults applied and the result validated against the version's structural schema
along with the generic metadata rules (422 with kube-apiserver's causes). For a CRD: the
defaults kube-apiserver sets (conversion ``None``, singular and list kind), the cleanup
finalizer on create, an empty status on create, and the CRD's own validation. The engine calls
:func:`admit_create` and :func:`admit_update` for both; the built-in kinds never come here.
"""

from __future__ import annotations

import json
from typing import Any

from k3py.cluster.api import crdschema, status
from k3py.cluster.api.crdvalidation import validate_crd
from k3py.cluster.api.customresources import (
    CLEANUP_FINALIZER,
    CRD,
    CustomResourceInfo,
)
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.validation import validate_create, validate_update

Object = dict[str, Any]


def is_custom(info: ResourceInfo) -> bool:
    """Whether writes of ``info`` take this module's rules instead of the built-in ones."""
    return info is CRD or isinstance(info, CustomResourceInfo)


def _meta_only(info: ResourceInfo) -> ResourceInfo:
    # Built-in validators are chosen by kind: a custom kind named like one must not get them.
    return ResourceInfo(info.group, info.version, "", info.plural, info.singular, info.namespaced)


def prune(info: ResourceInfo, obj: Object) -> list[str]:
    """Drop the fields the version's schema does not specify; their paths (``.spec.x``)."""
    if not isinstance(info, CustomResourceInfo) or not info.schema:
        return []
    return crdschema.prune(info.schema, obj)


def _admit_custom(info: CustomResourceInfo, obj: Object) -> list[status.Cause]:
    if info.schema:
        crdschema.prune(info.schema, obj)
        crdschema.apply_defaults(info.schema, obj)
        return crdschema.validate(info.schema, obj)
    return []


def _default_crd(crd: Object) -> None:
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("conversion", {"strategy": "None"})
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    versions = spec.get("versions")
    for version in versions if isinstance(versions, list) else []:
        if isinstance(version, dict):
            version.setdefault("served", True)
            version.setdefault("storage", False)


def admit_create(info: ResourceInfo, obj: Object) -> list[status.Cause]:
    """Prepare a new custom object or CRD; the causes it is invalid for."""
    causes = validate_create(_meta_only(info), obj)
    if info is CRD:
        _default_crd(obj)
        finalizers = obj["metadata"].setdefault("finalizers", [])
        if CLEANUP_FINALIZER not in finalizers:
            finalizers.append(CLEANUP_FINALIZER)
        obj["status"] = {}
        return causes + validate_crd(obj)
    assert isinstance(info, CustomResourceInfo)
    if "status" in info.subresources:
        obj.pop("status", None)
    return causes + _admit_custom(info, obj)


def admit_update(info: ResourceInfo, obj: Object, old: Object) -> list[status.Cause]:
    """Prepare an update of a custom object or CRD; the causes it is invalid for."""
    causes = validate_update(_meta_only(info), obj, old)
    if info is CRD:
        _default_crd(obj)
        causes += validate_crd(obj)
        for key in ("group", "scope"):
            new_value = (obj.get("spec") or {}).get(key)
            if new_value != (old.get("spec") or {}).get(key):
                causes.append(
                    status.Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {json.dumps(new_value)}: field is immutable",
                        f"spec.{key}",
                    )
                )
        return causes
    assert isinstance(info, CustomResourceInfo)
    return causes + _admit_custom(info, obj)
