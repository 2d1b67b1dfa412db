"""Validation of the served kinds on create and update, with Kubernetes' causes.

:func:`validate_create` and :func:`validate_update` return the list of :class:`Cause` the real
API server would report in its 422 ``Invalid`` Status: field paths such as
``spec.template.spec.containers[0].image`` and messages in Kubernetes' words (``Required
value``, ``Invalid value: "Foo_bar": a lowercase RFC 1123 subdomain must consist of …``,
``field is immutable``). They expect an object that has been defaulted
(:func:`k3py.cluster.api.defaults.apply_defaults`), as the API server defaults before it
validates. This module holds the entry points, object metadata, label selectors and the small
kinds; the shared building blocks are in :mod:`validation_base`, pods and services in
:mod:`validation_pods`, workloads in :mod:`validation_workloads`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from k3py.cluster.api import names
from k3py.cluster.api.cronjob import validate_cron_job
from k3py.cluster.api.disruption import validate_pod_disruption_budget
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.status import Cause
from k3py.cluster.api.updateplan import validate_update_plan
from k3py.cluster.api.validation_base import (
    IMMUTABLE,
    MAX_SECRET_SIZE,
    Errors,
    GoText,
    KindValidator,
    Obj,
    check_protocol,
    entries,
    go_label_selector,
    go_value,
    selector_is_empty,
    validate_annotations,
    validate_label_selector,
    validate_labels,
)
from k3py.cluster.api.validation_pods import KIND_VALIDATORS as POD_KINDS
from k3py.cluster.api.validation_workloads import KIND_VALIDATORS as WORKLOAD_KINDS

__all__ = [
    "IMMUTABLE",
    "Errors",
    "GoText",
    "go_label_selector",
    "go_value",
    "selector_is_empty",
    "validate_create",
    "validate_label_selector",
    "validate_update",
]

# --- entry points -----------------------------------------------------------------------------


def validate_create(info: ResourceInfo, obj: Obj) -> list[Cause]:
    """Causes for which creating ``obj`` must fail (an empty list means it is valid)."""
    errs = Errors()
    validate_object_meta(errs, info, obj.get("metadata") or {})
    validator = {**_KIND_VALIDATORS, **POD_KINDS, **WORKLOAD_KINDS}.get(info.kind)
    if validator is not None:
        validator(errs, obj, None)
    return list(errs)


def validate_update(info: ResourceInfo, obj: Obj, old: Obj) -> list[Cause]:
    """Causes for which replacing ``old`` by ``obj`` must fail, immutable fields included."""
    errs = Errors()
    validate_object_meta_update(errs, info, obj.get("metadata") or {}, old.get("metadata") or {})
    validator = {**_KIND_VALIDATORS, **POD_KINDS, **WORKLOAD_KINDS}.get(info.kind)
    if validator is not None:
        validator(errs, obj, old)
    return list(errs)


# --- object metadata --------------------------------------------------------------------------

NameCheck = Callable[[str], list[str]]
NAME_CHECKS: dict[str, NameCheck] = {
    "Namespace": names.is_dns1123_label,
    "Service": names.is_dns1035_label,
    **dict.fromkeys(
        ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"), names.is_path_segment_name
    ),
}


def validate_object_meta(errs: Errors, info: ResourceInfo, meta: Obj) -> None:
    check = NAME_CHECKS.get(info.kind, names.is_dns1123_subdomain)
    generate_name = str(meta.get("generateName") or "")
    if generate_name:
        errs.each(
            "metadata.generateName", generate_name, check(names.mask_trailing_dash(generate_name))
        )
    name = str(meta.get("name") or "")
    if not name:
        errs.required("metadata.name", "name or generateName is required")
    else:
        errs.each("metadata.name", name, check(name))
    namespace = str(meta.get("namespace") or "")
    if info.namespaced:
        if not namespace:
            errs.required("metadata.namespace")
        else:
            errs.each("metadata.namespace", namespace, names.is_dns1123_label(namespace))
    elif namespace:
        errs.forbidden("metadata.namespace", "not allowed on this type")
    errs.nonnegative("metadata.generation", meta.get("generation"))
    _validate_common_meta(errs, meta)
    validate_finalizers(errs, "metadata.finalizers", meta.get("finalizers"))


def validate_object_meta_update(errs: Errors, info: ResourceInfo, meta: Obj, old: Obj) -> None:
    if old.get("deletionTimestamp"):
        added = [f for f in meta.get("finalizers") or [] if f not in (old.get("finalizers") or [])]
        if added:
            errs.forbidden(
                "metadata.finalizers",
                "no new finalizers can be added if the object is being deleted, found new "
                f"finalizers {go_value([str(f) for f in added])}",
            )
    generation, old_generation = meta.get("generation"), old.get("generation")
    decremented = (
        isinstance(generation, int)
        and isinstance(old_generation, int)
        and generation < old_generation
    )
    if decremented:
        errs.invalid("metadata.generation", generation, "must not be decremented")
    for key in ("name", "namespace"):
        errs.immutable(f"metadata.{key}", meta.get(key) or "", old.get(key) or "")
    # An update that omits uid or creationTimestamp gets the stored ones (see
    # defaults.prepare_for_update); only a different value is an error.
    for key in ("uid", "creationTimestamp"):
        if meta.get(key):
            errs.immutable(f"metadata.{key}", meta.get(key), old.get(key) or "")
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
        errs.immutable(f"metadata.{key}", meta.get(key), old.get(key))
    _validate_common_meta(errs, meta)
    validate_finalizers(errs, "metadata.finalizers", meta.get("finalizers"))


def _validate_common_meta(errs: Errors, meta: Obj) -> None:
    validate_labels(errs, "metadata.labels", meta.get("labels"))
    validate_annotations(errs, "metadata.annotations", meta.get("annotations"))
    _validate_owner_references(errs, "metadata.ownerReferences", meta.get("ownerReferences"))


def _validate_owner_references(errs: Errors, path: str, refs: Any) -> None:
    if not isinstance(refs, list):
        return
    controller = ""
    for ref in refs:
        if not isinstance(ref, dict):
            continue
        api_version = str(ref.get("apiVersion") or "")
        if not api_version.rsplit("/", 1)[-1]:
            errs.invalid(f"{path}.apiVersion", api_version, "version must not be empty")
        if not ref.get("kind"):
            errs.invalid(f"{path}.kind", "", "kind must not be empty")
        if not ref.get("name"):
            errs.invalid(f"{path}.name", "", "name must not be empty")
        if not ref.get("uid"):
            errs.invalid(f"{path}.uid", "", "uid must not be empty")
        if ref.get("controller") is True:
            current = f"{ref.get('kind') or ''}/{ref.get('name') or ''}"
            if controller:
                errs.invalid(
                    path,
                    GoText("[]v1.OwnerReference{...}"),
                    'Only one reference can have Controller set to true. Found "true" in '
                    f"references for {controller} and {current}",
                )
            else:
                controller = current


def validate_finalizers(errs: Errors, path: str, finalizers: Any) -> None:
    if not isinstance(finalizers, list):
        return
    for finalizer in finalizers:
        errs.each(path, str(finalizer), names.is_qualified_name(str(finalizer)))
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        errs.invalid(
            path,
            [str(f) for f in finalizers],
            "finalizer orphan and foregroundDeletion cannot be both set",
        )


# --- small kinds ------------------------------------------------------------------------------


def _validate_config_map(errs: Errors, obj: Obj, old: Obj | None) -> None:
    if old is not None:
        _immutable_data(errs, obj, old, ("data", "binaryData"))
    data = obj.get("data") or {}
    binary = obj.get("binaryData") or {}
    total = 0
    for key, value in data.items() if isinstance(data, dict) else ():
        errs.each(f"data[{key}]", key, names.is_config_key(key))
        if key in binary:
            errs.invalid(f"data[{key}]", key, "duplicate of key present in binaryData")
        total += len(str(value).encode())
    for key, value in binary.items() if isinstance(binary, dict) else ():
        errs.each(f"binaryData[{key}]", key, names.is_config_key(key))
        total += _decoded_size(errs, f"binaryData[{key}]", value)
    if total > MAX_SECRET_SIZE:
        errs.too_long("", MAX_SECRET_SIZE)


def _validate_secret(errs: Errors, obj: Obj, old: Obj | None) -> None:
    if old is not None:
        errs.immutable("type", obj.get("type") or "", old.get("type") or "")
        _immutable_data(errs, obj, old, ("data",))
    data = obj.get("data") or {}
    total = 0
    for key, value in data.items() if isinstance(data, dict) else ():
        errs.each(f"data[{key}]", key, names.is_config_key(key))
        total += _decoded_size(errs, f"data[{key}]", value)
    if total > MAX_SECRET_SIZE:
        errs.too_long("data", MAX_SECRET_SIZE)
    kind = obj.get("type") or "Opaque"
    required = {
        "kubernetes.io/dockercfg": [".dockercfg"],
        "kubernetes.io/dockerconfigjson": [".dockerconfigjson"],
        "kubernetes.io/ssh-auth": ["ssh-privatekey"],
        "kubernetes.io/tls": ["tls.crt", "tls.key"],
    }.get(kind, [])
    for key in required:
        if key not in data:
            errs.required(f"data[{key}]")
    if kind == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
        errs.required("data[username]")
        errs.required("data[password]")
    if kind == "kubernetes.io/service-account-token":
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if not annotations.get("kubernetes.io/service-account.name"):
            errs.required("metadata.annotations[kubernetes.io/service-account.name]")


def _immutable_data(errs: Errors, obj: Obj, old: Obj, fields: tuple[str, ...]) -> None:
    if old.get("immutable") is not True:
        return
    message = "field is immutable when `immutable` is set"
    if obj.get("immutable") is not True:
        errs.forbidden("immutable", message)
    for field in fields:
        if (obj.get(field) or {}) != (old.get(field) or {}):
            errs.forbidden(field, message)


def _decoded_size(errs: Errors, path: str, value: Any) -> int:
    if not isinstance(value, str):
        errs.invalid(path, GoText("<secret contents redacted>"), "must be a base64 string")
        return 0
    try:
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        errs.invalid(path, GoText("<secret contents redacted>"), "illegal base64 data")
        return 0


def _validate_namespace(errs: Errors, obj: Obj, old: Obj | None) -> None:
    for item in (obj.get("spec") or {}).get("finalizers") or []:
        finalizer = str(item)
        errs.each("spec.finalizers", finalizer, names.is_qualified_name(finalizer))
        if "/" not in finalizer and finalizer != "kubernetes":
            errs.invalid(
                "spec.finalizers",
                finalizer,
                "name is neither a standard finalizer name nor is it fully qualified",
            )


def _validate_node(errs: Errors, obj: Obj, old: Obj | None) -> None:
    spec = obj.get("spec") or {}
    for i, cidr in enumerate(spec.get("podCIDRs") or []):
        errs.each(f"spec.podCIDRs[{i}]", cidr, names.is_valid_cidr(str(cidr)))
    for i, taint in enumerate(entries(spec.get("taints"))):
        path = f"spec.taints[{i}]"
        key = str(taint.get("key") or "")
        if not key:
            errs.required(f"{path}.key")
        else:
            errs.each(f"{path}.key", key, names.is_qualified_name(key))
        value = str(taint.get("value") or "")
        errs.each(f"{path}.value", value, names.is_valid_label_value(value))
        effect = taint.get("effect")
        if not effect:
            errs.required(f"{path}.effect")
        elif effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            errs.not_supported(
                f"{path}.effect", effect, ["NoExecute", "NoSchedule", "PreferNoSchedule"]
            )
    if old is None:
        return
    old_spec = old.get("spec") or {}
    if old_spec.get("podCIDRs") and (spec.get("podCIDRs") or []) != old_spec["podCIDRs"]:
        errs.forbidden(
            "spec.podCIDRs", 'node updates may not change podCIDR except from "" to valid'
        )
    if old_spec.get("providerID") and spec.get("providerID") != old_spec["providerID"]:
        errs.forbidden(
            "spec.providerID", 'node updates may not change providerID except from "" to valid'
        )


def _validate_lease(errs: Errors, obj: Obj, old: Obj | None) -> None:
    spec = obj.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    if isinstance(duration, int) and duration <= 0:
        errs.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    errs.nonnegative("spec.leaseTransitions", spec.get("leaseTransitions"))


def _validate_event(errs: Errors, obj: Obj, old: Obj | None) -> None:
    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
    involved = str((obj.get("involvedObject") or {}).get("namespace") or "")
    if involved:
        mismatch = involved != namespace
    else:
        mismatch = namespace not in ("", "default") and not obj.get("eventTime")
    if mismatch:
        errs.invalid("involvedObject.namespace", involved, "does not match event.namespace")
    if obj.get("eventTime"):
        for field in ("reportingComponent", "reportingInstance", "action", "reason"):
            if not obj.get(field):
                errs.required(field)


def _validate_endpoints(errs: Errors, obj: Obj, old: Obj | None) -> None:
    for i, subset in enumerate(entries(obj.get("subsets"))):
        for field in ("addresses", "notReadyAddresses"):
            for j, address in enumerate(subset.get(field) or []):
                ip = str((address or {}).get("ip") or "")
                errs.each(f"subsets[{i}].{field}[{j}].ip", ip, names.is_valid_ip(ip))
        ports = subset.get("ports") or []
        for j, port in enumerate(entries(ports)):
            path = f"subsets[{i}].ports[{j}]"
            if len(ports) > 1 and not port.get("name"):
                errs.required(f"{path}.name")
            errs.each(f"{path}.port", port.get("port"), names.is_valid_port_num(port.get("port")))
            check_protocol(errs, f"{path}.protocol", port.get("protocol"))


def _validate_binding(errs: Errors, obj: Obj, old: Obj | None) -> None:
    target = obj.get("target") or {}
    if target.get("kind") not in (None, "", "Node"):
        errs.not_supported("target.kind", target.get("kind"), ["Node", "<empty>"])
    if not target.get("name"):
        errs.required("target.name")


_KIND_VALIDATORS: dict[str, KindValidator] = {
    "UpdatePlan": validate_update_plan,
    "CronJob": validate_cron_job,
    "PodDisruptionBudget": validate_pod_disruption_budget,
    "ConfigMap": _validate_config_map,
    "Secret": _validate_secret,
    "Namespace": _validate_namespace,
    "Node": _validate_node,
    "Lease": _validate_lease,
    "Event": _validate_event,
    "Endpoints": _validate_endpoints,
    "Binding": _validate_binding,
}
