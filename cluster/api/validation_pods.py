"""Validation of Pods, pod templates and Services, in the API server's words.

:func:`validate_pod_spec` checks a PodSpec wherever it appears (a Pod or the template of a
workload): containers, ports, environment, volumes and their mounts, resources, restart and DNS
policy, tolerations. A Pod update may change only what Kubernetes lets it change (container
images, ``activeDeadlineSeconds``, added tolerations); anything else is refused with the API
server's "pod updates may not change fields other than …" message. Services are checked for
their ports, type, selector and IPs, and keep their cluster IP once it is set.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from k3py.cluster.api import names
from k3py.cluster.api.defaults import VOLUME_SOURCES
from k3py.cluster.api.quantity import Quantity, QuantityError
from k3py.cluster.api.validation_base import (
    Errors,
    GoText,
    KindValidator,
    Obj,
    check_protocol,
    entries,
    go_value,
    validate_labels,
)

POD_UPDATABLE_FIELDS = (
    "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
    "`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)
_MAX_INT32 = 2147483647


def validate_pod_spec(errs: Errors, path: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        errs.required(path)
        return
    volumes = _validate_volumes(errs, f"{path}.volumes", spec.get("volumes"))
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        errs.required(f"{path}.containers")
        containers = []
    seen: set[str] = set()
    init = entries(spec.get("initContainers"))
    for field, items in (("initContainers", init), ("containers", entries(containers))):
        for i, container in enumerate(items):
            _validate_container(errs, f"{path}.{field}[{i}]", container, volumes, seen)
    restart = spec.get("restartPolicy")
    if not restart:
        errs.required(f"{path}.restartPolicy")
    elif restart not in ("Always", "OnFailure", "Never"):
        errs.not_supported(f"{path}.restartPolicy", restart, ["Always", "OnFailure", "Never"])
    dns = spec.get("dnsPolicy")
    if not dns:
        errs.required(f"{path}.dnsPolicy")
    elif dns not in ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"):
        errs.not_supported(
            f"{path}.dnsPolicy", dns, ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]
        )
    elif dns == "None" and not spec.get("dnsConfig"):
        errs.required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None")
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or not 1 <= deadline <= _MAX_INT32):
        errs.invalid(
            f"{path}.activeDeadlineSeconds",
            deadline,
            f"must be between 1 and {_MAX_INT32}, inclusive",
        )
    validate_labels(errs, f"{path}.nodeSelector", spec.get("nodeSelector"))
    for field, check in (
        ("serviceAccountName", names.is_dns1123_subdomain),
        ("nodeName", names.is_dns1123_subdomain),
        ("hostname", names.is_dns1123_label),
        ("subdomain", names.is_dns1123_label),
    ):
        value = spec.get(field)
        if value:
            errs.each(f"{path}.{field}", value, check(str(value)))
    _validate_tolerations(errs, f"{path}.tolerations", spec.get("tolerations"))


def _check_unique_label(errs: Errors, path: str, name: str, seen: set[str]) -> None:
    """A name that must be a DNS-1123 label and unique among ``seen`` (which it joins)."""
    errs.each(path, name, names.is_dns1123_label(name))
    if name in seen:
        errs.duplicate(path, name)
    seen.add(name)


def _validate_volumes(errs: Errors, path: str, volumes: Any) -> set[str]:
    found: set[str] = set()
    for i, volume in enumerate(entries(volumes)):
        item = f"{path}[{i}]"
        name = str(volume.get("name") or "")
        if not name:
            errs.required(f"{item}.name")
        else:
            _check_unique_label(errs, f"{item}.name", name, found)
        sources = [s for s in VOLUME_SOURCES if volume.get(s) is not None]
        if not sources:
            errs.required(item, "must specify a volume type")
        for extra in sources[1:]:
            errs.forbidden(f"{item}.{extra}", "may not specify more than 1 volume type")
        claim = volume.get("persistentVolumeClaim")
        if isinstance(claim, dict) and not claim.get("claimName"):
            errs.required(f"{item}.persistentVolumeClaim.claimName")
        host_path = volume.get("hostPath")
        if isinstance(host_path, dict) and not host_path.get("path"):
            errs.required(f"{item}.hostPath.path")
    return found


def _validate_container(
    errs: Errors, path: str, container: Any, volumes: set[str], seen: set[str]
) -> None:
    if not isinstance(container, dict):
        errs.invalid(path, container, "must be an object")
        return
    name = str(container.get("name") or "")
    if not name:
        errs.required(f"{path}.name")
    else:
        _check_unique_label(errs, f"{path}.name", name, seen)
    image = container.get("image")
    if not image:
        errs.required(f"{path}.image")
    elif str(image) != str(image).strip():
        errs.invalid(f"{path}.image", image, "must not have leading or trailing whitespace")
    policy = container.get("imagePullPolicy")
    if not policy:
        errs.required(f"{path}.imagePullPolicy")
    elif policy not in ("Always", "IfNotPresent", "Never"):
        errs.not_supported(f"{path}.imagePullPolicy", policy, ["Always", "IfNotPresent", "Never"])
    _validate_ports(errs, f"{path}.ports", container.get("ports"))
    _validate_env(errs, f"{path}.env", container.get("env"))
    _validate_mounts(errs, f"{path}.volumeMounts", container.get("volumeMounts"), volumes)
    _validate_resources(errs, f"{path}.resources", container.get("resources"))
    policy = container.get("terminationMessagePolicy")
    if policy and policy not in ("File", "FallbackToLogsOnError"):
        errs.not_supported(
            f"{path}.terminationMessagePolicy", policy, ["File", "FallbackToLogsOnError"]
        )


def _validate_ports(errs: Errors, path: str, ports: Any) -> None:
    port_names: set[str] = set()
    for i, port in enumerate(entries(ports)):
        item = f"{path}[{i}]"
        name = str(port.get("name") or "")
        if name:
            problems = names.is_valid_port_name(name)
            if problems:
                errs.each(f"{item}.name", name, problems)
            elif name in port_names:
                errs.duplicate(f"{item}.name", name)
            port_names.add(name)
        container_port = port.get("containerPort")
        if not container_port:
            errs.required(f"{item}.containerPort")
        else:
            errs.each(
                f"{item}.containerPort", container_port, names.is_valid_port_num(container_port)
            )
        if port.get("hostPort"):
            errs.each(
                f"{item}.hostPort", port["hostPort"], names.is_valid_port_num(port["hostPort"])
            )
        check_protocol(errs, f"{item}.protocol", port.get("protocol"))


def _validate_env(errs: Errors, path: str, env: Any) -> None:
    for i, var in enumerate(entries(env)):
        item = f"{path}[{i}]"
        name = str(var.get("name") or "")
        if not name:
            errs.required(f"{item}.name")
        else:
            errs.each(f"{item}.name", name, names.is_env_var_name(name))
        value_from = var.get("valueFrom")
        if isinstance(value_from, dict):
            sources = [
                k
                for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")
                if value_from.get(k)
            ]
            if var.get("value"):
                errs.invalid(
                    f"{item}.valueFrom",
                    GoText(""),
                    "may not be specified when `value` is not empty",
                )
            if len(sources) > 1:
                errs.invalid(
                    f"{item}.valueFrom",
                    GoText(""),
                    "may not have more than one field specified at a time",
                )


def _validate_mounts(errs: Errors, path: str, mounts: Any, volumes: set[str]) -> None:
    paths: set[str] = set()
    for i, mount in enumerate(entries(mounts)):
        item = f"{path}[{i}]"
        name = str(mount.get("name") or "")
        if not name:
            errs.required(f"{item}.name")
        if name not in volumes:
            errs.not_found(f"{item}.name", name)
        mount_path = str(mount.get("mountPath") or "")
        if not mount_path:
            errs.required(f"{item}.mountPath")
        if mount_path in paths:
            errs.invalid(f"{item}.mountPath", mount_path, "must be unique")
        paths.add(mount_path)


def _validate_resources(errs: Errors, path: str, resources: Any) -> None:
    if not isinstance(resources, dict):
        return
    parsed: dict[str, dict[str, Quantity]] = {"limits": {}, "requests": {}}
    for kind in ("limits", "requests"):
        values = resources.get(kind)
        for name, value in values.items() if isinstance(values, dict) else []:
            item = f"{path}.{kind}[{name}]"
            errs.each(item, name, names.is_qualified_name(str(name)))
            try:
                quantity = Quantity.parse(value)
            except QuantityError as exc:
                errs.invalid(item, str(value), str(exc))
                continue
            if quantity.value < 0:
                errs.invalid(item, str(quantity), "must be greater than or equal to 0")
            parsed[kind][name] = quantity
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and request.value > limit.value:
            errs.invalid(
                f"{path}.requests",
                str(request),
                f"must be less than or equal to {name} limit of {limit}",
            )


def _validate_tolerations(errs: Errors, path: str, tolerations: Any) -> None:
    for i, toleration in enumerate(entries(tolerations)):
        item = f"{path}[{i}]"
        key = str(toleration.get("key") or "")
        if key:
            errs.each(f"{item}.key", key, names.is_qualified_name(key))
        operator = toleration.get("operator") or "Equal"
        if not key and operator != "Exists":
            errs.invalid(
                f"{item}.operator",
                operator,
                'operator must be Exists when `key` is empty, which means "match all values and '
                'all keys"',
            )
        if operator == "Exists" and toleration.get("value"):
            errs.invalid(
                f"{item}.operator",
                toleration["value"],
                "value must be empty when `operator` is 'Exists'",
            )
        elif operator not in ("Equal", "Exists"):
            errs.not_supported(f"{item}.operator", operator, ["Equal", "Exists"])
        elif operator == "Equal":
            value = str(toleration.get("value") or "")
            errs.each(f"{item}.value", value, names.is_valid_label_value(value))
        effect = toleration.get("effect")
        if toleration.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.invalid(
                f"{item}.effect",
                effect or "",
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            )
        if effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            errs.not_supported(
                f"{item}.effect", effect, ["NoExecute", "NoSchedule", "PreferNoSchedule"]
            )


# --- pods ---------------------------------------------------------------------------------------


def _validate_pod(errs: Errors, pod: Obj, old: Obj | None) -> None:
    spec = pod.get("spec")
    validate_pod_spec(errs, "spec", spec)
    if old is None:
        if isinstance(spec, dict) and spec.get("ephemeralContainers"):
            errs.forbidden("spec.ephemeralContainers", "cannot be set on create")
        return
    _validate_pod_update(errs, spec if isinstance(spec, dict) else {}, old.get("spec") or {})


def _validate_pod_update(errs: Errors, spec: Obj, old: Obj) -> None:
    new_containers = spec.get("containers") or []
    old_containers = old.get("containers") or []
    if len(new_containers) != len(old_containers):
        errs.forbidden("spec.containers", "pod updates may not add or remove containers")
        return
    if len(spec.get("initContainers") or []) != len(old.get("initContainers") or []):
        errs.forbidden("spec.initContainers", "pod updates may not add or remove containers")
        return
    old_deadline = old.get("activeDeadlineSeconds")
    new_deadline = spec.get("activeDeadlineSeconds")
    if old_deadline is not None:
        if new_deadline is None:
            errs.invalid(
                "spec.activeDeadlineSeconds",
                None,
                "must not update from a positive integer to nil value",
            )
        elif isinstance(new_deadline, int) and new_deadline > old_deadline:
            errs.invalid(
                "spec.activeDeadlineSeconds",
                new_deadline,
                "must be less than or equal to previous value",
            )
    for i, toleration in enumerate(old.get("tolerations") or []):
        if not _toleration_kept(toleration, spec.get("tolerations") or []):
            errs.forbidden(
                f"spec.tolerations[{i}]",
                "existing toleration can not be modified except its tolerationSeconds",
            )
    munged: dict[str, Any] = copy.deepcopy(dict(spec))
    for field in ("containers", "initContainers"):
        for new, before in zip(munged.get(field) or [], old.get(field) or [], strict=False):
            if isinstance(new, dict) and isinstance(before, dict):
                new["image"] = before.get("image")
    munged.pop("activeDeadlineSeconds", None)
    if old_deadline is not None:
        munged["activeDeadlineSeconds"] = old_deadline
    if "tolerations" in old:
        munged["tolerations"] = old["tolerations"]
    else:
        munged.pop("tolerations", None)
    grace = old.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 0 and munged.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = grace
    if munged != dict(old):
        errs.forbidden(
            "spec",
            f"pod updates may not change fields other than {POD_UPDATABLE_FIELDS}\n"
            + _spec_diff(dict(old), munged),
        )


def _toleration_kept(toleration: Any, tolerations: list[Any]) -> bool:
    if not isinstance(toleration, dict):
        return True
    for candidate in tolerations:
        if not isinstance(candidate, dict):
            continue
        same = {k: v for k, v in candidate.items() if k != "tolerationSeconds"}
        if same == {k: v for k, v in toleration.items() if k != "tolerationSeconds"}:
            return True
    return False


def _spec_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    lines = ["  core.PodSpec{"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if key in old:
                lines.append(f"-\t{key}: {json.dumps(old[key], sort_keys=True)},")
            if key in new:
                lines.append(f"+\t{key}: {json.dumps(new[key], sort_keys=True)},")
    lines.append("  }")
    return "\n".join(lines) + "\n"


# --- services -------------------------------------------------------------------------------------

_SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]


def _validate_service(errs: Errors, service: Obj, old: Obj | None) -> None:
    spec = service.get("spec") if isinstance(service.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    kind = spec.get("type")
    headless = spec.get("clusterIP") == "None"
    ports = spec.get("ports") if isinstance(spec.get("ports"), list) else []
    assert isinstance(ports, list)
    if not ports and not headless and kind != "ExternalName":
        errs.required("spec.ports")
    if not kind:
        errs.required("spec.type")
    elif kind not in _SERVICE_TYPES:
        errs.not_supported("spec.type", kind, _SERVICE_TYPES)
    if kind == "ExternalName":
        if spec.get("clusterIPs") or (spec.get("clusterIP") not in (None, "", "None")):
            errs.forbidden("spec.clusterIPs", "may not be set for ExternalName services")
        cname = str(spec.get("externalName") or "").removesuffix(".")
        if not cname:
            errs.required("spec.externalName")
        else:
            errs.each("spec.externalName", cname, names.is_dns1123_subdomain(cname))
    port_names: set[str] = set()
    pairs: set[tuple[Any, Any]] = set()
    for i, port in enumerate(entries(ports)):
        item = f"spec.ports[{i}]"
        name = str(port.get("name") or "")
        if len(ports) > 1 and not name:
            errs.required(f"{item}.name")
        elif name:
            _check_unique_label(errs, f"{item}.name", name, port_names)
        errs.each(f"{item}.port", port.get("port"), names.is_valid_port_num(port.get("port")))
        check_protocol(errs, f"{item}.protocol", port.get("protocol"))
        target = port.get("targetPort")
        if isinstance(target, str):
            errs.each(f"{item}.targetPort", target, names.is_valid_port_name(target))
        elif target is not None:
            errs.each(f"{item}.targetPort", target, names.is_valid_port_num(target))
        if port.get("nodePort") and kind == "ClusterIP":
            errs.forbidden(f"{item}.nodePort", "may not be used when `type` is 'ClusterIP'")
        pair = (port.get("protocol"), port.get("port"))
        if pair in pairs:
            errs.duplicate(item, GoText(_go_service_port(port)))
        pairs.add(pair)
    validate_labels(errs, "spec.selector", spec.get("selector"))
    affinity = spec.get("sessionAffinity")
    if not affinity:
        errs.required("spec.sessionAffinity")
    elif affinity not in ("ClientIP", "None"):
        errs.not_supported("spec.sessionAffinity", affinity, ["ClientIP", "None"])
    for i, ip in enumerate(spec.get("clusterIPs") or []):
        if ip != "None":
            errs.each(f"spec.clusterIPs[{i}]", ip, names.is_valid_ip(str(ip)))
    for i, ip in enumerate(spec.get("externalIPs") or []):
        errs.each(f"spec.externalIPs[{i}]", ip, names.is_valid_ip(str(ip)))
    policy = spec.get("ipFamilyPolicy")
    if policy and policy not in ("SingleStack", "PreferDualStack", "RequireDualStack"):
        errs.not_supported(
            "spec.ipFamilyPolicy", policy, ["PreferDualStack", "RequireDualStack", "SingleStack"]
        )
    for i, family in enumerate(spec.get("ipFamilies") or []):
        if family not in ("IPv4", "IPv6"):
            errs.not_supported(f"spec.ipFamilies[{i}]", family, ["IPv4", "IPv6"])
    if old is not None:
        _validate_service_update(errs, spec, old.get("spec") or {})


def _validate_service_update(errs: Errors, spec: Obj, old: Obj) -> None:
    if "ExternalName" in (spec.get("type"), old.get("type")):
        return
    if spec.get("clusterIP") == "None" and old.get("clusterIP") == "None":
        return
    old_ips = old.get("clusterIPs") or ([old["clusterIP"]] if old.get("clusterIP") else [])
    new_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    if not old_ips:
        return
    if not new_ips:
        errs.invalid("spec.clusterIPs[0]", list(new_ips), "primary clusterIP can not be unset")
        return
    for i, (before, after) in enumerate(zip(old_ips, new_ips, strict=False)):
        if before != after:
            errs.invalid(
                f"spec.clusterIPs[{i}]", [str(ip) for ip in new_ips], "may not change once set"
            )


def _go_service_port(port: Obj) -> str:
    return (
        f'core.ServicePort{{Name:"", Protocol:{go_value(str(port.get("protocol") or ""))}, '
        f"AppProtocol:(*string)(nil), Port:{port.get('port')}, "
        'TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}'
    )


KIND_VALIDATORS: dict[str, KindValidator] = {
    "Pod": _validate_pod,
    "Service": _validate_service,
}
